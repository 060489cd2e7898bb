"""Simulated annotators that answer through the same paths a person uses (DESIGN section 5).

The choice model is Bradley-Terry with biases, decided in *screen* terms::

    m = r*(L) - r*(R) + b·(f(L) - f(R)) + b_pos        (L, R: the left and right texts)
    z = m + τ·ε,   ε ~ Logistic(0, 1)                    so P(left) = σ(m / τ) without ties

``r*`` and ``f`` are the world's utility and features of the texts *as shown*, computed after
reading the question (``World.parse_prompt``), never from the database: a simulated annotator
sees what the annotator page shows (turns, left text, right text) and nothing else, so it cannot
tell calibration items from regular ones, and the position bias ``b_pos`` (toward the left) is
real, because the server chose the sides. Ties are answered when the perceived margin is small
(|z| < ``tie_band``, a Rao-Kupper-style threshold), both-bad when both replies look bad, and the
strength (1-3) grows with |z|. A drift schedule changes τ or b from the annotator's t0-th
judgment on, to exercise drift detection (DESIGN section 4) with a known onset.

Two transports: ``step_with_services`` calls ``assignment_issue_next`` and ``judgment_submit``
directly (fast, for experiments and tests); ``step_with_http`` does the same through the REST
API with token auth (a load test of a running server).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from evaluation.worlds import World

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from annotation.models import Campaign


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DriftSchedule:
    """Parameters that replace an annotator's own from their judgment ``t0`` on.

    ``t0`` counts this annotator's judgments in the campaign (0-based, calibration items
    included), so the true onset of a drift is known exactly. Fields left None do not change.
    """

    t0: int = 100
    tau: float | None = None
    bias: Mapping[str, float] | None = None
    position_bias: float | None = None
    random_rate: float | None = None


@dataclass(frozen=True)
class AnnotatorConfig:
    """How one simulated annotator decides. Utilities are in the world's units (arithmetic:
    correct = 1, wrong = -0.5), so τ and the bias weights are too."""

    tau: float = field(default=0.5, metadata={
        "help": "Temperature of the logistic noise; larger = noisier. 0 = deterministic."})
    bias: Mapping[str, float] = field(default_factory=dict, metadata={
        "help": "Weight per feature name on f(left) - f(right), e.g. {'length': 0.35} adds "
                "0.35 utility units per 100 characters of extra length."})
    position_bias: float = field(default=0.0, metadata={
        "help": "Utility units added to whichever reply is on the left of the screen."})
    tie_band: float = field(default=0.0, metadata={
        "help": "Answer tie when the perceived margin |z| is below this."})
    both_bad_below: float | None = field(default=None, metadata={
        "help": "Answer both-bad when the better-looking reply's perceived value (utility "
                "plus biases, plus noise) is below this; None never does."})
    strength_cuts: tuple[float, float] = field(default=(0.25, 0.75), metadata={
        "help": "|z| below the first is strength 1 (slight), below the second 2, else 3."})
    random_rate: float = field(default=0.0, metadata={
        "help": "Probability of ignoring the texts and clicking left or right at random."})
    seconds_median: float = field(default=20.0, metadata={
        "help": "Median seconds spent per judgment (log-normal, sigma 0.5)."})
    drift: DriftSchedule | None = field(default=None, metadata={
        "help": "Parameters that change from the annotator's judgment t0 on."})

    def __post_init__(self) -> None:
        if self.tau < 0 or self.tie_band < 0 or not 0 <= self.random_rate <= 1:
            raise ValueError("tau and tie_band must be >= 0 and random_rate in [0, 1].")
        if not 0 <= self.strength_cuts[0] <= self.strength_cuts[1]:
            raise ValueError("strength_cuts must be increasing and >= 0.")

    def at(self, t: int) -> AnnotatorConfig:
        """The parameters in force for this annotator's judgment number ``t`` (0-based)."""
        d = self.drift
        if d is None or t < d.t0:
            return self
        return replace(
            self,
            tau=self.tau if d.tau is None else d.tau,
            bias=self.bias if d.bias is None else d.bias,
            position_bias=self.position_bias if d.position_bias is None else d.position_bias,
            random_rate=self.random_rate if d.random_rate is None else d.random_rate,
            drift=None,
        )


# Presets, tuned on the arithmetic world's regular pairs (random candidate pairs, random sides):
# experts agree with the utility ordering on 97% of decided pairs with a utility difference; the
# crowd on 74%, the 25% flip rate of AlpacaFarm section 4.3 and Coste et al. 2023 (human-human
# agreement 63-77%, Bai et al. 2022). Of that 26%, most is bias, not noise: the crowd picks the
# longer reply 19 points more often than its utility warrants (Singhal et al. 2023) and the reply
# agreeing with the user's wrong belief on 27% of probe pairs where experts do on 12% (Sharma et
# al. 2023); it clicks left on 56% (position bias).
EXPERT = AnnotatorConfig(tau=0.15, tie_band=0.05, seconds_median=35.0)
CROWD = AnnotatorConfig(
    tau=0.4,
    bias={"length": 0.25, "agrees_with_user": 1.0, "politeness": 0.2},
    position_bias=0.15, tie_band=0.05, seconds_median=15.0,
)
# A crowd worker who tires after 60 judgments (a default seed_world campaign gives each of 11
# annotators about 120): noisier and more swayed by length, the user and the left side
# (agreement with the utility ordering falls from 74% to 53%).
DRIFTING = replace(CROWD, drift=DriftSchedule(
    t0=60, tau=1.0, bias={"length": 0.6, "agrees_with_user": 1.5, "politeness": 0.4},
    position_bias=0.4,
))
RANDOM_CLICKER = AnnotatorConfig(random_rate=1.0, seconds_median=2.0)

PRESETS: dict[str, AnnotatorConfig] = {
    "expert": EXPERT, "crowd": CROWD, "drifting": DRIFTING, "random": RANDOM_CLICKER,
}


@dataclass(frozen=True)
class PoolMember:
    """``count`` annotators named ``sim-<kind>-NN`` that all decide with ``config``."""

    kind: str
    count: int
    config: AnnotatorConfig


_POOL_ITEM_RE = re.compile(r"^\s*([a-z][a-z0-9_]*)\s*:\s*(\d+)\s*$")


def parse_pool(spec: str, presets: Mapping[str, AnnotatorConfig] = PRESETS) -> list[PoolMember]:
    """Parse "crowd:8,drifting:1,expert:2" into pool members; raise ValueError on bad input."""
    members: list[PoolMember] = []
    seen: set[str] = set()
    for item in (spec or "").split(","):
        m = _POOL_ITEM_RE.match(item)
        if m is None:
            raise ValueError(f"Bad pool item {item.strip()!r}; expected KIND:COUNT, e.g. crowd:8.")
        kind, count = m.group(1), int(m.group(2))
        if kind not in presets:
            raise ValueError(f"Unknown annotator kind {kind!r}; known: {', '.join(presets)}.")
        if kind in seen:
            raise ValueError(f"Annotator kind {kind!r} given twice.")
        seen.add(kind)
        if count > 0:
            members.append(PoolMember(kind=kind, count=count, config=presets[kind]))
    if not members:
        raise ValueError("The pool has no annotators.")
    return members


# ---------------------------------------------------------------------------------------------
# The decision (pure: no ORM)
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ScreenDecision:
    """An answer in screen terms, as the annotator page or the API takes it."""

    choice: str  # "left", "right", "tie" or "both_bad"
    strength: int | None  # 1-3 for left/right, None for tie and both-bad
    seconds_spent: float
    margin: float  # m, the noiseless perceived advantage of the left reply (diagnostics)


_STANDARD_NORMAL = NormalDist()


def _logistic(u: float) -> float:
    u = min(max(u, 1e-12), 1 - 1e-12)
    return math.log(u / (1 - u))


def perceive(
    world: World, turns: list[dict[str, str]], text: str
) -> tuple[float, dict[str, float]]:
    """Utility and features of ``text`` as an annotator reading ``turns`` would judge them.

    A prompt the world cannot read scores 0 utility, so only biases and noise decide.
    """
    prompt = world.parse_prompt(turns)
    if prompt is None:
        return 0.0, {}
    return world.utility(prompt, text), world.features(prompt, text)


def decide(
    *, config: AnnotatorConfig, world: World, turns: list[dict[str, str]], left_text: str,
    right_text: str, rng: random.Random,
) -> ScreenDecision:
    """Choose between the texts on screen; see the module docstring for the model.

    Exactly five numbers are drawn from ``rng`` per call whatever the outcome, so one seed gives
    one stream of decisions however the branches go.
    """
    u_random, u_noise, u_bad, u_side, u_time = (rng.random() for _ in range(5))
    seconds = config.seconds_median * math.exp(0.5 * _STANDARD_NORMAL.inv_cdf(
        min(max(u_time, 1e-9), 1 - 1e-9)))
    if u_random < config.random_rate:
        side = "left" if u_side < 0.5 else "right"
        return ScreenDecision(side, 1 + int(3 * u_noise) % 3, seconds, 0.0)
    u_left, f_left = perceive(world, turns, left_text)
    u_right, f_right = perceive(world, turns, right_text)
    bias_left = sum(w * f_left.get(k, 0.0) for k, w in config.bias.items())
    bias_right = sum(w * f_right.get(k, 0.0) for k, w in config.bias.items())
    margin = (u_left + bias_left) - (u_right + bias_right) + config.position_bias
    if config.both_bad_below is not None:
        best = max(u_left + bias_left, u_right + bias_right)
        if best + config.tau * _logistic(u_bad) < config.both_bad_below:
            return ScreenDecision("both_bad", None, seconds, margin)
    z = margin + config.tau * _logistic(u_noise)
    if abs(z) < config.tie_band:
        return ScreenDecision("tie", None, seconds, margin)
    lo, hi = config.strength_cuts
    strength = 1 if abs(z) < lo else 2 if abs(z) < hi else 3
    return ScreenDecision("left" if z > 0 else "right", strength, seconds, margin)


# ---------------------------------------------------------------------------------------------
# The truth about a simulated annotator (pure: no ORM)
# ---------------------------------------------------------------------------------------------

# Two replies whose true utilities differ by no more than this are a tie in truth: neither
# answer is right, so the pair is left out of true accuracy (counted as ``n_equal_utility``).
# Utilities are sums of a few decimal constants; 1e-9 only absorbs float rounding.
UTILITY_TIE = 1e-9


def answer_truth(choice: str, utility_a: float | None, utility_b: float | None) -> bool | None:
    """Whether a canonical-order answer picks the reply with the higher true utility r*.

    None when the answer is not decisive (tie, both-bad), when a utility is unknown, or when
    the utilities are equal within UTILITY_TIE (no right answer).
    """
    if choice not in ("A", "B") or utility_a is None or utility_b is None:
        return None
    if abs(utility_a - utility_b) <= UTILITY_TIE:
        return None
    return (choice == "A") == (utility_a > utility_b)


def drift_onset_judgment(config: AnnotatorConfig) -> int | None:
    """The judgment number (1-based) from which ``config``'s drift schedule is in force.

    ``DriftSchedule.t0`` counts judgments made before the change (0-based), so the first
    judgment decided with the new parameters is number t0 + 1: the number the quality
    dashboards and ``quality_report`` give an alert's onset. None without a schedule.
    """
    return None if config.drift is None else config.drift.t0 + 1


def config_summary(config: AnnotatorConfig) -> dict[str, Any]:
    """The decision parameters of ``config`` as plain JSON (utility units, see AnnotatorConfig).

    ``drift`` lists only the parameters the schedule changes, with its ``onset_judgment``.
    """
    out: dict[str, Any] = {
        "tau": config.tau, "bias": dict(config.bias), "position_bias": config.position_bias,
        "tie_band": config.tie_band, "both_bad_below": config.both_bad_below,
        "random_rate": config.random_rate, "drift": None,
    }
    d = config.drift
    if d is not None:
        changes = {"tau": d.tau, "bias": None if d.bias is None else dict(d.bias),
                   "position_bias": d.position_bias, "random_rate": d.random_rate}
        out["drift"] = {"t0": d.t0, "onset_judgment": drift_onset_judgment(config),
                        **{k: v for k, v in changes.items() if v is not None}}
    return out


@dataclass
class TruthTally:
    """Counts behind one annotator's true accuracy; ``add`` takes their judgments in order.

    ``n_judgments`` counts current judgments (the weight of the campaign's ε); ``n_decisive``
    their A/B answers; ``n_scored`` the A/B answers on pairs with a utility difference, of
    which ``n_correct`` picked the higher r*. The scored answers are also split by item kind
    (regular comparisons vs calibration items, which are built with a clear utility gap and so
    are easier) and, with an onset, into those before it and those from it on (by judgment
    number).
    """

    onset: int | None = None
    n_judgments: int = 0
    n_decisive: int = 0
    n_equal_utility: int = 0
    n_scored: int = 0
    n_correct: int = 0
    scored_before: int = 0
    correct_before: int = 0
    scored_after: int = 0
    correct_after: int = 0
    scored_regular: int = 0
    correct_regular: int = 0

    def add(self, *, number: int, choice: str, utility_a: float | None,
            utility_b: float | None, regular: bool = True) -> None:
        self.n_judgments += 1
        if choice not in ("A", "B"):
            return
        self.n_decisive += 1
        ok = answer_truth(choice, utility_a, utility_b)
        if ok is None:
            self.n_equal_utility += utility_a is not None and utility_b is not None
            return
        self.n_scored += 1
        self.n_correct += ok
        if regular:
            self.scored_regular += 1
            self.correct_regular += ok
        if self.onset is not None:
            if number < self.onset:
                self.scored_before += 1
                self.correct_before += ok
            else:
                self.scored_after += 1
                self.correct_after += ok

    @staticmethod
    def _share(hits: int, n: int) -> float | None:
        return hits / n if n else None

    @property
    def true_accuracy(self) -> float | None:
        return self._share(self.n_correct, self.n_scored)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_judgments": self.n_judgments, "n_decisive": self.n_decisive,
            "n_equal_utility": self.n_equal_utility, "n_scored": self.n_scored,
            "n_correct": self.n_correct, "true_accuracy": self.true_accuracy,
            "drift_onset_judgment": self.onset,
            "n_scored_regular": self.scored_regular,
            "true_accuracy_regular": self._share(self.correct_regular, self.scored_regular),
            "true_accuracy_calibration": self._share(self.n_correct - self.correct_regular,
                                                     self.n_scored - self.scored_regular),
        }
        if self.onset is not None:
            out["true_accuracy_before_onset"] = self._share(self.correct_before,
                                                            self.scored_before)
            out["true_accuracy_after_onset"] = self._share(self.correct_after, self.scored_after)
            out["n_scored_after_onset"] = self.scored_after
        return out


# ---------------------------------------------------------------------------------------------
# Annotators that act through the services or the HTTP API
# ---------------------------------------------------------------------------------------------

class SimulationStop(Exception):
    """This annotator can do no more in this campaign (paused, closed); the message says why."""


@dataclass
class SimulatedAnnotator:
    """One simulated person: a user, a decision config, and its own random streams.

    ``n_done`` is the number of judgments this annotator has made in the campaign so far (the
    drift clock). ``decide_rng`` drives decisions; ``issue_rng`` is handed to
    ``assignment_issue_next`` in service mode so that runs are reproducible (the server's own
    randomness: calibration draws and screen sides).
    """

    user: AbstractBaseUser
    config: AnnotatorConfig
    world: World
    decide_rng: random.Random
    issue_rng: random.Random
    n_done: int = 0
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def username(self) -> str:
        return self.user.get_username()

    def decide(self, *, turns: list[dict[str, str]], left_text: str,
               right_text: str) -> ScreenDecision:
        return decide(config=self.config.at(self.n_done), world=self.world, turns=turns,
                      left_text=left_text, right_text=right_text, rng=self.decide_rng)

    def step_with_services(self, *, campaign: Campaign) -> bool:
        """Take the next comparison, judge it, submit it; False when no work is left.

        Raises SimulationStop when the services refuse this annotator (e.g. paused).
        """
        from annotation.errors import ApplicationError
        from annotation.selectors import comparison_for_annotator
        from annotation.services import assignment_issue_next, judgment_submit_from_screen

        try:
            assignment = assignment_issue_next(campaign=campaign, annotator=self.user,
                                               rng=self.issue_rng)
        except ApplicationError as exc:
            raise SimulationStop(exc.message) from exc
        if assignment is None:
            return False
        view = comparison_for_annotator(assignment=assignment)
        decision = self.decide(turns=view.turns, left_text=view.left_text,
                               right_text=view.right_text)
        try:
            judgment_submit_from_screen(
                token=view.token, annotator=self.user, choice=decision.choice,
                strength=decision.strength, idempotency_key=f"sim-{view.token}",
                seconds_spent=round(decision.seconds_spent, 2), rng=self.issue_rng,
            )
        except ApplicationError as exc:
            raise SimulationStop(exc.message) from exc
        self._record(view.token, decision)
        return True

    def step_with_http(self, *, client: ApiClient, campaign_id: int) -> bool:
        """The same step through the REST API; False when the server answers 204."""
        item = client.next_comparison(campaign_id)
        if item is None:
            return False
        decision = self.decide(turns=item["turns"], left_text=item["left"],
                               right_text=item["right"])
        client.submit_judgment(
            token=item["token"], choice=decision.choice, strength=decision.strength,
            idempotency_key=f"sim-{item['token']}",
            seconds_spent=round(decision.seconds_spent, 2),
        )
        self._record(item["token"], decision)
        return True

    def _record(self, token: str, decision: ScreenDecision) -> None:
        self.log.append({"token": token, "t": self.n_done, "choice": decision.choice,
                         "strength": decision.strength, "margin": decision.margin})
        self.n_done += 1


class ApiClient:
    """The two annotator calls of the REST API, with token auth (``Authorization: Token``)."""

    def __init__(self, *, base_url: str, api_token: str, timeout: float = 30.0,
                 session: Any = None) -> None:
        import requests  # only the load mode needs it

        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.headers["Authorization"] = f"Token {api_token}"

    def next_comparison(self, campaign_id: int) -> dict[str, Any] | None:
        """POST /api/campaigns/<id>/next/; None on 204. Raises SimulationStop on 4xx."""
        r = self.session.post(f"{self.base_url}/api/campaigns/{campaign_id}/next/",
                              timeout=self.timeout)
        if r.status_code == 204:
            return None
        self._raise_for(r)
        return r.json()

    def submit_judgment(self, *, token: str, choice: str, strength: int | None,
                        idempotency_key: str, seconds_spent: float) -> dict[str, Any]:
        """POST /api/judgments/ with a screen-order choice. Raises SimulationStop on 4xx."""
        r = self.session.post(
            f"{self.base_url}/api/judgments/", timeout=self.timeout,
            json={"token": token, "choice": choice, "strength": strength,
                  "idempotency_key": idempotency_key, "seconds_spent": seconds_spent},
        )
        self._raise_for(r)
        return r.json()

    @staticmethod
    def _raise_for(r: Any) -> None:
        if 400 <= r.status_code < 500:
            try:
                detail = r.json().get("detail", r.text)
            except ValueError:
                detail = r.text
            raise SimulationStop(f"HTTP {r.status_code}: {detail}")
        r.raise_for_status()
