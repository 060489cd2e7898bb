"""Simulated campaigns with a known truth, built in memory, for validating annotation/quality.py.

:func:`world_frame_simulate` builds what ``world_campaign_create`` + ``simulate_campaign`` +
``judgment_frame`` build through the database, without the database (about 400x faster), so
the estimators can be checked on many pools and seeds in seconds:

* the campaign: the world's prompts (training categories), every candidate reply, and
  ``pairs_per_prompt`` random pairs per prompt as regular items; calibration items cycling
  through the same recipes as ``world_campaign_create`` (known-answer strict, known-answer
  "better or tie", truncate, wrong number, unrelated reply of similar length), the good side
  random;
* the assignment: annotators take turns; each takes the first regular item still below the
  overlap that it has not seen, or, with probability ``calibration_rate``, an unseen
  calibration item instead (calibration items have no overlap limit); the screen side is
  random per assignment, as ``assignment_issue_next`` does;
* the answer: ``evaluation.simulation.decide``, the same function a simulated annotator calls,
  with the annotator's drift clock.

The truth comes from the world's utility r*: an annotator's **true accuracy** is the share of
its decisive (A or B) answers on regular items whose two replies differ in r* that pick the
higher-r* reply; its **true error** is 1 - true accuracy; the campaign's **true epsilon** is the
true error weighted by each annotator's number of judgments. Pure Python and numpy: no ORM.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from annotation.calibration import TransformError, pick_unrelated
from annotation.choices import CHOICE_CODES
from annotation.quality import JudgmentFrame
from evaluation.simulation import PoolMember, decide, parse_pool
from evaluation.worlds import World, get_world

_RECIPES = ("known_strict", "known_tolerant", "truncate", "wrong_number", "unrelated")
_STRICT_GAP, _TOLERANT_GAP, _DEGRADED_GAP = 1.0, (0.2, 1.0), 0.5  # as evaluation.services


@dataclass(frozen=True)
class _Item:
    prompt: int
    text_a: str
    text_b: str
    u_a: float
    u_b: float
    gold: int  # choice code of the gold answer, -1 for a regular item
    accepts: tuple[int, ...]


@dataclass(frozen=True)
class SimulatedFrame:
    """A simulated campaign's judgment frame and its truth (see the module docstring).

    ``kinds[w]`` is annotator w's pool kind ("crowd", "expert", ...); ``u_a`` / ``u_b`` the
    world utility of each row's two replies; ``true_accuracy`` (nan for an annotator with no
    scoreable row), ``n_judgments`` and ``true_epsilon`` as defined in the module docstring;
    ``true_length[w]`` the annotator's length weight over its temperature (logit per 100
    characters, 0 for an annotator with no length bias), before any drift;
    ``expected_accuracy[w]`` the same average as ``true_accuracy`` of the model's probability
    of picking the better reply (what an estimator that knew every annotator's parameters, but
    not the dice, would say: the ceiling of any rank correlation with ``true_accuracy``).
    """

    frame: JudgmentFrame
    kinds: list[str]
    u_a: np.ndarray
    u_b: np.ndarray
    true_accuracy: np.ndarray
    n_judgments: np.ndarray
    true_epsilon: float
    true_length: np.ndarray
    expected_accuracy: np.ndarray

    @property
    def n_annotators(self) -> int:
        return len(self.kinds)


def _campaign_items(world: World, *, n_prompts: int, seed: int, pairs_per_prompt: int,
                    calibration_rate: float) -> tuple[list, list[_Item], list[_Item]]:
    categories = [c for c in world.categories if c not in world.held_out_categories]
    prompts = world.generate_prompts(n_prompts, seed, categories=categories)
    rng = random.Random(f"{world.name}:{seed}:campaign")
    texts: list[list[str]] = []
    regular: list[_Item] = []
    for p, prompt in enumerate(prompts):
        candidates = world.candidate_responses(prompt, rng)
        rng.shuffle(candidates)
        texts.append(candidates)
        pairs = rng.sample(list(combinations(range(len(candidates)), 2)),
                           min(pairs_per_prompt, len(candidates) * (len(candidates) - 1) // 2))
        for i, j in pairs:
            a, b = candidates[i], candidates[j]
            regular.append(_Item(p, a, b, world.utility(prompt, a), world.utility(prompt, b),
                                 -1, ()))
    n_cal = max(5, math.ceil(calibration_rate * len(regular))) if calibration_rate > 0 else 0
    order = list(range(len(prompts)))
    rng.shuffle(order)
    calibration: list[_Item] = []
    slot = 0
    for n in range(n_cal):
        for _ in range(len(order)):
            p = order[slot % len(order)]
            slot += 1
            item = (_calibration_item(world, prompts, texts, p, _RECIPES[n % len(_RECIPES)], rng)
                    or _calibration_item(world, prompts, texts, p, "known_strict", rng))
            if item is not None:
                calibration.append(item)
                break
    return prompts, regular, calibration


def _calibration_item(world: World, prompts: list, texts: list[list[str]], p: int, recipe: str,
                      rng: random.Random) -> _Item | None:
    prompt = prompts[p]
    scored = sorted(((world.utility(prompt, t), len(t), t) for t in texts[p]), reverse=True)
    best_u, _, best = scored[0]
    accepts_tie = False
    if recipe == "known_strict":
        fits = [t for u, _, t in scored if u <= best_u - _STRICT_GAP]
    elif recipe == "known_tolerant":
        lo, hi = _TOLERANT_GAP
        fits = [t for u, _, t in scored if best_u - hi < u <= best_u - lo]
        accepts_tie = True
    elif recipe == "unrelated":
        donors = [t for q, others in enumerate(texts) if q != p for t in others
                  if world.utility(prompt, t) <= best_u - _DEGRADED_GAP]
        try:
            fits = [pick_unrelated(best, donors, rng)] if donors else []
        except TransformError:
            fits = []
    else:
        worse = world.degraded_responses(prompt, best, rng).get(recipe)
        fits = ([worse] if worse is not None and worse not in texts[p]
                and world.utility(prompt, worse) <= best_u - _DEGRADED_GAP else [])
    if not fits:
        return None
    worse = rng.choice(fits)
    good_on_a = rng.random() < 0.5
    a, b = (best, worse) if good_on_a else (worse, best)
    gold = CHOICE_CODES["A"] if good_on_a else CHOICE_CODES["B"]
    accepts = (gold, CHOICE_CODES["tie"]) if accepts_tie else (gold,)
    return _Item(p, a, b, world.utility(prompt, a), world.utility(prompt, b), gold, accepts)


def world_frame_simulate(
    *, pool: str | Sequence[PoolMember], n_prompts: int, seed: int, overlap: int = 3,
    pairs_per_prompt: int = 2, calibration_rate: float = 0.1, world_name: str = "arithmetic",
) -> SimulatedFrame:
    """Simulate a world campaign answered by ``pool`` (e.g. "crowd:8,drifting:1,expert:2").

    Deterministic given the arguments. Raises ValueError for a bad pool or an unknown world.
    """
    world = get_world(world_name)
    members = parse_pool(pool) if isinstance(pool, str) else list(pool)
    prompts, regular, calibration = _campaign_items(
        world, n_prompts=n_prompts, seed=seed, pairs_per_prompt=pairs_per_prompt,
        calibration_rate=calibration_rate)
    configs, kinds = [], []
    for member in members:
        for _ in range(member.count):
            configs.append(member.config)
            kinds.append(member.kind)
    n_w = len(configs)
    rng = random.Random(f"{seed}:assign")
    decide_rngs = [random.Random(f"{seed}:{w}:decide") for w in range(n_w)]
    claimed = [0] * len(regular)
    seen: list[set[int]] = [set() for _ in range(n_w)]  # item ids: regular i, calibration ~i
    n_done = [0] * n_w
    rows: list[tuple] = []
    active = list(range(n_w))
    while active:
        for w in list(active):
            draw_cal = calibration_rate > 0 and rng.random() < calibration_rate
            nxt = next((i for i in range(len(regular))
                        if claimed[i] < overlap and i not in seen[w]), None)
            if nxt is None:
                active.remove(w)
                continue
            unseen_cal = [c for c in range(len(calibration)) if ~c not in seen[w]]
            if draw_cal and unseen_cal:
                c = rng.choice(unseen_cal)
                item, key = calibration[c], ~c
            else:
                claimed[nxt] += 1
                item, key = regular[nxt], nxt
            seen[w].add(key)
            a_on_left = rng.random() < 0.5
            left, right = (item.text_a, item.text_b) if a_on_left else (item.text_b, item.text_a)
            d = decide(config=configs[w].at(n_done[w]), world=world,
                       turns=prompts[item.prompt].turns, left_text=left, right_text=right,
                       rng=decide_rngs[w])
            n_done[w] += 1
            expected = _p_better(configs[w].at(n_done[w] - 1), world, prompts[item.prompt],
                                 left, right)
            if d.choice in ("left", "right"):
                choice = "A" if (d.choice == "left") == a_on_left else "B"
            else:
                choice = d.choice
            rows.append((w, key, item, CHOICE_CODES[choice], d.strength or 0, a_on_left,
                         d.seconds_spent, expected))
    return _frame_and_truth(world, prompts, rows, kinds, configs)


def _p_better(config, world: World, prompt, left: str, right: str) -> float:
    """P(a decisive answer picks the higher-utility reply) under ``decide``'s model (ties and
    random clicks aside); 0.5 when the replies are equally good."""
    u_l, f_l = world.utility(prompt, left), world.features(prompt, left)
    u_r, f_r = world.utility(prompt, right), world.features(prompt, right)
    if u_l == u_r:
        return 0.5
    bias = sum(w * (f_l.get(k, 0.0) - f_r.get(k, 0.0)) for k, w in config.bias.items())
    margin = u_l - u_r + bias + config.position_bias
    p_left = 1.0 / (1.0 + math.exp(-margin / max(config.tau, 1e-9)))
    p = p_left if u_l > u_r else 1.0 - p_left
    return config.random_rate * 0.5 + (1 - config.random_rate) * p


def _frame_and_truth(world: World, prompts: list, rows: list[tuple], kinds: list[str],
                     configs: list) -> SimulatedFrame:
    n_w = len(kinds)
    item_code: dict[int, int] = {}
    cols: dict[str, list] = {k: [] for k in (
        "annotator", "item", "choice", "strength", "a_on_left", "seconds", "len_diff",
        "agree_diff", "gold_ok", "gold_label", "is_calibration")}
    u_a, u_b = [], []
    p_better = []
    for w, key, item, choice, strength, a_on_left, seconds, expected in rows:
        p_better.append(expected)
        prompt = prompts[item.prompt]
        fa = world.features(prompt, item.text_a)["agrees_with_user"]
        fb = world.features(prompt, item.text_b)["agrees_with_user"]
        cols["annotator"].append(w)
        cols["item"].append(item_code.setdefault(key, len(item_code)))
        cols["choice"].append(choice)
        cols["strength"].append(strength)
        cols["a_on_left"].append(a_on_left)
        cols["seconds"].append(seconds)
        cols["len_diff"].append(float(len(item.text_a) - len(item.text_b)))
        cols["agree_diff"].append(fa - fb if fa != fb else math.nan)
        cols["gold_ok"].append(float(choice in item.accepts) if item.gold >= 0 else math.nan)
        cols["gold_label"].append(item.gold)
        cols["is_calibration"].append(item.gold >= 0)
        u_a.append(item.u_a)
        u_b.append(item.u_b)
    n = len(rows)
    frame = JudgmentFrame(**{k: np.asarray(v) for k, v in cols.items()},
                          consistent=np.full(n, np.nan), is_reshow=np.zeros(n, bool))
    u_a_arr, u_b_arr = np.asarray(u_a), np.asarray(u_b)
    scoreable = (~frame.is_calibration & (u_a_arr != u_b_arr)
                 & np.isin(frame.choice, [CHOICE_CODES["A"], CHOICE_CODES["B"]]))
    right = (frame.choice == CHOICE_CODES["A"]) == (u_a_arr > u_b_arr)
    counts = np.bincount(frame.annotator[scoreable], minlength=n_w)
    hits = np.bincount(frame.annotator[scoreable], weights=right[scoreable], minlength=n_w)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.where(counts > 0, hits / counts, np.nan)
    expected = np.bincount(frame.annotator[scoreable],
                           weights=np.asarray(p_better)[scoreable], minlength=n_w)
    with np.errstate(invalid="ignore", divide="ignore"):
        expected_accuracy = np.where(counts > 0, expected / counts, np.nan)
    n_judgments = np.bincount(frame.annotator, minlength=n_w)
    has = np.isfinite(accuracy)
    epsilon = float(np.average(1 - accuracy[has], weights=n_judgments[has]))
    true_length = np.array([c.bias.get("length", 0.0) / c.tau if c.tau > 0 else 0.0
                            for c in configs])
    return SimulatedFrame(frame=frame, kinds=kinds, u_a=u_a_arr, u_b=u_b_arr,
                          true_accuracy=accuracy, n_judgments=n_judgments,
                          true_epsilon=epsilon, true_length=true_length,
                          expected_accuracy=expected_accuracy)
