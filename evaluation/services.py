"""State changes of the evaluation app: campaigns built from a world, simulated annotation.

``world_campaign_create`` turns a world (evaluation/worlds) into an annotation campaign with
regular comparisons and calibration items (DESIGN section 3: known-answer pairs with a tolerance
and degraded pairs), written through the annotation app's ``comparisons_bulk_create``.
``simulate_campaign`` runs a pool of simulated annotators (evaluation/simulation.py) through the
same annotation services, or the REST API, a person uses. ``simulated_truth`` reads back what
the estimators should recover: each annotator's true accuracy against the world's utility and
the known drift onset, and the campaign's true judgment-weighted error.
"""

from __future__ import annotations

import math
import random
import re
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction

from annotation.calibration import TransformError, pick_unrelated
from annotation.errors import ApplicationError
from annotation.models import AnnotatorProfile, Campaign, Choice, Comparison, Judgment, Prompt
from annotation.services import (
    Role,
    campaign_create,
    comparisons_bulk_create,
    user_create_with_role,
    user_roles,
)
from annotation.services.comparisons import ComparisonSpec, PromptSpec, ResponseSpec
from evaluation.simulation import (
    PRESETS,
    UTILITY_TIE,
    AnnotatorConfig,
    ApiClient,
    PoolMember,
    SimulatedAnnotator,
    SimulationStop,
    TruthTally,
    config_summary,
    drift_onset_judgment,
    parse_pool,
)
from evaluation.worlds import World, WorldPrompt, get_world

WORLD_SOURCE_PREFIX = "world:"
DEFAULT_INSTRUCTIONS = """\
Each conversation asks an arithmetic question. Pick the reply that is **better for the user**:
a correct answer first, then a clear and concise one. Choose *tie* when both are equally good and
*both bad* when neither answers correctly. Then say how strong your preference is.
"""

# Calibration recipes, used in turn (DESIGN section 3): a known-answer pair the better reply
# must win; a known-answer pair where a tie is also accepted (the loser is worse, but only
# mildly); and three degraded pairs made by transforming a good reply.
_CALIBRATION_CYCLE = ("known_strict", "known_tolerant", "truncate", "wrong_number", "unrelated")
STRICT_GAP = 1.0  # utility gap that makes a known-answer pair unambiguous
TOLERANT_GAP = (0.2, 1.0)  # utility gap of a "better, or a tie" pair
DEGRADED_GAP = 0.5  # a degraded reply must lose at least this much utility
UNRELATED_DONORS = 40  # other prompts sampled for a length-matched unrelated reply


@dataclass
class _PromptBuild:
    """One world prompt's replies and comparisons while a campaign is assembled."""

    prompt: WorldPrompt
    index: int
    texts: list[str]
    versions: list[str]
    pairs: list[ComparisonSpec] = field(default_factory=list)

    def add_text(self, text: str, version: str) -> int:
        self.texts.append(text)
        self.versions.append(version)
        return len(self.texts) - 1

    def has_pair(self, i: int, j: int) -> bool:
        return any({c.a, c.b} == {i, j} for c in self.pairs)


@transaction.atomic
def world_campaign_create(
    *, world_name: str, name: str, n_prompts: int, seed: int, overlap: int = 3,
    calibration_rate: float = 0.1, pairs_per_prompt: int = 2, n_calibration: int | None = None,
    include_held_out: bool = False, categories: Sequence[str] | None = None, title: str = "",
    instructions: str = DEFAULT_INSTRUCTIONS, accuracy_threshold: float = 0.7,
) -> Campaign:
    """Create a campaign from a world: prompts, candidate replies, comparisons, calibration.

    Every candidate reply of each of the ``n_prompts`` prompts is stored (``Response.features``
    holds the world's features plus ``utility``), and ``pairs_per_prompt`` random pairs of them
    become regular comparisons. ``n_calibration`` calibration items (default: calibration_rate
    times the number of regular comparisons, at least 5 when the rate is positive) are made on
    those same prompts, spread over them in a random order, so every calibration prompt also
    appears in regular items (a prompt seen only in a gold item would give it away). They
    cycle through known-answer pairs of the prompt's own replies (strict, and "better or tie"),
    never repeating one of its regular pairs, and degraded pairs (truncate, wrong number,
    unrelated: a wrong-number reply keeps the original's width and an unrelated one is another
    prompt's reply of similar length; a truncation is shorter by nature). The good reply's
    canonical side is random. Held-out categories are left out unless ``include_held_out``;
    ``categories`` picks categories explicitly. Deterministic given ``seed``. All rows are
    written in one transaction through ``comparisons_bulk_create``. Raises ApplicationError for
    an unknown world, bad sizes or a taken campaign name.
    """
    try:
        world = get_world(world_name)
    except ValueError as exc:
        raise ApplicationError(str(exc)) from exc
    if n_prompts < 1 or pairs_per_prompt < 1:
        raise ApplicationError("n_prompts and pairs_per_prompt must be at least 1.")
    if n_calibration is not None and n_calibration < 0:
        raise ApplicationError("n_calibration must be >= 0.")
    if Campaign.objects.filter(name=name).exists():
        raise ApplicationError(f"A campaign named {name!r} already exists.")
    if categories is None:
        categories = [c for c in world.categories
                      if include_held_out or c not in world.held_out_categories]
    if n_calibration is None:
        n_calibration = (max(5, math.ceil(calibration_rate * n_prompts * pairs_per_prompt))
                         if calibration_rate > 0 else 0)
    try:
        campaign = campaign_create(
            name=name, title=title or f"{world.name} world (seed {seed})",
            instructions=instructions, overlap=overlap, calibration_rate=calibration_rate,
            accuracy_threshold=accuracy_threshold,
        )
    except ValidationError as exc:
        raise ApplicationError("; ".join(
            f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items()
        )) from exc
    try:
        prompts = world.generate_prompts(n_prompts, seed, categories=categories)
    except ValueError as exc:
        raise ApplicationError(str(exc)) from exc
    rng = random.Random(f"{world.name}:{seed}:campaign")
    builds = _regular_builds(world, prompts, pairs_per_prompt, rng)
    _add_calibration(world, builds, n_calibration, rng)
    comparisons_bulk_create(campaign=campaign, prompts=[
        PromptSpec(
            turns=b.prompt.turns, category=b.prompt.category,
            external_id=f"{world.name}-{seed}-{b.index:06d}",
            source=f"{WORLD_SOURCE_PREFIX}{world.name}",
            responses=[_response_spec(world, b.prompt, text, version)
                       for text, version in zip(b.texts, b.versions, strict=True)],
            comparisons=b.pairs,
        )
        for b in builds
    ])
    return campaign


def _response_spec(world: World, prompt: WorldPrompt, text: str, version: str) -> ResponseSpec:
    features = world.features(prompt, text)
    features["utility"] = world.utility(prompt, text)
    return ResponseSpec(text=text, source_model=f"{WORLD_SOURCE_PREFIX}{world.name}",
                        source_version=version, features=features)


def _regular_builds(world: World, prompts: list[WorldPrompt], k: int,
                    rng: random.Random) -> list[_PromptBuild]:
    out = []
    for index, prompt in enumerate(prompts):
        texts = world.candidate_responses(prompt, rng)
        rng.shuffle(texts)  # canonical order must not encode the world's ordering of styles
        pairs = rng.sample(list(combinations(range(len(texts)), 2)),
                           min(k, len(texts) * (len(texts) - 1) // 2))
        out.append(_PromptBuild(prompt=prompt, index=index, texts=texts,
                                versions=["candidate"] * len(texts),
                                pairs=[ComparisonSpec(a=i, b=j) for i, j in pairs]))
    return out


def _add_calibration(world: World, builds: list[_PromptBuild], n_calibration: int,
                     rng: random.Random) -> None:
    """Add ``n_calibration`` calibration items to the prompts, cycling through the recipes.

    Item n goes to the n-th prompt of a shuffled order (round-robin when there are more items
    than prompts); a prompt that cannot make any recipe passes the item to the next prompt.
    """
    if not builds:
        return
    order = list(range(len(builds)))
    rng.shuffle(order)
    slot = 0
    for n in range(n_calibration):
        recipe = _CALIBRATION_CYCLE[n % len(_CALIBRATION_CYCLE)]
        for _ in range(len(order)):
            build = builds[order[slot % len(order)]]
            slot += 1
            made = _calibration_pair(world, build, builds, recipe, rng)
            if made is None:  # this prompt cannot make that recipe; a strict pair often can
                made = _calibration_pair(world, build, builds, "known_strict", rng)
            if made is not None:
                build.pairs.append(made)
                break


def _calibration_pair(world: World, build: _PromptBuild, builds: list[_PromptBuild],
                      recipe: str, rng: random.Random) -> ComparisonSpec | None:
    """One calibration item of ``recipe`` on ``build``'s prompt, or None when it cannot be made.

    The good reply is the prompt's best candidate (ties broken by length). Known-answer pairs
    take the worse reply among the prompt's own candidates, skipping pairs already used on the
    prompt; degraded pairs add the transformed reply to the prompt.
    """
    prompt = build.prompt
    scored = sorted(
        ((world.utility(prompt, t), len(t), i) for i, t in enumerate(build.texts)
         if build.versions[i] == "candidate"),
        reverse=True,
    )
    best_u, _, best = scored[0]
    accepts_tie = False
    if recipe in ("known_strict", "known_tolerant"):
        if recipe == "known_strict":
            fits = [i for u, _, i in scored if u <= best_u - STRICT_GAP]
        else:
            lo, hi = TOLERANT_GAP
            fits = [i for u, _, i in scored if best_u - hi < u <= best_u - lo]
            accepts_tie = True
        fits = [i for i in fits if not build.has_pair(best, i)]
        if not fits:
            return None
        worse, ctype = rng.choice(fits), Comparison.CalibrationType.KNOWN_ANSWER
    else:
        text = _degraded_text(world, build, builds, recipe, build.texts[best], best_u, rng)
        if text is None:
            return None
        worse = build.add_text(text, f"degraded:{recipe}")
        ctype = Comparison.CalibrationType.DEGRADED
    good_on_a = rng.random() < 0.5
    good_side = Choice.A if good_on_a else Choice.B
    accepts = (good_side.value, Choice.TIE.value) if accepts_tie else (good_side.value,)
    return ComparisonSpec(
        a=best if good_on_a else worse, b=worse if good_on_a else best,
        kind=Comparison.Kind.CALIBRATION, gold_choice=good_side.value, gold_accepts=accepts,
        calibration_type=ctype,
    )


def _degraded_text(world: World, build: _PromptBuild, builds: list[_PromptBuild], recipe: str,
                   best: str, best_u: float, rng: random.Random) -> str | None:
    prompt = build.prompt
    if recipe == "unrelated":
        # Another prompt's candidate reply, length-matched, that is clearly worse here: a
        # stock sentence of another length would mark the item as degraded.
        # A sample of other prompts bounds the cost on large campaigns (~8 replies each).
        others = [other for other in builds if other is not build]
        others = rng.sample(others, min(UNRELATED_DONORS, len(others)))
        pool = [t for other in others
                for t, v in zip(other.texts, other.versions, strict=True)
                if v == "candidate" and world.utility(prompt, t) <= best_u - DEGRADED_GAP]
        try:
            worse = pick_unrelated(best, pool, rng)
        except TransformError:
            worse = world.degraded_responses(prompt, best, rng).get(recipe)
    else:
        worse = world.degraded_responses(prompt, best, rng).get(recipe)
    if worse is None or worse in build.texts:
        return None
    if world.utility(prompt, worse) > best_u - DEGRADED_GAP:
        return None
    return worse


# ---------------------------------------------------------------------------------------------
# Simulated annotation
# ---------------------------------------------------------------------------------------------

@dataclass
class SimulationResult:
    """What a simulation run did. ``exhausted`` is True when every annotator ran out of work."""

    n_judgments: int = 0
    per_annotator: dict[str, int] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)  # username -> why it stopped
    exhausted: bool = False
    seconds: float = 0.0
    annotators: list[SimulatedAnnotator] = field(default_factory=list, repr=False)


def campaign_world_name(*, campaign: Campaign) -> str | None:
    """The world a campaign was built from (its prompts' source), or None."""
    source = (Prompt.objects.filter(campaign=campaign, source__startswith=WORLD_SOURCE_PREFIX)
              .values_list("source", flat=True).first())
    return source[len(WORLD_SOURCE_PREFIX):] if source else None


def simulated_annotator_get_or_create(*, kind: str, index: int) -> User:
    """Return the annotator ``sim-<kind>-NN``, creating it (Role.ANNOTATOR) on first use.

    Raises ApplicationError when a user of that name exists without the annotator role.
    """
    username = f"sim-{kind}-{index:02d}"
    user = User.objects.filter(username=username).first()
    if user is None:
        # No usable password: a simulated annotator never logs in (and PBKDF2 costs ~0.5 s).
        return user_create_with_role(username=username, password=None, role=Role.ANNOTATOR,
                                     annotator_kind=AnnotatorProfile.Kind.SIMULATED)
    if Role.ANNOTATOR not in user_roles(user):
        raise ApplicationError(f"User {username!r} exists but is not an annotator.")
    return user


def simulate_campaign(
    *, campaign: Campaign, pool: str | Sequence[PoolMember], n_judgments: int | None = None,
    seed: int = 0, world_name: str | None = None, http_base_url: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> SimulationResult:
    """Run simulated annotators round-robin until ``n_judgments`` or until no work is left.

    ``pool`` is a spec such as "crowd:8,drifting:1,expert:2" or a list of PoolMember. Users are
    named ``sim-<kind>-NN`` and reused across runs and campaigns; each continues its own drift
    clock from its judgments already in this campaign. Each annotator draws from streams seeded
    by (seed, username, judgments so far), so a run is reproducible and independent of the
    campaign's gold. With ``http_base_url`` every step goes through the REST API of that server
    (token auth; tokens are created here); otherwise through the annotation services directly.
    ``progress`` is called with 1 after each judgment. Raises ApplicationError for a bad pool,
    an unknown world, or a campaign that is closed.
    """
    if not campaign.is_active:
        raise ApplicationError(f"Campaign {campaign.name!r} is closed.")
    if n_judgments is not None and n_judgments < 0:
        raise ApplicationError("n_judgments must be >= 0.")
    try:
        members = parse_pool(pool) if isinstance(pool, str) else list(pool)
        world = get_world(world_name or campaign_world_name(campaign=campaign) or "")
    except ValueError as exc:
        raise ApplicationError(str(exc)) from exc
    annotators = []
    for member in members:
        for index in range(member.count):
            user = simulated_annotator_get_or_create(kind=member.kind, index=index)
            n_done = Judgment.objects.filter(campaign=campaign, annotator=user).count()
            stream = f"{seed}:{user.username}:{n_done}"
            annotators.append(SimulatedAnnotator(
                user=user, config=member.config, world=world, n_done=n_done,
                decide_rng=random.Random(f"{stream}:decide"),
                issue_rng=random.Random(f"{stream}:issue"),
            ))
    clients = {}
    if http_base_url:
        from rest_framework.authtoken.models import Token

        for a in annotators:
            token, _ = Token.objects.get_or_create(user=a.user)
            clients[a.username] = ApiClient(base_url=http_base_url, api_token=token.key)

    result = SimulationResult(per_annotator={a.username: 0 for a in annotators},
                              annotators=annotators)
    started = time.monotonic()
    active = list(annotators)
    while active and (n_judgments is None or result.n_judgments < n_judgments):
        for annotator in list(active):
            if n_judgments is not None and result.n_judgments >= n_judgments:
                break
            try:
                if http_base_url:
                    worked = annotator.step_with_http(client=clients[annotator.username],
                                                      campaign_id=campaign.pk)
                else:
                    worked = annotator.step_with_services(campaign=campaign)
            except SimulationStop as exc:
                active.remove(annotator)
                result.stopped[annotator.username] = str(exc)
                continue
            if not worked:
                active.remove(annotator)
                result.stopped[annotator.username] = "no work left"
                continue
            result.n_judgments += 1
            result.per_annotator[annotator.username] += 1
            if progress is not None:
                progress(1)
    result.exhausted = not active
    result.seconds = time.monotonic() - started
    return result


# ---------------------------------------------------------------------------------------------
# The known truth of a simulated campaign
# ---------------------------------------------------------------------------------------------

_SIM_USERNAME_RE = re.compile(r"^sim-([a-z][a-z0-9_]*)-\d+$")


def _stored_or_world_utilities(
    *, world: World | None, rows: list[tuple],
) -> dict[int, float | None]:
    """Response id -> r*: the utility stored with the response when the world made it, else
    the world's utility of the text for the prompt as shown (a response imported into a world
    campaign), else None (the response cannot be scored)."""
    from annotation.models import Response

    utilities: dict[int, float | None] = {}
    missing: set[int] = set()
    for *_, a_id, b_id, u_a, u_b in rows:
        for rid, u in ((a_id, u_a), (b_id, u_b)):
            if u is None:
                missing.add(rid)
            else:
                utilities[rid] = float(u)
    missing -= utilities.keys()
    if missing and world is not None:
        for rid, text, turns in Response.objects.filter(pk__in=missing).values_list(
                "pk", "text", "prompt__turns"):
            prompt = world.parse_prompt(turns or [])
            utilities[rid] = None if prompt is None else float(world.utility(prompt, text))
    return utilities


def simulated_truth(
    *, campaign: Campaign, configs: Mapping[str, AnnotatorConfig] | None = None,
    world_name: str | None = None,
) -> dict:
    """What the quality estimates of ``campaign`` should recover, from the world's utility.

    For each annotator with judgments in the campaign (dataset label sources excluded, as from
    every tally of the people): true accuracy, the share of their current A/B answers that pick
    the reply with the higher true utility r* (``simulation.answer_truth``: pairs whose
    utilities are equal within UTILITY_TIE have no right answer and are left out, as are tie
    and both-bad answers), calibration items included; the counts behind it; and, for a
    simulated annotator, the decision parameters (tau, biases, drift) and the drift onset as a
    judgment number (``simulation.drift_onset_judgment``; the same numbering as the quality
    dashboards: 1-based over all the annotator's judgments in the campaign in time order) with
    the true accuracy before and after it. True accuracy is also given on regular items and on
    calibration items apart: gold items are built with a clear utility gap, so accuracy on them
    overstates accuracy on the regular work that ε is about. ``configs`` maps usernames to
    their configs; others get the preset named by a ``sim-<kind>-NN`` username, or none.

    ``totals.true_error`` is the judgment-weighted mean of 1 - true accuracy (weights: current
    judgments), the quantity the campaign's ε estimates (``CampaignQuality.noise_epsilon``);
    ``totals.true_error_pooled`` is wrong over scored answers. r* is the utility the world
    stored with each response, or the world's utility of the text when none was stored.
    Only reads; two queries (three when a response lacks a stored utility).
    """
    world = None
    name = world_name or campaign_world_name(campaign=campaign)
    if name:
        try:
            world = get_world(name)
        except ValueError as exc:
            raise ApplicationError(str(exc)) from exc
    rows = list(
        Judgment.objects.filter(campaign=campaign)
        .exclude(annotator__annotator_profile__kind=AnnotatorProfile.Kind.DATASET)
        .order_by("annotator_id", "created_at", "id")
        .values_list(
            "annotator_id", "annotator__username", "annotator__annotator_profile__kind",
            "choice", "superseded_by__id", "comparison__kind",
            "comparison__response_a_id", "comparison__response_b_id",
            "comparison__response_a__features__utility",
            "comparison__response_b__features__utility",
        )
    )
    utilities = _stored_or_world_utilities(world=world, rows=rows)
    by_annotator: dict[int, list[tuple]] = defaultdict(list)
    for row in rows:
        by_annotator[row[0]].append(row)
    annotators = []
    for judgments in by_annotator.values():
        username, kind = judgments[0][1], judgments[0][2]
        match = _SIM_USERNAME_RE.match(username)
        preset = match.group(1) if match else None
        config = (configs or {}).get(username) or PRESETS.get(preset or "")
        tally = TruthTally(onset=None if config is None else drift_onset_judgment(config))
        # Numbered over every judgment, superseded ones too (the dashboards' numbering); only
        # current judgments are tallied, as the estimators see only those.
        for number, (*_, choice, superseded, kind, a_id, b_id, _ua, _ub) in enumerate(
                judgments, 1):
            if superseded is None:
                tally.add(number=number, choice=choice, utility_a=utilities.get(a_id),
                          utility_b=utilities.get(b_id),
                          regular=kind != Comparison.Kind.CALIBRATION)
        annotators.append({
            "username": username, "kind": kind, "preset": preset,
            "config": None if config is None else config_summary(config),
            **tally.summary(),
        })
    annotators.sort(key=lambda a: a["username"])
    scored = [a for a in annotators if a["true_accuracy"] is not None]
    weight = sum(a["n_judgments"] for a in scored)
    n_scored = sum(a["n_scored"] for a in annotators)
    n_correct = sum(a["n_correct"] for a in annotators)
    return {
        "world": name, "utility_tie": UTILITY_TIE,
        "annotators": annotators,
        "totals": {
            "n_annotators": len(annotators),
            "n_judgments": sum(a["n_judgments"] for a in annotators),
            "n_scored": n_scored, "n_correct": n_correct,
            "true_error": (sum(a["n_judgments"] * (1 - a["true_accuracy"]) for a in scored)
                           / weight) if weight else None,
            "true_error_pooled": 1 - n_correct / n_scored if n_scored else None,
        },
    }


def simulation_summary(*, campaign: Campaign, result: SimulationResult, pool: str,
                       seed: int) -> dict:
    """One run of ``simulate_campaign`` and the campaign's truth afterwards, as plain JSON.

    ``run`` says what this run did; ``annotators`` and ``totals`` are ``simulated_truth`` over
    every judgment in the campaign (earlier runs included), with this run's count and stop
    reason added to each annotator that took part. The configs are those the run used.
    """
    truth = simulated_truth(campaign=campaign,
                            configs={a.username: a.config for a in result.annotators})
    for annotator in truth["annotators"]:
        username = annotator["username"]
        annotator["judgments_this_run"] = result.per_annotator.get(username, 0)
        annotator["stopped"] = result.stopped.get(username)
    return {
        "campaign": campaign.name, "pool": pool, "seed": seed,
        "run": {"n_judgments": result.n_judgments, "seconds": round(result.seconds, 3),
                "exhausted": result.exhausted},
        **truth,
    }
