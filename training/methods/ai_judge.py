"""AI judge: label a campaign's comparisons against its written principles (RLAIF).

Method: the judge of Constitutional AI's feedback phase (Bai et al. 2022, "Constitutional AI:
Harmlessness from AI Feedback", §4.1) and of RLAIF (Lee et al. 2023, "RLAIF vs. RLHF", §2.1):
a model is shown the principles, the conversation and two replies, and the preference is read
from its probabilities of answering "A" or "B". Three backends (``backend``):

- ``reward_model``: a reward model trained here (the run's first reward model) scores both
  replies; the higher score wins. Bradley-Terry: P(left better) = σ(r(left) - r(right)). It
  knows no principles; the principles it embodies are those of the labels it was trained on.
- ``causal_lm``: a local causal LM (the run's base model) reads the principles, the
  conversation and both replies and is asked which reply follows them better; the margin is
  log P("A") - log P("B") of its next answer. Every item is asked in both orders and the two
  log-odds are averaged over the swap, which cancels a constant preference for the first or
  second slot (position bias; Zheng et al. 2023, "Judging LLM-as-a-judge", §3.4 "swap").
- ``endpoint``: an OpenAI-compatible chat-completions endpoint (``GAPLAB_JUDGE_URL``,
  ``GAPLAB_JUDGE_KEY``) answers "A" or "B" in both orders; two answers that agree are the
  choice, two that follow the slot instead of the reply are a tie.

Why through the annotation services: the judge is an annotator of kind ``ai_judge``
(``annotation.services.judges``). It takes work with ``assignment_issue_next``, sees exactly
what a person's screen shows (``comparison_for_annotator``: the conversation, the left and right
replies, never the gold), and submits with ``judgment_submit_from_screen``. So calibration items
reach it at the campaign's rate, indistinguishable from regular ones, and its gold accuracy,
agreement and biases are computed by the quality layer like anyone's. Items are taken one at a
time because the assignment service issues one live assignment per annotator; ``batch_size``
bounds the sequences of one forward pass. A judge's judgment fills one of the comparison's
overlap slots, as any annotator's does.

Units: margins in nats (log-odds; reward units for ``reward_model``); ``seconds`` is wall time.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import dataclass
from typing import Any

from training.methods.base import ConfigError, MethodResult, ModelRef, RunContext, opt

REQUIRES: frozenset[str] = frozenset({"campaign"})
BASE_KINDS: frozenset[str] = frozenset({"policy"})
BACKENDS = ("reward_model", "causal_lm", "endpoint")

# P(left better) at or beyond which a decisive answer gets strength 3, 2 (else 1).
STRENGTH_CUTS = (0.9, 0.7)

JUDGE_INSTRUCTION = (
    "You compare two replies to the same conversation. Judge them only by these principles:\n"
    "{principles}\n\nConversation:\n{conversation}\n\nReply A:\n{a}\n\nReply B:\n{b}\n\n"
    "Which reply follows the principles better? Answer with the single letter A or B."
)


@dataclass
class Config:
    """Settings of an AI-judge labelling run; stored as JSON on TrainingRun.config."""

    backend: str = opt("reward_model", "Who judges: a reward model trained here "
                       "(reward_model), a local causal LM reading the principles (causal_lm), "
                       "or an OpenAI-compatible endpoint (endpoint).", choices=BACKENDS)
    judge_name: str = opt("", "Name of the judge's annotator account (ai-judge-<name>); "
                          "'' = the backend and model id, e.g. 'reward_model-7'. One name = "
                          "one annotator in the quality tables.")
    max_items: int = opt(200, "Most comparisons judged in this run (items).", min=1,
                         max=1_000_000)
    principles_override: str = opt("", "Principles to judge by, one per line; '' = the "
                                   "campaign's own principles.")
    batch_size: int = opt(8, "Sequences per forward pass when scoring (sequences).", min=1,
                          max=1024)
    tie_margin: float = opt(0.0, "Answer tie when |margin| is at most this (nats of "
                            "log-odds; reward units for reward_model); 0 = only exact ties.",
                            min=0.0)
    max_length: int = opt(1024, "Longest judge prompt kept for causal_lm, in tokens (also "
                          "capped by the model's context); longer prompts keep their end (the "
                          "replies and the question).", min=16, max=131072)
    endpoint_model: str = opt("", "Model name sent to the endpoint (endpoint backend only).")
    endpoint_timeout: float = opt(60.0, "Seconds to wait for one endpoint answer.", min=1.0,
                                  max=600.0)
    report_every: int = opt(10, "Items between progress and metric reports.", min=1,
                            max=10_000)

    def __post_init__(self) -> None:
        errors: dict[str, list[str]] = {}
        if self.backend == "endpoint" and not self.endpoint_model.strip():
            errors["endpoint_model"] = ["The endpoint backend needs a model name."]
        if self.judge_name and not re.search(r"[A-Za-z0-9]", self.judge_name):
            errors["judge_name"] = ["A judge name needs a letter or digit."]
        if len(self.principles_override) > 20_000:
            errors["principles_override"] = ["At most 20,000 characters."]
        if errors:
            raise ConfigError(errors)


# --- Decisions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """A judge's answer in screen terms: left / right / tie, strength 1-3 (None for a tie)."""

    choice: str
    strength: int | None
    margin: float  # > 0 favours the left reply (nats or reward units)
    rationale: str


def _decision(margin: float, *, tie_margin: float, note: str) -> Decision:
    if not math.isfinite(margin) or abs(margin) <= tie_margin:
        return Decision("tie", None, 0.0 if not math.isfinite(margin) else margin, note)
    p = 1.0 / (1.0 + math.exp(-abs(margin)))
    strength = 3 if p >= STRENGTH_CUTS[0] else 2 if p >= STRENGTH_CUTS[1] else 1
    return Decision("left" if margin > 0 else "right", strength, margin, note)


def principles_lines(text: str) -> list[str]:
    """The principles of a text field: one per non-empty line."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _conversation(turns: list[dict[str, str]]) -> str:
    return "\n".join(f"{t.get('role', 'user')}: {t.get('content', '')}" for t in turns)


def judge_messages(principles: list[str], turns: list[dict[str, str]], a: str,
                   b: str) -> list[dict[str, str]]:
    """The one user turn that asks which of replies A and B follows the principles better."""
    text = JUDGE_INSTRUCTION.format(
        principles="\n".join(f"- {p}" for p in principles), conversation=_conversation(turns),
        a=a, b=b)
    return [{"role": "user", "content": text}]


class RewardModelJudge:
    """Prefer the reply the reward model scores higher (no principles: it has its own)."""

    def __init__(self, ref: ModelRef, config: Config) -> None:
        from training import modeling

        self.model, self.tokenizer = modeling.reward_load(ref)
        self.ref, self.config = ref, config

    def decide(self, turns: list[dict[str, str]], left: str, right: str) -> Decision:
        from training import modeling

        r_left, r_right = modeling.reward_score(self.model, self.tokenizer, [turns, turns],
                                                [left, right],
                                                batch_size=self.config.batch_size)
        return _decision(r_left - r_right, tie_margin=self.config.tie_margin,
                         note=f"reward model #{self.ref.id}: r(left)={r_left:.3f}, "
                              f"r(right)={r_right:.3f}")


class CausalLMJudge:
    """Ask a local causal LM, in both orders, and average its log-odds over the swap."""

    def __init__(self, ref: ModelRef, config: Config, principles: list[str]) -> None:
        from training import modeling

        self.model, self.tokenizer = modeling.policy_load(ref)
        self.model.eval()
        self.ref, self.config, self.principles = ref, config, principles
        # Room for the chat template's markers and the answer inside the model's context.
        context = getattr(self.model.config, "max_position_embeddings", None) or config.max_length
        self.max_tokens = max(16, min(config.max_length, int(context) - 16))

    def _prompt(self, turns: list[dict[str, str]], a: str, b: str) -> list[dict[str, str]]:
        messages = judge_messages(self.principles, turns, a, b)
        # A tiny model has a short context: keep the end (replies and question) when too long.
        ids = self.tokenizer(messages[0]["content"], add_special_tokens=False)["input_ids"]
        if len(ids) > self.max_tokens:
            messages[0]["content"] = self.tokenizer.decode(ids[-self.max_tokens:])
        return messages

    def decide(self, turns: list[dict[str, str]], left: str, right: str) -> Decision:
        from training import modeling

        first = self._prompt(turns, left, right)   # A = left
        second = self._prompt(turns, right, left)  # A = right
        prompts = [first, first, second, second]
        lp = modeling.sequence_logprobs(self.model, self.tokenizer, prompts,
                                        ["A", "B", "A", "B"], add_eos=False,
                                        batch_size=self.config.batch_size).tolist()
        odds_first, odds_second = lp[0] - lp[1], lp[2] - lp[3]
        # A constant pull c toward slot A adds +c to both log-odds: it cancels in the difference.
        margin = (odds_first - odds_second) / 2.0
        return _decision(margin, tie_margin=self.config.tie_margin,
                         note=f"causal LM #{self.ref.id}: log-odds A-first {odds_first:.3f}, "
                              f"swapped {odds_second:.3f}, slot bias "
                              f"{(odds_first + odds_second) / 2:.3f}")


class EndpointJudge:
    """Ask an OpenAI-compatible chat-completions endpoint, in both orders."""

    def __init__(self, config: Config, principles: list[str]) -> None:
        from django.conf import settings

        self.url = settings.GAPLAB_JUDGE_URL.strip().rstrip("/")  # checked: inputs_check
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.key = settings.GAPLAB_JUDGE_KEY
        self.config, self.principles = config, principles

    def _ask(self, messages: list[dict[str, str]]) -> str | None:
        import requests

        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        response = requests.post(self.url, headers=headers, timeout=self.config.endpoint_timeout,
                                 json={"model": self.config.endpoint_model, "messages": messages,
                                       "temperature": 0, "max_tokens": 8})
        if response.status_code != 200:
            raise RuntimeError(f"Judge endpoint answered {response.status_code}: "
                               f"{response.text[:300]}")
        content = response.json()["choices"][0]["message"]["content"] or ""
        match = re.search(r"\b([AB])\b", content.strip().upper())
        return match.group(1) if match else None

    def decide(self, turns: list[dict[str, str]], left: str, right: str) -> Decision:
        first = self._ask(judge_messages(self.principles, turns, left, right))
        second = self._ask(judge_messages(self.principles, turns, right, left))
        votes = {"A": 1.0, "B": -1.0}
        # +1 for the left reply from each order that picked it; two answers that follow the
        # slot (A then A) cancel to a tie, as does an answer that names neither letter.
        margin = votes.get(first or "", 0.0) - votes.get(second or "", 0.0)
        note = f"endpoint {self.config.endpoint_model}: left-first {first}, swapped {second}"
        if margin == 0:
            return Decision("tie", None, 0.0, note)
        choice = "left" if margin > 0 else "right"
        return Decision(choice, 2 if abs(margin) == 2 else 1, margin, note)


def _judge_for(ctx: RunContext, campaign: Any, principles: list[str]) -> tuple[Any, str]:
    """The backend's judge and its default account name; ConfigError for missing inputs
    (``inputs_check``, the same check a run gets at creation: the inputs may have changed)."""
    config: Config = ctx.config
    errors = inputs_check(config, base_model=ctx.base_model, reward_models=ctx.reward_models,
                          campaign=campaign)
    if errors:
        raise ConfigError(errors)
    if config.backend == "reward_model":
        ref = ctx.reward_models[0]
        return RewardModelJudge(ref, config), f"reward_model-{ref.id}"
    if config.backend == "causal_lm":
        return CausalLMJudge(ctx.base_model, config, principles), \
            f"causal_lm-{ctx.base_model.id}"
    return EndpointJudge(config, principles), f"endpoint-{config.endpoint_model}"


def inputs_check(config: Config, *, base_model: Any, reward_models: list[Any],
                 campaign: Any) -> dict[str, list[str]]:
    """What the backend needs besides its config, checked when the run is created (so a run
    that could not start is never queued), and again by ``_judge_for`` when it starts."""
    from django.conf import settings

    errors: dict[str, list[str]] = {}
    if config.backend == "reward_model" and not reward_models:
        errors["reward_models"] = ["The reward_model backend needs a registered reward model."]
    if config.backend == "causal_lm" and base_model is None:
        errors["base_model"] = ["The causal_lm backend needs a base model (a local causal LM)."]
    if config.backend == "endpoint" and not settings.GAPLAB_JUDGE_URL:
        errors["backend"] = ["The endpoint backend needs GAPLAB_JUDGE_URL (an OpenAI-"
                             "compatible base URL such as http://host:8000/v1) and, if it asks "
                             "for one, GAPLAB_JUDGE_KEY, set on the workers."]
    if config.backend != "reward_model" and campaign is not None and not (
            config.principles_override.strip() or campaign.principles.strip()):
        errors["principles_override"] = [
            f"The {config.backend} backend judges against principles: write them in the "
            "campaign (one per line) or set principles_override."]
    return errors


# --- The run --------------------------------------------------------------------------------


def run(ctx: RunContext) -> MethodResult:
    from annotation.calibration import gold_correct
    from annotation.errors import ApplicationError
    from annotation.models import AnnotatorProfile, Campaign, Comparison, Judgment
    from annotation.selectors.annotator import comparison_for_annotator
    from annotation.services import assignment_issue_next, judgment_submit_from_screen
    from annotation.services.judges import ai_judge_annotator_get_or_create

    config: Config = ctx.config
    if ctx.campaign_id is None:
        raise ConfigError({"campaign": ["ai_judge labels a campaign; none was given."]})
    campaign = Campaign.objects.get(pk=ctx.campaign_id)
    principles = principles_lines(config.principles_override or campaign.principles)
    started = time.monotonic()
    judge, default_name = _judge_for(ctx, campaign, principles)
    annotator = ai_judge_annotator_get_or_create(name=config.judge_name or default_name)
    ctx.reporter.log(f"AI judge {annotator.get_username()} ({config.backend}) on campaign "
                     f"{campaign.name}, {len(principles)} principles")
    # The server's randomness (screen sides, calibration draws) is seeded: a rerun with the
    # same seed on the same campaign state issues the same items the same way.
    rng = random.Random(f"{ctx.seed}:ai_judge:{annotator.pk}")
    judgment_ids: list[int] = []
    stopped = "max_items"
    seconds_judging = 0.0
    while len(judgment_ids) < config.max_items:
        if ctx.reporter.cancelled():
            stopped = "cancelled"
            break
        try:
            assignment = assignment_issue_next(campaign=campaign, annotator=annotator, rng=rng)
        except ApplicationError as exc:  # paused for low gold accuracy, campaign closed
            stopped = exc.message
            break
        if assignment is None:
            stopped = "no work left"
            break
        view = comparison_for_annotator(assignment=assignment)
        t0 = time.monotonic()
        decision = judge.decide(view.turns, view.left_text, view.right_text)
        spent = time.monotonic() - t0
        seconds_judging += spent
        try:
            judgment = judgment_submit_from_screen(
                token=view.token, annotator=annotator, choice=decision.choice,
                strength=decision.strength, idempotency_key=f"ai-judge-{view.token}",
                seconds_spent=round(spent, 3), rationale=decision.rationale, rng=rng)
        except ApplicationError as exc:
            stopped = exc.message
            break
        judgment_ids.append(judgment.pk)
        n = len(judgment_ids)
        if n % config.report_every == 0:
            ctx.reporter.progress(n, config.max_items)
            ctx.reporter.metrics(n, {"seconds_per_item": seconds_judging / n})
    n = len(judgment_ids)
    ctx.reporter.progress(n, n if stopped != "max_items" else config.max_items)
    ctx.reporter.log(f"stopped: {stopped}")

    # Scored only now, after every answer is in: the judge never saw a gold label.
    rows = list(Judgment.objects.filter(pk__in=judgment_ids).values_list(
        "comparison_id", "comparison__kind", "choice", "comparison__gold_choice",
        "comparison__gold_accepts"))
    scored = [gold_correct(choice, gold_choice=gold, gold_accepts=accepts or [])
              for _, kind, choice, gold, accepts in rows if kind == Comparison.Kind.CALIBRATION]
    scored = [s for s in scored if s is not None]
    regular = {cid: choice for cid, kind, choice, _, _ in rows if kind == Comparison.Kind.REGULAR}
    others: dict[int, list[str]] = {}
    for cid, choice in (Judgment.objects.filter(comparison_id__in=regular,
                                                superseded_by__isnull=True)
                        .exclude(annotator=annotator)
                        .exclude(annotator__annotator_profile__kind=AnnotatorProfile.Kind.DATASET)
                        .values_list("comparison_id", "choice")):
        others.setdefault(cid, []).append(choice)
    agree = [others[cid].count(choice) / len(others[cid]) for cid, choice in regular.items()
             if others.get(cid)]
    metrics: dict[str, float] = {
        "n_judged": float(n),
        "n_calibration": float(len(scored)),
        "n_regular": float(len(regular)),
        "n_ties": float(sum(1 for _, _, c, _, _ in rows if c == "tie")),
        "seconds": time.monotonic() - started,
        "seconds_per_item": seconds_judging / n if n else math.nan,
        "annotator_id": float(annotator.pk),
    }
    if scored:
        metrics["gold_accuracy"] = sum(scored) / len(scored)
    if agree:
        # Mean share of the other annotators' current answers that match the judge's.
        metrics["peer_agreement"] = sum(agree) / len(agree)
        metrics["n_peer_compared"] = float(len(agree))
    ctx.reporter.metrics(n, {k: v for k, v in metrics.items() if math.isfinite(v)})
    return MethodResult(metrics={k: v for k, v in metrics.items() if math.isfinite(v)})
