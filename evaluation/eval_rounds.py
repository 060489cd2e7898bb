"""Eval rounds: the loop back from training to annotation (issue 9 part 7).

Where no utility function exists, a trained policy's r* is what people prefer. A round takes a
finished run's measured replies (``samples.jsonl``, written by ``training.methods.common.
policy_finish``: per prompt, the policy's replies and its reference π₀'s, drawn with shared
random numbers), builds a campaign of one comparison per prompt, policy against reference,
sides randomized, and, once judged, stores the policy's win rate with a 90% interval on the
round and in the run's result (``RESULT_REWARD_TRUE_WINRATE`` and its ``_lo``, ``_hi``,
``_n``).

A best-of-n run's ``samples.jsonl`` (every sample of π₀ with the one kept marked) is read the
same way: its policy reply is the kept one, its reference reply the prompt's first sample, a
plain π₀ draw (which sample comes first does not depend on the scores; when it is the kept one
both sides show the same text, and the right answer is a tie).

Judges: people (the campaign is opened, nothing more), or a simulated pool (``pool``, e.g.
"crowd:5") that answers through the annotation services at once (``evaluation.services.
simulate_campaign``); a pool reads the prompts through the world of the run's snapshot, so it
needs a run trained on a world's campaign.

The win rate counts every current judgment of the round's comparisons: the policy's side 1,
the other side 0, a tie or both-bad ½ (neither reply preferred). Its interval is a percentile
bootstrap over prompts (scipy.stats.bootstrap, 2,000 resamples, the round's seed), resampling
whole comparisons with all their judgments: the ``overlap`` judgments of one pair are not
independent (annotators agree on the same two texts) and the quantity of interest generalizes
over prompts, so a Wilson interval over judgments would be too narrow by about the design
effect; and with ties at ½ the outcome is not a Bernoulli one. Fewer than two judged prompts
give no estimate of the spread between prompts: the interval is then [0, 1].
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from annotation.errors import ApplicationError
from annotation.models import Campaign, Choice, Comparison, JobStatus, Judgment
from annotation.services import campaign_create, comparisons_bulk_create
from annotation.services.comparisons import ComparisonSpec, PromptSpec, ResponseSpec
from evaluation.models import EvalRound
from training.methods.base import RESULT_REWARD_TRUE_WINRATE
from training.methods.common import POLICY_SAMPLES_FILE, jsonl_read
from training.models import RunArtifact, TrainingRun

CONFIDENCE = 0.90
BOOTSTRAP_RESAMPLES = 2000
POLICY, REFERENCE = "policy", "reference"  # Response.source_version of the two sides
SEED_MIN, SEED_MAX = -(2**31), 2**31 - 1  # EvalRound.seed is a 32-bit integer column
N_ITEMS_MAX = 100_000
INPUT_FIELDS = ("run", "pool", "n_items", "overlap", "seed", "name")

INSTRUCTIONS = """\
Each conversation has two candidate replies. Pick the reply that is **better for the user**:
correct, helpful and clear first, then concise. Choose *tie* when both are equally good and
*both bad* when neither is acceptable. Then say how strong your preference is.
"""


class EvalRoundError(ApplicationError):
    """A round that cannot be made or computed; ``errors`` maps each input (``run``, ``pool``,
    ``n_items``, ``overlap``, ``seed``, ``name``) to its messages. Nothing was written."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        self.errors = errors
        super().__init__("Invalid eval round: " + "; ".join(
            f"{k}: {' '.join(v)}" for k, v in errors.items()), extra={"errors": errors})


# --- The run's material -----------------------------------------------------------------------


def run_eval_pairs(run: TrainingRun) -> list[dict[str, Any]]:
    """The run's (prompt, policy reply, reference reply) triples, one per measured prompt, in
    the order of its ``samples.jsonl``: ``prompt_index``, ``prompt``, ``policy``,
    ``reference``. Raises EvalRoundError (``run``) when the run has not succeeded or has no
    usable samples (never registered, moved, changed since, or of another kind)."""
    from training.selectors.runs import artifact_file
    from training.services.runs import file_sha256

    def refuse(message: str) -> EvalRoundError:
        return EvalRoundError({"run": [message]})

    if run.status != JobStatus.SUCCEEDED:
        raise refuse(f"Run #{run.pk} is {run.status}; only a succeeded run has final samples.")
    artifact = RunArtifact.objects.filter(run=run, name=POLICY_SAMPLES_FILE).first()
    path = artifact_file(artifact=artifact) if artifact is not None else None
    if path is None:
        raise refuse(f"Run #{run.pk} ({run.method}) has no {POLICY_SAMPLES_FILE} artifact: "
                     "only policy runs (sft, dpo, rlhf, best_of_n) write one.")
    if file_sha256(path) != artifact.sha256:
        raise refuse(f"Run #{run.pk}'s {POLICY_SAMPLES_FILE} changed since the run wrote it.")
    records = jsonl_read(path)
    pairs = _pairs(records)
    if not pairs:
        raise refuse(f"Run #{run.pk}'s {POLICY_SAMPLES_FILE} holds no policy and reference "
                     "replies.")
    return pairs


def _pairs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if records and "best" in records[0]:  # best_of_n: every π₀ sample, the kept one marked
        by_prompt: dict[int, dict[str, Any]] = defaultdict(dict)
        for r in records:
            slot = by_prompt[r["prompt_index"]]
            slot.setdefault("prompt", r["prompt"])
            if r["best"]:
                slot[POLICY] = r["completion"]
            if r["sample_index"] == 0:
                slot[REFERENCE] = r["completion"]
        return [{"prompt_index": i, **slot} for i, slot in sorted(by_prompt.items())
                if POLICY in slot and REFERENCE in slot]
    return [{"prompt_index": r.get("prompt_index", i), "prompt": r["prompt"],
             POLICY: r[POLICY][0], REFERENCE: r[REFERENCE][0]}
            for i, r in enumerate(records)
            if r.get(POLICY) and r.get(REFERENCE) and r.get("prompt")]


def _run_world(run: TrainingRun) -> Any:
    """The world of the run's snapshot campaign, or None."""
    from evaluation.services import campaign_world_name
    from evaluation.worlds import get_world

    if run.snapshot_id is None:
        return None
    name = campaign_world_name(campaign=run.snapshot.campaign)
    return get_world(name) if name else None


# --- Creating a round -------------------------------------------------------------------------


def _int_errors(name: str, value: Any, lo: int, hi: int) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{name} is a whole number, not {value!r}."]
    if not lo <= value <= hi:
        return [f"{name} is between {lo} and {hi}."]
    return []


def _campaign_name(run: TrainingRun, seed: int, name: str) -> str:
    if name:
        return name
    base = f"eval-run-{run.pk}-seed-{seed}"
    taken = set(Campaign.objects.filter(name__startswith=base).values_list("name", flat=True))
    n = 1
    while (candidate := base if n == 1 else f"{base}-{n}") in taken:
        n += 1
    return candidate


def eval_round_create(*, run: TrainingRun, pool: str | None = None, n_items: int | None = None,
                      overlap: int = 3, seed: int = 0, name: str = "",
                      requested_by: AbstractBaseUser | None = None) -> EvalRound:
    """Build an eval campaign from the run's samples and, with ``pool``, have it judged.

    ``n_items`` prompts (None = every measured one) are picked with ``seed``; each becomes one
    comparison (``Comparison.Kind.EVAL``) of the policy's reply and the reference's, the
    policy on side A or B by a seeded coin. Each reply is a ``Response`` whose
    ``source_version`` says its side (never shown to annotators), with the world's features
    and utility when the run's snapshot comes from a world. The campaign (``name``, default
    ``eval-run-<run>-seed-<seed>``; no gold items: ``calibration_rate`` 0) and its rows are
    written in one transaction through the annotation services, with the round.

    With ``pool`` (e.g. "crowd:5"), the simulated pool judges every comparison ``overlap``
    times and the win rate is computed (``eval_round_result``); without it the campaign is
    open for people. Raises EvalRoundError naming every bad input at once, before anything is
    written.
    """
    errors: dict[str, list[str]] = {}
    pairs: list[dict[str, Any]] = []
    world = None
    try:
        pairs = run_eval_pairs(run)
    except EvalRoundError as exc:
        errors |= exc.errors
    for field, value, lo, hi in (("seed", seed, SEED_MIN, SEED_MAX),
                                 ("overlap", overlap, 1, 50)):
        if msgs := _int_errors(field, value, lo, hi):
            errors[field] = msgs
    if n_items is not None:
        if msgs := _int_errors("n_items", n_items, 1, N_ITEMS_MAX):
            errors["n_items"] = msgs
        elif pairs and n_items > len(pairs):
            errors["n_items"] = [f"Run #{run.pk} has {len(pairs)} measured prompts; ask for "
                                 "at most that many (or leave it empty for all)."]
    if name and Campaign.objects.filter(name=name).exists():
        errors["name"] = [f"A campaign named {name!r} already exists."]
    if pool:
        from evaluation.simulation import parse_pool

        try:
            parse_pool(pool)
        except ValueError as exc:
            errors["pool"] = [str(exc)]
        if "run" not in errors:
            world = _run_world(run)
            if world is None:
                errors["pool"] = [f"A simulated pool reads prompts through a world; run "
                                  f"#{run.pk}'s snapshot does not come from a world's "
                                  "campaign. Leave the pool empty and let people judge."]
    elif "run" not in errors:
        world = _run_world(run)
    if errors:
        raise EvalRoundError(errors)

    rng = random.Random(f"eval-round:{run.pk}:{seed}")
    chosen = sorted(rng.sample(range(len(pairs)), n_items or len(pairs)))
    specs = [_prompt_spec(run, pairs[i], world, policy_on_a=rng.random() < 0.5)
             for i in chosen]
    with transaction.atomic():
        try:
            campaign = campaign_create(
                name=_campaign_name(run, seed, name), title=f"Eval round: {run} vs reference",
                instructions=INSTRUCTIONS, overlap=overlap, calibration_rate=0.0)
        except ValidationError as exc:  # a name that is not a slug, too long
            raise EvalRoundError({(f if f in INPUT_FIELDS else "name"): list(m)
                                  for f, m in exc.message_dict.items()}) from exc
        comparisons_bulk_create(campaign=campaign, prompts=specs)
        eval_round = EvalRound.objects.create(
            run=run, campaign=campaign, pool=pool or "", seed=seed, n_items=len(specs),
            requested_by=requested_by)
        if pool:
            # In the same transaction: a simulation that fails leaves no half-judged round
            # behind a 500 (all-or-nothing, like the campaign itself).
            from evaluation.services import simulate_campaign

            simulated = simulate_campaign(campaign=campaign, pool=pool, seed=seed,
                                          world_name=world.name)
            if simulated.n_judgments:
                eval_round = eval_round_result(eval_round)
    return eval_round


def _prompt_spec(run: TrainingRun, pair: dict[str, Any], world: Any, *,
                 policy_on_a: bool) -> PromptSpec:
    parsed = world.parse_prompt(pair["prompt"]) if world is not None else None
    model = run.base_model.name if run.base_model_id else ""
    reference = (run.reference_model.name if run.reference_model_id else model)

    def response(side: str) -> ResponseSpec:
        text = pair[side]
        features: dict[str, Any] = {}
        if parsed is not None:
            features = {**world.features(parsed, text), "utility": world.utility(parsed, text)}
        return ResponseSpec(text=text, source_model=(f"run #{run.pk}" if side == POLICY
                                                     else reference)[:200],
                            source_version=side, source_run=str(run.pk), features=features)

    responses = [response(POLICY), response(REFERENCE)]
    a, b = (0, 1) if policy_on_a else (1, 0)
    from evaluation.services import WORLD_SOURCE_PREFIX

    return PromptSpec(
        turns=pair["prompt"], responses=responses,
        comparisons=[ComparisonSpec(a=a, b=b, kind=Comparison.Kind.EVAL)],
        category=parsed.category if parsed is not None else "",
        external_id=f"run-{run.pk}-prompt-{pair['prompt_index']}",
        source=f"{WORLD_SOURCE_PREFIX}{world.name}" if world is not None else f"run:{run.pk}")


# --- The result -------------------------------------------------------------------------------


def policy_scores(campaign: Campaign) -> dict[int, list[float]]:
    """Per comparison of the campaign's eval items, the policy's score in each current
    judgment: 1 when its reply was chosen, 0 when the other was, ½ for a tie or both-bad."""
    rows = (Judgment.objects
            .filter(campaign=campaign, comparison__kind=Comparison.Kind.EVAL,
                    superseded_by__isnull=True)
            .values_list("comparison_id", "choice", "comparison__response_a__source_version"))
    out: dict[int, list[float]] = defaultdict(list)
    for comparison_id, choice, a_side in rows:
        policy_choice = Choice.A if a_side == POLICY else Choice.B
        if choice in (Choice.A, Choice.B):
            out[comparison_id].append(1.0 if choice == policy_choice else 0.0)
        else:
            out[comparison_id].append(0.5)
    return dict(out)


def win_rate_interval(per_prompt: list[list[float]], *, seed: int,
                      confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(rate, lo, hi): the judgment-weighted mean score and its percentile bootstrap interval,
    prompts resampled whole (see the module's docstring); [0, 1] with fewer than two prompts.
    The interval is widened to hold the rate when a skewed resample puts it outside."""
    import numpy as np
    from scipy.stats import bootstrap

    sums = np.array([sum(s) for s in per_prompt], dtype=float)
    counts = np.array([len(s) for s in per_prompt], dtype=float)
    rate = float(sums.sum() / counts.sum())
    if len(per_prompt) < 2:
        return rate, 0.0, 1.0
    res = bootstrap((sums, counts), lambda s, c, axis=-1: s.sum(axis) / c.sum(axis),
                    paired=True, vectorized=True, confidence_level=confidence,
                    n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                    rng=np.random.default_rng(seed & 0xFFFFFFFF))
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    lo, hi = (lo, hi) if math.isfinite(lo) and math.isfinite(hi) else (rate, rate)
    return rate, min(lo, rate), max(hi, rate)


def eval_round_result(eval_round: EvalRound) -> EvalRound:
    """Compute the round's win rate from its judgments so far; store it on the round and, as
    the run's r* (``RESULT_REWARD_TRUE_WINRATE`` with ``_lo``, ``_hi``, ``_n``), in the run's
    result (the latest computed round wins). Raises EvalRoundError when nothing is judged
    yet."""
    per = policy_scores(eval_round.campaign)
    if not per:
        raise EvalRoundError({"campaign": [f"{eval_round}: no judgments yet."]})
    prompts = [per[k] for k in sorted(per)]
    rate, lo, hi = win_rate_interval(prompts, seed=eval_round.seed)
    n = sum(len(s) for s in prompts)
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=eval_round.run_id)
        key = RESULT_REWARD_TRUE_WINRATE
        run.result = {**(run.result or {}), key: rate, f"{key}_lo": lo, f"{key}_hi": hi,
                      f"{key}_n": float(n)}
        run.save(update_fields=["result"])
        eval_round.win_rate, eval_round.lo, eval_round.hi = rate, lo, hi
        eval_round.n_judgments, eval_round.n_prompts = n, len(prompts)
        eval_round.computed_at = timezone.now()
        eval_round.save(update_fields=["win_rate", "lo", "hi", "n_judgments", "n_prompts",
                                       "computed_at"])
    return eval_round
