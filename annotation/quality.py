"""Annotator and campaign quality from a frame of current judgments. Pure numpy, no ORM.

DESIGN section 4 lists what is measured; this module computes all of it from one
:class:`JudgmentFrame` (one row per current judgment, ids already mapped to integers). Services
fetch the rows through selectors, build the frame with :func:`frame_from_records`, call
:func:`quality_recompute` and persist the result into ``AnnotatorQuality`` / ``CampaignQuality``.

Contract of the full recompute (:func:`quality_recompute`, or :func:`annotator_stats` and
:func:`campaign_stats` separately):

* Every per-annotator statistic is a grouped reduction (``np.bincount`` on annotator codes), so
  the cost is linear in the number of rows with no Python loop over annotators or rows. On
  1,000,000 judgments from 10,000 annotators over 300,000 items the whole recompute, with a
  converged gold-anchored fit, takes 3.4 s against 1.7 s for crowd-kit's ``DawidSkene`` alone,
  which stops after 2 EM iterations on its miscomputed bound (2-core machine, load 0.9;
  ``benchmarks/quality_at_scale.py``).
* Dawid-Skene runs once and is shared by both functions (pass ``ds=``). The default fit is
  gold-anchored (:func:`fit_dawid_skene`) by :func:`dawid_skene`, which wraps the project's
  one EM (:mod:`annotation.dawid_skene`: SQUAREM-accelerated, a count-weighted parameter
  criterion, :data:`DS_SMOOTHING` pseudo-answers): 15 iterations (44 EM steps, 1.4 s) on the
  1M frame. Run as plain EM with crowd-kit's stopping rule it reproduces crowd-kit's
  posteriors, priors, confusion matrices and stopping iteration (checked in
  ``tests/annotation/test_quality.py``); per EM step it costs a ninth of crowd-kit's pandas
  joins (12 steps: 0.85 s against 7.6 s). ``ds_backend="crowdkit"`` runs crowd-kit itself
  (integer ids, ``probas_`` columns picked by label, as WEB-STACK.md advises).
* Krippendorff's alpha is computed from per-item value counts with a vectorised coincidence
  matrix (:func:`alpha_from_value_counts`), exact on every item: no sampling. The
  ``krippendorff`` package is the reference in the tests; it is not called here because its
  coincidence step builds a units x values x values array (2 s of CPU for the two alphas at
  300,000 items, against about 0.1 s here), and its dense reliability-matrix input would be
  10,000 x 300,000.

The submit path must not run any of this. It keeps an O(1) gold tally in the database instead
(``annotation.services.quality``: counts and a Wilson interval, for the pause check); the full
recompute, drift scan included, runs as a job every GAPLAB_QUALITY_RECOMPUTE_EVERY judgments of
a campaign. :class:`GoldTally` and ``drift.CusumState`` are the same O(1) updates in memory; the
benchmarks use them to price an incremental path.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from annotation.choices import CHOICE_CODES, CHOICES
from annotation.dawid_skene import DsStop, dawid_skene_fit

CHOICE_A, CHOICE_B, CHOICE_TIE, CHOICE_BOTH_BAD = (CHOICE_CODES[c] for c in CHOICES)
CHOICE_LABELS: tuple[str, ...] = CHOICES
N_CHOICES = len(CHOICE_LABELS)
_CHOICE_CODE = CHOICE_CODES


def _compress(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique codes, inverse) like ``np.unique(return_inverse=True)``, without a sort.

    Item codes are dense (0..n_items-1), so a bincount and a lookup table replace the
    O(n log n) sort np.unique would do on a million rows.
    """
    if codes.size == 0:
        return codes.copy(), codes.copy()
    if codes.min() < 0 or codes.max() > 4 * codes.size + 1024:
        return np.unique(codes, return_inverse=True)
    present = np.bincount(codes) > 0
    lookup = np.cumsum(present) - 1
    return np.flatnonzero(present), lookup[codes]


# --------------------------------------------------------------------------------------------
# The frame
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgmentFrame:
    """Current judgments of one campaign, one row each, in chronological order.

    All arrays have the same length. Codes: ``choice`` 0=A, 1=B, 2=tie, 3=both_bad in canonical
    (not screen) order; ``strength`` 1..3 for A/B and 0 for tie/both_bad. Float columns use nan
    for "does not apply": ``agree_diff`` (agreement-with-the-user's-belief feature of A minus B)
    outside sycophancy probes, ``gold_ok`` (1/0, tolerance already applied) outside gold items,
    ``consistent`` (1/0 against the annotator's own earlier answers) outside swapped re-shows and
    transitivity closers. ``len_diff`` is len(A) - len(B) in characters. ``gold_label`` is the
    choice code of the item's gold answer (``Comparison.gold_choice``) on calibration rows that
    have one, -1 elsewhere; it is optional (default all -1, i.e. no gold anchor).

    Arrays are coerced to their dtypes on construction; a length mismatch raises ValueError.
    """

    annotator: np.ndarray
    item: np.ndarray
    choice: np.ndarray
    strength: np.ndarray
    a_on_left: np.ndarray
    seconds: np.ndarray
    len_diff: np.ndarray
    agree_diff: np.ndarray
    gold_ok: np.ndarray
    consistent: np.ndarray
    is_reshow: np.ndarray
    is_calibration: np.ndarray
    gold_label: np.ndarray | None = None

    _DTYPES = {
        "annotator": np.int64, "item": np.int64, "choice": np.int64, "strength": np.int64,
        "a_on_left": bool, "seconds": np.float64, "len_diff": np.float64,
        "agree_diff": np.float64, "gold_ok": np.float64, "consistent": np.float64,
        "is_reshow": bool, "is_calibration": bool, "gold_label": np.int64,
    }

    def __post_init__(self) -> None:
        if self.gold_label is None:  # optional: frames built before gold anchoring omit it
            object.__setattr__(self, "gold_label",
                               np.full(np.asarray(self.annotator).size, -1, np.int64))
        n = None
        for name, dtype in self._DTYPES.items():
            arr = np.ascontiguousarray(getattr(self, name), dtype=dtype).reshape(-1)
            object.__setattr__(self, name, arr)
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise ValueError(f"column {name!r} has {arr.shape[0]} rows, expected {n}")
        if n and (self.choice.min() < 0 or self.choice.max() >= N_CHOICES):
            raise ValueError("choice codes must be 0..3 (A, B, tie, both_bad)")
        if n and (self.gold_label.min() < -1 or self.gold_label.max() >= N_CHOICES):
            raise ValueError("gold labels must be -1 (none) or a choice code 0..3")

    def __len__(self) -> int:
        return int(self.annotator.shape[0])

    def subset(self, mask: np.ndarray) -> JudgmentFrame:
        """Rows where ``mask`` is true (a boolean array or integer indices), order kept."""
        return JudgmentFrame(**{name: getattr(self, name)[mask] for name in self._DTYPES})


@dataclass(frozen=True)
class IndexedFrame:
    """A frame plus the original ids behind its integer codes (position = code)."""

    frame: JudgmentFrame
    annotator_ids: list[Hashable]
    item_ids: list[Hashable]

    @property
    def n_annotators(self) -> int:
        return len(self.annotator_ids)


def _opt_float(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value)


def frame_from_records(records: Iterable[Mapping[str, Any]]) -> IndexedFrame:
    """Build a frame from judgment records (dicts), in the order given (chronological).

    Each record has ``annotator`` and ``item`` (any hashable ids; integer codes are assigned in
    order of first appearance), ``choice`` ("A"/"B"/"tie"/"both_bad" or its code), ``strength``
    (1..3 or None), ``a_on_left``, ``seconds``, ``len_diff``; optional ``agree_diff``,
    ``gold_ok``, ``consistent`` (None, bool or float; None -> nan), ``is_reshow``,
    ``is_calibration`` (default False), ``gold_label`` (a choice or its code; None -> -1).
    A/B choices with no strength get strength 1 (the weakest preference), tie and both-bad
    always get 0. Raises ValueError on an unknown choice.
    """
    annotator_code: dict[Hashable, int] = {}
    item_code: dict[Hashable, int] = {}
    cols: dict[str, list[Any]] = {name: [] for name in JudgmentFrame._DTYPES}
    for rec in records:
        choice = rec["choice"]
        if isinstance(choice, str):
            if choice not in _CHOICE_CODE:
                raise ValueError(f"unknown choice {choice!r}")
            choice = _CHOICE_CODE[choice]
        choice = int(choice)
        strength = rec.get("strength")
        strength = 0 if choice >= CHOICE_TIE else max(int(strength or 1), 1)
        cols["annotator"].append(annotator_code.setdefault(rec["annotator"], len(annotator_code)))
        cols["item"].append(item_code.setdefault(rec["item"], len(item_code)))
        cols["choice"].append(choice)
        cols["strength"].append(strength)
        cols["a_on_left"].append(bool(rec["a_on_left"]))
        cols["seconds"].append(_opt_float(rec.get("seconds")))
        cols["len_diff"].append(_opt_float(rec.get("len_diff", 0.0)))
        cols["agree_diff"].append(_opt_float(rec.get("agree_diff")))
        cols["gold_ok"].append(_opt_float(rec.get("gold_ok")))
        cols["consistent"].append(_opt_float(rec.get("consistent")))
        cols["is_reshow"].append(bool(rec.get("is_reshow", False)))
        cols["is_calibration"].append(bool(rec.get("is_calibration", False)))
        gold = rec.get("gold_label")
        if isinstance(gold, str):
            if gold not in _CHOICE_CODE:
                raise ValueError(f"unknown gold label {gold!r}")
            gold = _CHOICE_CODE[gold]
        cols["gold_label"].append(-1 if gold is None else int(gold))
    frame = JudgmentFrame(**{name: np.asarray(values) for name, values in cols.items()})
    return IndexedFrame(frame=frame, annotator_ids=list(annotator_code),
                        item_ids=list(item_code))


# --------------------------------------------------------------------------------------------
# Wilson interval and the cheap running tally for the submit path
# --------------------------------------------------------------------------------------------


def wilson_interval(successes: float, n: float, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; Agresti & Coull 1998).

    Returns (nan, nan) when n == 0. Unlike the Wald interval it stays inside [0, 1] and keeps
    close to nominal coverage at the small gold counts an annotator has early on.
    """
    lo, hi = wilson_interval_array(np.asarray([successes], float), np.asarray([n], float), z)
    return float(lo[0]), float(hi[0])


def wilson_interval_array(
    successes: np.ndarray, n: np.ndarray, z: float = 1.96
) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised :func:`wilson_interval`; nan where n == 0."""
    successes = np.asarray(successes, float)
    n = np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = successes / n
        z2 = z * z
        denom = 1.0 + z2 / n
        center = (p + z2 / (2 * n)) / denom
        half = z * np.sqrt(np.maximum(p * (1 - p) / n + z2 / (4 * n * n), 0.0)) / denom
    lo = np.where(n > 0, np.clip(center - half, 0.0, 1.0), np.nan)
    hi = np.where(n > 0, np.clip(center + half, 0.0, 1.0), np.nan)
    return lo, hi


@dataclass(frozen=True)
class GoldTally:
    """Running gold count of one annotator: the O(1) update the submit path does.

    ``tally = tally.add(ok)`` after each scored calibration judgment; ``interval()`` is the Wilson
    interval of the accuracy so far. Persist ``successes`` and ``n`` on the quality row.
    """

    successes: int = 0
    n: int = 0

    def add(self, ok: bool) -> GoldTally:
        return GoldTally(successes=self.successes + int(bool(ok)), n=self.n + 1)

    @property
    def accuracy(self) -> float | None:
        return self.successes / self.n if self.n else None

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        # Closed form inlined (no numpy) because this runs on every submit.
        if self.n == 0:
            return math.nan, math.nan
        n, p, z2 = self.n, self.successes / self.n, z * z
        denom = 1.0 + z2 / n
        center = (p + z2 / (2 * n)) / denom
        half = z * math.sqrt(max(p * (1 - p) / n + z2 / (4 * n * n), 0.0)) / denom
        return max(center - half, 0.0), min(center + half, 1.0)


# --------------------------------------------------------------------------------------------
# Dawid-Skene
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DawidSkeneFit:
    """Result of Dawid-Skene EM (Dawid & Skene 1979) on a set of rows.

    ``items``: the item codes fitted (sorted). ``labels``: the choice codes that occur (sorted);
    columns of ``probas`` and the last two axes of ``errors`` follow it. ``probas[j, k]`` is the
    posterior P(true label of items[j] = labels[k]) (for an anchored item: 1 at its gold
    label); ``priors[k]`` the class prior of the unanchored items; ``errors[w, o, t]`` =
    P(annotator w answers labels[o] | true labels[t]) (zero where w never answered labels[o]
    unless a pool prior is on, as in crowd-kit); ``n_iter`` the EM iterations run (SQUAREM
    iterations when accelerated, ``em_steps`` the EM steps they took); ``converged`` whether
    the stopping rule was met (False: stopped at the iteration cap, or, under crowd-kit's rule,
    because its bound fell); ``max_change`` the stopping criterion's last value
    (:mod:`annotation.dawid_skene`); ``anchored`` marks the items whose posterior was clamped
    to their gold label (None: no anchor).
    """

    items: np.ndarray
    labels: np.ndarray
    probas: np.ndarray
    priors: np.ndarray
    errors: np.ndarray
    n_iter: int
    converged: bool = True
    anchored: np.ndarray | None = None
    max_change: float = math.nan
    em_steps: int | None = None

    @property
    def n_anchored(self) -> int:
        return 0 if self.anchored is None else int(self.anchored.sum())

    def diagnostics(self) -> dict[str, Any]:
        """What ``CampaignQuality.fits`` stores for this fit."""
        out: dict[str, Any] = {"iterations": int(self.n_iter),
                               "converged": bool(self.converged),
                               "anchored_items": self.n_anchored}
        if self.em_steps is not None:
            out["em_steps"] = int(self.em_steps)
        if math.isfinite(self.max_change):
            out["max_change"] = float(self.max_change)
        return out

    def winners(self) -> np.ndarray:
        """Most probable choice code per fitted item (first label on exact ties, like pandas)."""
        return self.labels[np.argmax(self.probas, axis=1)]

    def competence(self) -> np.ndarray:
        """P(correct label) per annotator: sum_k prior_k * errors[w, k, k].

        The diagonal of each confusion matrix weighted by the class prior, i.e. the chance that
        the annotator labels a random campaign item correctly. Annotators with no fitted rows
        get nan.
        """
        diag = np.diagonal(self.errors, axis1=1, axis2=2)  # (W, K)
        comp = diag @ self.priors
        seen = self.errors.sum(axis=(1, 2)) > 0
        return np.where(seen, comp, np.nan)


def dawid_skene(
    annotator: np.ndarray, item: np.ndarray, label: np.ndarray, *, n_annotators: int,
    gold: np.ndarray | None = None, n_iter: int = 100, tol: float = 1e-5,
    stop: DsStop = "params", pool_prior: float = 0.0, gold_init: bool = True,
    truth: Sequence[int] | None = None, accelerate: bool = True, smoothing: float = 0.0,
) -> DawidSkeneFit:
    """Fit Dawid-Skene on choice codes by :func:`annotation.dawid_skene.dawid_skene_fit`.

    This wraps the project's one EM (SQUAREM-accelerated, gold-anchored, stopped by a
    count-weighted parameter criterion: see that module) for frames: item and label codes are
    compressed to the ones present, and the result is read back by code.

    * ``gold`` (per row; the gold choice code, -1 for none) anchors the fit: an item with a gold
      label keeps the posterior 1 at that label in every E-step, so the annotators' answers on
      it count as answers to a known truth, and no consensus can outvote it. The class prior is
      estimated on the unanchored items only (gold items are drawn to a recipe, not from the
      campaign's mix).
    * ``pool_prior`` > 0 puts a Dirichlet prior on each column errors[w, :, t] centred on the
      pool's confusion column with that many pseudo-answers (plain EM then). 0 (the default) is
      maximum likelihood. Measured on simulated world campaigns
      (``evaluation/quality_recovery.py``, 4 pools x 4 seeds) a prior of 1 pseudo-answer did
      not help: mean rank correlation with true accuracy 0.58 against 0.60 without it on the
      issue-7 pool at overlap 3, 0.25 against 0.30 at overlap 7, equal on the others; so the
      recompute leaves it off.
    * ``gold_init`` (with ``gold``): the first confusion matrices come from the gold items alone
      (shrunk toward the pool by one pseudo-answer) instead of from majority-vote shares, which
      a shared bias would have written.
    * ``truth``: the choice codes that may be an item's true label (None: every label seen).
      The quality fit allows A and B (plus any gold label): "tie" and "both bad" stay answers
      an annotator can give, but a latent tie class fitted from a few per cent of tie answers
      absorbed 11% of the prior on a world campaign and blurred every confusion matrix.
    * ``stop="params"`` (default): the module's parameter criterion at ``tol``; ``converged``
      is False if ``n_iter`` (SQUAREM iterations, about 3 EM steps each) came first.
      ``stop="crowdkit"``: plain EM stopped by crowd-kit's rule (its per-row bound improves by
      less than ``tol``), kept so that the tests check this EM against
      ``crowdkit.aggregation.DawidSkene`` step for step; ``converged`` is then False when the
      bound *fell* (crowd-kit stops there too, silently) or when ``n_iter`` was reached.
    * ``accelerate=False`` runs plain EM (one EM step per iteration).
    * ``smoothing``: pseudo-answers added to each answer an annotator gave (a Dirichlet prior,
      MAP); 0 here is crowd-kit's maximum likelihood; :func:`fit_dawid_skene` uses
      :data:`DS_SMOOTHING`.
    """
    annotator = np.asarray(annotator, np.int64)
    label = np.asarray(label, np.int64)
    if annotator.size == 0:
        empty = np.zeros((0,), np.int64)
        return DawidSkeneFit(items=empty, labels=empty, probas=np.zeros((0, 0)),
                             priors=np.zeros((0,)), errors=np.zeros((n_annotators, 0, 0)),
                             n_iter=0, converged=True,
                             anchored=None if gold is None else np.zeros(0, bool))
    items, t = _compress(np.asarray(item, np.int64))
    n_items, n_rows = items.size, annotator.size
    gold_mask = None
    if gold is not None:
        gold = np.asarray(gold, np.int64)
        # The label set must hold every gold label, answered or not.
        labels, lab_all = _compress(np.concatenate([label, gold[gold >= 0]]))
        lab = lab_all[:n_rows]
        gold_mask = np.ones((n_items, labels.size), bool)
        has = gold >= 0
        gold_mask[t[has]] = False
        gold_mask[t[has], lab_all[n_rows:]] = True
    else:
        labels, lab = _compress(label)
    allowed = None if truth is None else np.isin(labels, np.asarray(truth, np.int64))
    em = dawid_skene_fit(worker=annotator, item=t, label=lab, n_workers=n_annotators,
                         n_items=n_items, n_classes=labels.size, truth=allowed, gold=gold_mask,
                         gold_init=gold_init, pool_prior=pool_prior, smoothing=smoothing,
                         n_iter=n_iter, tol=tol, accelerate=accelerate, stop=stop)
    return DawidSkeneFit(items=items, labels=labels, probas=em.posteriors, priors=em.priors,
                         errors=em.errors, n_iter=em.iterations, converged=em.converged,
                         anchored=None if gold is None else em.anchored,
                         max_change=em.max_change, em_steps=em.em_steps)


def dawid_skene_crowdkit(
    annotator: np.ndarray, item: np.ndarray, label: np.ndarray, *, n_annotators: int,
    n_iter: int = 100, tol: float = 1e-5,
) -> DawidSkeneFit:
    """Fit crowd-kit's ``DawidSkene`` and return it in :class:`DawidSkeneFit` form.

    Integer ids go in (crowd-kit is about 3x slower on strings); ``probas_`` and ``errors_``
    columns are read by label, never by position.
    """
    import pandas as pd
    from crowdkit.aggregation import DawidSkene

    annotator = np.asarray(annotator, np.int64)
    if annotator.size == 0:
        return dawid_skene(annotator, item, label, n_annotators=n_annotators)
    data = pd.DataFrame({"task": np.asarray(item, np.int64), "worker": annotator,
                         "label": np.asarray(label, np.int64)})
    model = DawidSkene(n_iter=n_iter, tol=tol).fit(data)
    labels = np.unique(data["label"].to_numpy())
    probas_df = model.probas_.sort_index()
    items = probas_df.index.to_numpy(np.int64)
    probas = probas_df.reindex(columns=labels).fillna(0.0).to_numpy(float)
    priors = model.priors_.reindex(labels).fillna(0.0).to_numpy(float)
    err_df = model.errors_.reindex(columns=labels).fillna(0.0)
    errors = np.zeros((n_annotators, labels.size, labels.size))
    workers = err_df.index.get_level_values("worker").to_numpy(np.int64)
    obs = np.searchsorted(labels, err_df.index.get_level_values("label").to_numpy(np.int64))
    errors[workers, obs, :] = err_df.to_numpy(float)
    history = list(model.loss_history_)
    # Its rule stops when the bound improves by less than tol, a fall included: only a small
    # non-negative step before the cap is convergence.
    converged = len(history) < n_iter and (len(history) < 2 or history[-1] >= history[-2])
    return DawidSkeneFit(items=items, labels=labels, probas=probas, priors=priors,
                         errors=errors, n_iter=len(history), converged=converged)


DsBackend = Literal["numpy", "crowdkit"]


DsMethod = Literal["dawid_skene", "dawid_skene_plain"]
# True labels of a preference item in the quality fit: one response is better (gold may add
# "tie" where it accepts one). See :func:`dawid_skene`'s ``truth``.
PREFERENCE_TRUTH = (CHOICE_A, CHOICE_B)
# Pseudo-answers per observed (annotator, answer) cell in the quality fits (annotation.
# dawid_skene, "Smoothing"). At maximum likelihood the fit creeps sublinearly toward cells at 0
# and did not converge at 1M judgments; with 1 it converges in 15 SQUAREM iterations there.
# Measured on evaluation/quality_recovery.py (4 pools x 4 seeds, converged fits both): mean
# |epsilon error| per pool 0.033 0.030 0.021 0.011 against 0.064 0.039 0.048 0.014 at maximum
# likelihood (max 0.045 against 0.077); Spearman with true accuracy 0.56 0.17 0.83 0.75
# against 0.61 0.25 0.75 0.80 (mean 0.58 against 0.60: within the seeds' spread).
DS_SMOOTHING = 1.0


def fit_dawid_skene(
    frame: JudgmentFrame, n_annotators: int, *, method: DsMethod = "dawid_skene",
    backend: DsBackend = "numpy", pool_prior: float = 0.0, smoothing: float = DS_SMOOTHING,
    **em: Any,
) -> DawidSkeneFit:
    """Dawid-Skene on a frame, all four labels; ``method`` names the fit (``Snapshot.Method``).

    * ``"dawid_skene"`` (gold-anchored, the default): the non-calibration rows plus the
      calibration rows whose item has a gold label (``frame.gold_label``), those items clamped
      to their gold (:func:`dawid_skene` with ``gold``), started from gold. Swapped re-shows
      and transitivity closers stay out: they repeat or chain the annotator's own answers,
      and self-consistency measures them.
    * ``"dawid_skene_plain"``: the non-calibration rows only, no anchor (the fit before issue
      7, for comparison). ``backend="crowdkit"`` runs crowd-kit itself (plain only).

    ``pool_prior``, ``smoothing`` (default :data:`DS_SMOOTHING`) and ``em`` (``n_iter``,
    ``tol``, ``stop``, ``truth``, ``accelerate``) go to :func:`dawid_skene`. The quality
    recompute passes ``truth=PREFERENCE_TRUTH``.
    """
    if method not in ("dawid_skene", "dawid_skene_plain"):
        raise ValueError(f"unknown Dawid-Skene method {method!r}")
    if method == "dawid_skene_plain":
        rows = ~frame.is_calibration
        if backend == "crowdkit":
            return dawid_skene_crowdkit(frame.annotator[rows], frame.item[rows],
                                        frame.choice[rows], n_annotators=n_annotators, **em)
        return dawid_skene(frame.annotator[rows], frame.item[rows], frame.choice[rows],
                           n_annotators=n_annotators, pool_prior=pool_prior,
                           smoothing=smoothing, **em)
    if backend != "numpy":
        raise ValueError("the gold-anchored fit has the numpy backend only")
    rows = ~frame.is_calibration | (frame.gold_label >= 0)
    gold = frame.gold_label[rows]
    return dawid_skene(frame.annotator[rows], frame.item[rows], frame.choice[rows],
                       n_annotators=n_annotators, gold=gold, pool_prior=pool_prior,
                       smoothing=smoothing, **em)


def _quality_fit(frame: JudgmentFrame, n_annotators: int, backend: DsBackend) -> DawidSkeneFit:
    """The recompute's fit: gold-anchored with preference truths; crowd-kit's plain fit when
    ``backend="crowdkit"`` (the benchmark's reference)."""
    if backend == "crowdkit":
        return fit_dawid_skene(frame, n_annotators, method="dawid_skene_plain",
                               backend="crowdkit")
    return fit_dawid_skene(frame, n_annotators, truth=PREFERENCE_TRUTH)


# --------------------------------------------------------------------------------------------
# Per-annotator statistics
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnnotatorStats:
    """Quality of one annotator; field names match ``AnnotatorQuality``. None = not estimable."""

    annotator: int
    n_judgments: int
    n_gold: int
    gold_accuracy: float | None
    gold_ci_low: float | None
    gold_ci_high: float | None
    n_reshows: int
    self_consistency: float | None
    n_triples: int
    transitivity: float | None
    competence: float | None
    peer_agreement: float | None
    position_bias: float | None
    length_bias: float | None
    sycophancy_bias: float | None
    median_seconds: float | None
    noise: float | None


def _group_mean(
    groups: np.ndarray, values: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray]:
    """(count, mean) of ``values`` per group; mean is nan where the count is 0."""
    counts = np.bincount(groups, minlength=n_groups)
    sums = np.bincount(groups, weights=values, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts, np.where(counts > 0, sums / counts, np.nan)


def _group_median(groups: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of ``values`` per group; nan for empty groups (pandas' cython groupby)."""
    import pandas as pd

    med = pd.Series(values).groupby(groups).median()
    return med.reindex(np.arange(n_groups)).to_numpy(float)


# The fewest items an annotator must share with at least one other annotator before their
# Dawid-Skene competence and peer agreement are reported (below it: None, "not enough data").
# On an item nobody else answered, the fit's posterior follows the annotator's own answer, so
# such items confirm themselves: a rater pressing random keys on items of their own read
# "competence 1.00". Gold-anchored items do not count toward the minimum for competence: there
# the anchor already measures the annotator, and that measure is gold accuracy, shown with its
# interval beside it; competence adds something only where peers answered too. Five shared
# items give a coarse value (steps of 0.2), which the table marks as such by showing n.
MIN_PEER_ITEMS = 5


def shared_item_counts(frame: JudgmentFrame, n_annotators: int) -> tuple[np.ndarray, np.ndarray]:
    """Per annotator: (rows on items another annotator also answered, the same over the rows
    Dawid-Skene competence rests on beyond gold: regular, non-calibration rows).

    Each frame row is one annotator's current judgment, so an item with more than one row has
    more than one annotator (a re-show is an item of its own).
    """
    if len(frame) == 0:
        zeros = np.zeros(n_annotators, np.int64)
        return zeros, zeros.copy()
    _, t = _compress(frame.item)
    shared = (np.bincount(t) > 1)[t]
    peers = np.bincount(frame.annotator[shared], minlength=n_annotators)
    regular = shared & ~frame.is_calibration
    return peers, np.bincount(frame.annotator[regular], minlength=n_annotators)


def peer_agreement_array(frame: JudgmentFrame, n_annotators: int) -> np.ndarray:
    """Per annotator, the mean agreement of each answer with the other annotators' plurality.

    For every row the other answers on the same item (leave-one-out) are counted per choice; the
    row scores 1 if its choice is the plurality of the others, 1/m if it is one of m tied
    pluralities, 0 otherwise. Rows on items nobody else answered (re-shows, overlap 1) are
    skipped; nan for an annotator with no such row. The score depends only on the item's
    counts and the row's choice, so it is tabulated per (item, choice) and then looked up.
    """
    if len(frame) == 0:
        return np.full(n_annotators, np.nan)
    items, t = _compress(frame.item)
    counts = np.bincount(t * N_CHOICES + frame.choice, minlength=items.size * N_CHOICES)
    counts = counts.reshape(items.size, N_CHOICES).astype(np.int32)
    others = counts[:, None, :] - np.eye(N_CHOICES, dtype=np.int32)[None]  # [item, mine, c]
    is_top = others == others.max(axis=2, keepdims=True)
    mine_top = np.diagonal(is_top, axis1=1, axis2=2)  # [item, mine]
    table = np.where(mine_top, 1.0 / is_top.sum(axis=2), 0.0)
    score = table[t, frame.choice]
    used = counts.sum(axis=1)[t] > 1
    _, mean = _group_mean(frame.annotator[used], score[used], n_annotators)
    return mean


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|


def _positions(sorted_codes: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Index of each code in ``sorted_codes`` (clipped like searchsorted; the caller checks
    membership). Item codes are dense, so a lookup table replaces a binary search per row."""
    if codes.size and codes.min() >= 0 and codes.max() <= 4 * codes.size + 1024 \
            and sorted_codes.size and sorted_codes[-1] <= 4 * codes.size + 1024:
        size = int(max(codes.max(), sorted_codes[-1])) + 1
        table = np.searchsorted(sorted_codes, np.arange(size))
        return np.clip(table[codes], 0, sorted_codes.size - 1)
    return np.clip(np.searchsorted(sorted_codes, codes), 0, sorted_codes.size - 1)


def consensus_better(frame: JudgmentFrame, ds: DawidSkeneFit) -> np.ndarray:
    """Per row, 2 * P(response A is the better one | everything but this answer) - 1, in [-1, 1].

    On an anchored (gold) item that is its gold: +1 or -1. Elsewhere it is the leave-one-out
    posterior of the fit: the class prior times the *other* answers' confusion-matrix
    likelihoods, renormalised over A and B. Leaving the row's own answer out matters: with its
    own answer in, an item only this annotator answered would "agree" with it by
    construction, and every bias would be absorbed by the quality term. 0 (no information)
    for rows whose item is not in the fit (re-shows, transitivity closers).
    """
    out = np.zeros(len(frame))
    if ds.items.size == 0 or len(frame) == 0:
        return out
    col = {int(code): k for k, code in enumerate(ds.labels)}
    if CHOICE_A not in col or CHOICE_B not in col:
        return out
    pos = _positions(ds.items, frame.item)
    in_fit = ds.items[pos] == frame.item
    answered = np.searchsorted(ds.labels, np.arange(N_CHOICES))[frame.choice]  # 4-entry table
    known = in_fit & (answered < ds.labels.size)
    known[known] &= ds.labels[answered[known]] == frame.choice[known]
    rows = np.flatnonzero(known)
    item, label, worker = pos[rows], answered[rows], frame.annotator[rows]
    ka, kb = col[CHOICE_A], col[CHOICE_B]
    with np.errstate(divide="ignore"):
        log_err = np.log(np.maximum(ds.errors[worker, label][:, [ka, kb]], 1e-300))
        log_prior = np.log(np.maximum(ds.priors[[ka, kb]], 1e-300))
    total = np.stack([np.bincount(item, weights=log_err[:, j], minlength=ds.items.size)
                      for j in range(2)], axis=1)
    loo = total[item] - log_err + log_prior
    out[rows] = np.tanh(0.5 * (loo[:, 0] - loo[:, 1]))  # = P(A) - P(B) over {A, B}
    if ds.anchored is not None:
        gold = ds.anchored[pos] & in_fit
        p = ds.probas[pos[gold]]
        out[gold] = np.sign(p[:, ka] - p[:, kb])
    return out


# Terms of the per-annotator bias model (:func:`bias_coefficients`), in column order.
BIAS_TERMS = ("intercept", "quality", "position", "length", "agreement")


def bias_coefficients(
    frame: JudgmentFrame, n_annotators: int, *, better: np.ndarray | None = None,
    l2: float = 1e-3, max_iter: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Per annotator, the logistic model of its A/B choices, biases conditional on quality.

    Model on the annotator's rows that chose A or B::

        logit P(A) = c0 + c_q * q + c_pos * s + c_len * len_diff / 100 + c_agree * g

    q = ``better`` (2 P(A is the better response) - 1: gold where known, else the
    gold-anchored consensus, :func:`consensus_better`; 0 when None), s = +1 when A was shown on
    the left and -1 when on the right, g = ``agree_diff`` (+1 / -1 when only A / only B
    agrees with the user's wrong belief, 0 otherwise). The quality term takes out of each bias
    what is explained by which response is better: in the arithmetic world correct replies are
    shorter, so without it an accurate annotator with no length preference shows a negative
    length coefficient (issue 7 saw -0.43 to -0.66). The side term keeps position bias out of
    the others (logistic regression is non-collapsible).

    All annotators are fitted at once by Newton-Raphson on grouped sums (np.bincount), with an
    L2 penalty ``l2`` (on the likelihood scale) on every slope so that a separable or tiny
    sample gives a finite answer; scipy's per-problem optimisers would need a Python loop over
    10,000 annotators. Returns (coefficients (n_annotators, 5) in :data:`BIAS_TERMS` order,
    number of A/B rows per annotator); an annotator without A/B rows gets zeros.
    """
    ab = (frame.choice <= CHOICE_B) & np.isfinite(frame.len_diff)
    w = frame.annotator[ab]
    y = (frame.choice[ab] == CHOICE_A).astype(float)
    q = np.zeros(w.size) if better is None else np.asarray(better, float)[ab]
    x = np.stack([np.ones(w.size), q, np.where(frame.a_on_left[ab], 1.0, -1.0),
                  frame.len_diff[ab] / 100.0, np.nan_to_num(frame.agree_diff[ab])])
    n_rows = np.bincount(w, minlength=n_annotators)
    n_terms = len(BIAS_TERMS)
    beta = np.zeros((n_terms, n_annotators))
    pen = np.array([0.0] + [l2] * (n_terms - 1))
    active = n_rows > 0
    for _ in range(max_iter):
        # Annotators drop out once converged, and their rows with them, so the few slow
        # (near-separable) fits do not cost full passes over every row.
        rows = active[w]
        if not rows.all():
            w, y, x = w[rows], y[rows], x[:, rows]
        p = _sigmoid(np.einsum("kr,kr->r", beta[:, w], x))
        r = y - p
        v = p * (1 - p)

        def wsum(weights: np.ndarray, w: np.ndarray = w) -> np.ndarray:
            return np.bincount(w, weights=weights, minlength=n_annotators)

        grad = np.stack([wsum(r * x[i]) for i in range(n_terms)]) - pen[:, None] * beta
        hess = np.empty((n_annotators, n_terms, n_terms))
        for i in range(n_terms):
            vx = v * x[i]
            for j in range(i, n_terms):
                hess[:, i, j] = hess[:, j, i] = wsum(vx * x[j])
        hess += np.diag(pen)
        # An intercept-only row block is singular where a column is all zero (no length
        # difference, no probe): the penalty alone keeps those slopes at 0. Finished or unused
        # annotators get the identity, so the batched solve stays well posed.
        hess[:, 0, 0] += 1e-12
        hess[~active] = np.eye(n_terms)
        step = np.linalg.solve(hess, grad.T[..., None])[..., 0].T
        step[:, ~active] = 0.0
        beta += step
        # Newton converges quadratically: a last step of 1e-4 leaves an error near 1e-8
        # (measured at 1M judgments: coefficients within 1.1e-8 of stopping at 1e-7, one
        # full pass over the rows fewer).
        active &= np.abs(step).max(axis=0) > 1e-4
        if not active.any():
            break
    return beta.T.copy(), n_rows


def length_bias_array(
    frame: JudgmentFrame, n_annotators: int, *, better: np.ndarray | None = None,
    min_rows: int = 20, l2: float = 1e-3, max_iter: int = 50,
) -> np.ndarray:
    """Per annotator, c_len of :func:`bias_coefficients`: the logistic coefficient of choosing
    A on len(A) - len(B) per 100 characters, with ``better`` (which response is better), the
    screen side and the agreement feature held fixed.

    It equals the simulated annotator's b/tau (DESIGN section 5) whatever the pairs' quality
    difference when ``better`` is the truth, and is attenuated towards 0 when ``better`` is
    None and the pairs also differ in quality. nan for annotators with fewer than
    ``min_rows`` A/B rows with a non-zero length difference, or whose answers there are all
    the same.
    """
    coef, _ = bias_coefficients(frame, n_annotators, better=better, l2=l2, max_iter=max_iter)
    return _length_bias(frame, n_annotators, coef, min_rows)


def _length_bias(frame: JudgmentFrame, n_annotators: int, coef: np.ndarray, min_rows: int
                 ) -> np.ndarray:
    """c_len from fitted :func:`bias_coefficients`, nan where :func:`length_bias_array` says."""
    ab = (frame.choice <= CHOICE_B) & np.isfinite(frame.len_diff)
    informative = ab & (np.nan_to_num(frame.len_diff) != 0)
    w = frame.annotator[informative]
    n_inf = np.bincount(w, minlength=n_annotators)
    n_a_inf = np.bincount(w, weights=(frame.choice[informative] == CHOICE_A),
                          minlength=n_annotators)
    ok = (n_inf >= min_rows) & (n_a_inf > 0) & (n_a_inf < n_inf)
    return np.where(ok, coef[:, BIAS_TERMS.index("length")], np.nan)


def _none(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _nones(values: np.ndarray) -> list[float | None]:
    """Floats with nan as None, in one pass (``_none`` per cell is slow at 10,000 annotators)."""
    return [None if v != v else v for v in np.asarray(values, float).tolist()]


def annotator_stats(
    frame: JudgmentFrame, n_annotators: int, *, ds: DawidSkeneFit | None = None,
    ds_backend: DsBackend = "numpy", min_length_rows: int = 20, z: float = 1.96,
    min_peer_items: int = MIN_PEER_ITEMS,
) -> list[AnnotatorStats]:
    """Quality of every annotator 0..n_annotators-1 (one entry each, also for the idle ones).

    Definitions (DESIGN section 4):

    * gold: accuracy over rows with ``gold_ok`` set, with a Wilson interval at ``z``.
    * self_consistency over swapped re-shows; transitivity over the other ``consistent`` rows
      (transitivity closers).
    * competence: P(correct) from the gold-anchored Dawid-Skene fit
      (:meth:`DawidSkeneFit.competence`; :func:`fit_dawid_skene`, method "dawid_skene"), i.e.
      the prior-weighted chance of answering an item's true label, A or B, where gold fixes
      the truth of calibration items. ``ds`` reuses a fit (of either method); otherwise the
      anchored one is made (``ds_backend="crowdkit"`` makes the plain one with crowd-kit).
      None when fewer than ``min_peer_items`` of the annotator's regular (non-calibration)
      rows are on items another annotator answered too (:data:`MIN_PEER_ITEMS` says why).
    * peer_agreement: :func:`peer_agreement_array` (leave-one-out plurality); None with fewer
      than ``min_peer_items`` rows on items another annotator answered (any kind of item).
    * Biases, all from one logistic model per annotator (:func:`bias_coefficients`) that holds
      fixed which response is better (``q``: gold on calibration items, else the anchored
      posterior, :func:`consensus_better`), the screen side, the length difference and the
      agreement feature, so each is "all else equal":

      - position_bias: sigmoid(c_pos) - 0.5, i.e. P(choose the left response) - 0.5 for two
        equally good, equally long responses (a marginal P(left) - 0.5 would also move with
        which side the better responses happened to be shown on);
      - length_bias: c_len, the change in the log-odds of choosing a response per 100 extra
        characters, at equal quality (None with fewer than ``min_length_rows`` rows with a
        length difference); DESIGN section 5's b/tau for a simulated annotator;
      - sycophancy_bias: sigmoid(c_agree) - 0.5, i.e. P(choose the response agreeing with the
        user's wrong belief) - 0.5 at equal quality (None without a probe row). On probes the
        agreeing reply is usually the worse one, so the marginal share was mostly a quality
        signal.

      The model is fitted on all A/B rows, not on the gold rows alone (where the better side
      is known). Measured on ``evaluation/quality_recovery.py`` (4 pools x 4 seeds, length
      coefficient against the simulated b/tau): all rows, experts -0.85 (true 0), crowd +0.12
      (true +0.62, mean absolute error 0.51); gold rows only, experts -0.91 and crowd
      absolute error 1.83, with half the annotators under 10 gold rows. Gold pairs are built
      to a recipe (truncated, wrong number) whose worse side is also shorter, so length and
      quality are nearly collinear there: conditioning on gold alone is worse, not better.
    * noise: 1 - competence (the anchored fit, so gold and the work itself both count); 1 -
      gold accuracy for an annotator without a competence (no fitted rows, or too few shared
      items).
    """
    a = frame.annotator
    if len(frame) and (a.min() < 0 or a.max() >= n_annotators):
        raise ValueError("annotator codes must be in 0..n_annotators-1")
    if ds is None:
        ds = _quality_fit(frame, n_annotators, ds_backend)
    n_judgments = np.bincount(a, minlength=n_annotators)

    gold = np.isfinite(frame.gold_ok)
    n_gold, gold_acc = _group_mean(a[gold], frame.gold_ok[gold], n_annotators)
    gold_lo, gold_hi = wilson_interval_array(gold_acc * n_gold, n_gold, z)

    cons = np.isfinite(frame.consistent)
    reshow = cons & frame.is_reshow
    closer = cons & ~frame.is_reshow
    n_reshows, self_cons = _group_mean(a[reshow], frame.consistent[reshow], n_annotators)
    n_triples, trans = _group_mean(a[closer], frame.consistent[closer], n_annotators)

    ab = frame.choice <= CHOICE_B
    probe = ab & np.isfinite(frame.agree_diff) & (np.nan_to_num(frame.agree_diff) != 0)
    n_probes = np.bincount(a[probe], minlength=n_annotators)

    secs = np.isfinite(frame.seconds)
    med_secs = _group_median(a[secs], frame.seconds[secs], n_annotators)

    competence = ds.competence() if ds.errors.shape[0] else np.full(n_annotators, np.nan)
    peer = peer_agreement_array(frame, n_annotators)
    n_peer_rows, n_peer_regular = shared_item_counts(frame, n_annotators)
    competence = np.where(n_peer_regular >= min_peer_items, competence, np.nan)
    peer = np.where(n_peer_rows >= min_peer_items, peer, np.nan)
    better = consensus_better(frame, ds)
    coef, n_ab = bias_coefficients(frame, n_annotators, better=better)
    length = _length_bias(frame, n_annotators, coef, min_length_rows)  # one fit for all biases
    position = np.where(n_ab > 0, _sigmoid(coef[:, BIAS_TERMS.index("position")]) - 0.5,
                        np.nan)
    sycophancy = np.where(n_probes > 0,
                          _sigmoid(coef[:, BIAS_TERMS.index("agreement")]) - 0.5, np.nan)
    noise = np.where(np.isfinite(competence), 1.0 - competence,
                     np.where(n_gold > 0, 1.0 - gold_acc, np.nan))

    # Columns in AnnotatorStats' field order, so each record is built positionally (building
    # 10,000 records through keyword dicts costs more than most of the statistics).
    columns = [
        np.arange(n_annotators), n_judgments, n_gold, gold_acc, gold_lo, gold_hi, n_reshows,
        self_cons, n_triples, trans, competence, peer, position, length, sycophancy,
        med_secs, noise,
    ]
    as_lists = [col.tolist() if col.dtype.kind in "iu" else _nones(col) for col in columns]
    return [AnnotatorStats(*row) for row in zip(*as_lists, strict=True)]


# --------------------------------------------------------------------------------------------
# Campaign statistics
# --------------------------------------------------------------------------------------------

# Ordinal scale for Krippendorff's ordinal alpha: signed preference strength, A positive.
ORDINAL_DOMAIN = np.arange(-3, 4)


def ordinal_values(frame: JudgmentFrame) -> np.ndarray:
    """Signed strength per row: A strong=+3 .. A slight=+1, tie=0, B slight=-1 .. B strong=-3.

    both_bad is nan (missing): it is not a point on the A-versus-B scale, and scoring it 0
    would treat "both are bad" as "equally good" (a tie) and inflate agreement between ties and
    both-bad answers. A/B rows with strength 0 count as slight.
    """
    strength = np.clip(frame.strength, 1, 3).astype(float)
    out = np.where(frame.choice == CHOICE_A, strength,
                   np.where(frame.choice == CHOICE_B, -strength, 0.0))
    return np.where(frame.choice == CHOICE_BOTH_BAD, np.nan, out)


def _value_counts(item: np.ndarray, codes: np.ndarray, n_values: int) -> np.ndarray:
    _, t = _compress(item)
    n_items = int(t.max()) + 1 if t.size else 0
    counts = np.bincount(t * n_values + codes, minlength=n_items * n_values)
    return counts.reshape(n_items, n_values)


def alpha_from_value_counts(counts: np.ndarray, level: str) -> float | None:
    """Krippendorff's alpha from a units x values count matrix (Krippendorff 2011, eqs. 1-3).

    Coincidences o_ck = sum_u (n_uc n_uk - [c = k] n_uc) / (m_u - 1) over units with m_u >= 2
    values, computed as one (V x units)(units x V) product; expected e_ck = n_c (n_k - [c = k]) /
    (n - 1); alpha = 1 - sum(o * d) / sum(e * d) with the nominal (c != k) or ordinal
    ((sum_{g=c..k} n_g - (n_c + n_k) / 2)^2) distance. Same formulas as the ``krippendorff``
    package (the tests compare the two), but the package's ``_coincidences`` materialises a
    units x V x V array: 2 s for 300,000 units, against milliseconds here. None when alpha is
    undefined (no pairable unit, or a single value in use).
    """
    if level not in ("nominal", "ordinal"):
        raise ValueError("level must be 'nominal' or 'ordinal'")
    counts = np.asarray(counts, float)
    m = counts.sum(axis=1)
    counts, m = counts[m >= 2], m[m >= 2]
    if counts.shape[0] == 0:
        return None
    weighted = counts / (m - 1)[:, None]
    o = weighted.T @ counts - np.diag(weighted.sum(axis=0))
    n_v = o.sum(axis=0)
    n = n_v.sum()
    e = (np.outer(n_v, n_v) - np.diag(n_v)) / (n - 1)
    n_values = n_v.size
    if level == "nominal":
        d = 1.0 - np.eye(n_values)
    else:
        lo, hi = np.minimum.outer(np.arange(n_values), np.arange(n_values)), \
            np.maximum.outer(np.arange(n_values), np.arange(n_values))
        cum = np.cumsum(n_v)
        between = cum[hi] - cum[lo] + n_v[lo]
        d = (between - (n_v[lo] + n_v[hi]) / 2.0) ** 2
    expected = float((e * d).sum())
    if expected <= 0:
        return None
    return 1.0 - float((o * d).sum()) / expected


def krippendorff_alphas(frame: JudgmentFrame) -> tuple[float | None, float | None]:
    """(nominal, ordinal) Krippendorff's alpha over the frame's rows.

    Units are items, coders annotators, values the choice codes (nominal) or
    :func:`ordinal_values` (ordinal). Each unit's value counts fully determine alpha, so it is
    computed from per-item counts (:func:`alpha_from_value_counts`), never from the dense
    annotators x items reliability matrix (10,000 x 300,000 at scale).
    """
    if len(frame) == 0:
        return None, None
    nominal = _value_counts(frame.item, frame.choice, N_CHOICES)
    ordv = ordinal_values(frame)
    keep = np.isfinite(ordv)
    ordinal = _value_counts(frame.item[keep], (ordv[keep] + 3).astype(np.int64),
                            ORDINAL_DOMAIN.size)
    return alpha_from_value_counts(nominal, "nominal"), alpha_from_value_counts(ordinal, "ordinal")


@dataclass(frozen=True)
class CampaignStats:
    """Quality of a campaign; field names match ``CampaignQuality``."""

    n_judgments: int
    alpha_nominal: float | None
    alpha_ordinal: float | None
    noise_epsilon: float | None
    majority_ds_disagreement: float | None
    position_bias: float | None
    label_mix: dict[str, float] = field(default_factory=dict)


def majority_winners(item: np.ndarray, choice: np.ndarray, items: np.ndarray) -> np.ndarray:
    """A-versus-B majority per item in ``items`` (sorted codes), as ``aggregation.majority_vote``.

    Returns CHOICE_A, CHOICE_B, or -1 where A and B votes are equal (ties and both-bad answers
    are judgments, not votes). Rows on items outside ``items`` are ignored.
    """
    if items.size == 0:
        return np.zeros(0, np.int64)
    size = int(max(items.max(), item.max(initial=0))) + 1
    lookup = np.full(size, -1)
    lookup[items] = np.arange(items.size)
    pos = lookup[item]
    votes = [np.bincount(pos[(pos >= 0) & (choice == code)], minlength=items.size)
             for code in (CHOICE_A, CHOICE_B)]
    return np.where(votes[0] > votes[1], CHOICE_A, np.where(votes[1] > votes[0], CHOICE_B, -1))


def campaign_stats(
    frame: JudgmentFrame, n_annotators: int, *, ds: DawidSkeneFit | None = None,
    annotators: list[AnnotatorStats] | None = None, ds_backend: DsBackend = "numpy",
) -> CampaignStats:
    """Campaign-level quality (DESIGN section 4).

    * alpha_nominal / alpha_ordinal: :func:`krippendorff_alphas` on non-calibration rows (the
      same rows Dawid-Skene sees; calibration items are built to be easy).
    * noise_epsilon: mean of the annotators' ``noise`` weighted by their judgment counts.
    * majority_ds_disagreement: share of fitted items with an A-versus-B majority winner whose
      Dawid-Skene most probable label differs (DS may also say tie or both-bad); items with no
      majority winner are left out of the denominator.
    * position_bias: P(chose left | chose A or B) - 0.5 over all rows.
    * label_mix: share of each choice over all rows, keyed "A", "B", "tie", "both_bad".

    ``ds`` and ``annotators`` reuse earlier results (:func:`quality_recompute` does this).
    """
    n = len(frame)
    if ds is None:
        ds = _quality_fit(frame, n_annotators, ds_backend)
    if annotators is None:
        annotators = annotator_stats(frame, n_annotators, ds=ds)
    regular = frame.subset(~frame.is_calibration)
    alpha_nominal, alpha_ordinal = krippendorff_alphas(regular)

    weights = np.array([s.n_judgments for s in annotators], float)
    noise = np.array([np.nan if s.noise is None else s.noise for s in annotators])
    has = np.isfinite(noise) & (weights > 0)
    noise_eps = float(np.average(noise[has], weights=weights[has])) if has.any() else None

    disagreement = None
    if ds.items.size:
        maj = majority_winners(regular.item, regular.choice, ds.items)
        decided = maj >= 0
        if decided.any():
            disagreement = float(np.mean(ds.winners()[decided] != maj[decided]))

    ab = frame.choice <= CHOICE_B
    position = None
    if ab.any():
        chose_left = (frame.choice[ab] == CHOICE_A) == frame.a_on_left[ab]
        position = float(chose_left.mean() - 0.5)
    mix = np.bincount(frame.choice, minlength=N_CHOICES) / max(n, 1)
    return CampaignStats(
        n_judgments=n, alpha_nominal=alpha_nominal, alpha_ordinal=alpha_ordinal,
        noise_epsilon=noise_eps, majority_ds_disagreement=disagreement, position_bias=position,
        label_mix={label: float(mix[code]) for code, label in enumerate(CHOICE_LABELS)},
    )


@dataclass(frozen=True)
class QualityReport:
    """A full recompute. ``ds`` is the fit everything was built on (gold-anchored unless
    ``ds_backend="crowdkit"``); ``fits`` its diagnostics for ``CampaignQuality.fits``."""

    annotators: list[AnnotatorStats]
    campaign: CampaignStats
    ds: DawidSkeneFit

    @property
    def fits(self) -> dict[str, dict[str, Any]]:
        return {"dawid_skene": self.ds.diagnostics()}


def quality_recompute(
    frame: JudgmentFrame, n_annotators: int, *, ds_backend: DsBackend = "numpy"
) -> QualityReport:
    """Full recompute: one Dawid-Skene fit, then every annotator's and the campaign's stats.

    The fit is the gold-anchored one (:func:`fit_dawid_skene`, "dawid_skene");
    ``ds_backend="crowdkit"`` uses crowd-kit's plain fit instead (for the benchmark).
    """
    ds = _quality_fit(frame, n_annotators, ds_backend)
    annotators = annotator_stats(frame, n_annotators, ds=ds)
    campaign = campaign_stats(frame, n_annotators, ds=ds, annotators=annotators)
    return QualityReport(annotators=annotators, campaign=campaign, ds=ds)


# --------------------------------------------------------------------------------------------
# Implausible speed
# --------------------------------------------------------------------------------------------

# Defaults of the speed flag; the recompute passes the GAPLAB_SPEED_* settings (config/settings.py).
# A judgment is implausibly fast when it took less than SPEED_MIN_SECONDS (seeing the item,
# deciding, pressing a key) plus the time to read both responses at SPEED_CHARS_PER_SECOND,
# counting at most SPEED_FLOOR_MAX_CHARS of them: 100 characters a second is about 1,200 words a
# minute, faster than skimming, and past 2,000 characters an honest reader skims, so the floor
# stops at 21 s. Only regular items count: degraded pairs and re-shows are meant to be quick.
SPEED_MIN_SECONDS = 1.0
SPEED_CHARS_PER_SECOND = 100.0
SPEED_FLOOR_MAX_CHARS = 2000
# The flag looks at every run of SPEED_WINDOW consecutive judgments (full runs only) and fires
# when at least SPEED_SHARE of one is under its floor. The stream is scanned at every position,
# so the share must be rare for an honest rater in any window, not in one: an honest rater whose
# times scatter widely (lognormal sigma 0.8) around twice the floor is under it 19% of the time,
# and 16 of 20 then has a chance under 1e-8 per window. A rater pressing keys without
# reading is under it every time.
SPEED_WINDOW = 20
SPEED_SHARE = 0.8
SPEED_MIN_JUDGMENTS = 20


@dataclass(frozen=True)
class SpeedFlag:
    """A run of implausibly fast judgments in one annotator's stream (0-based positions)."""

    onset: int           # the run's first judgment under its floor
    alarm: int           # the run's last judgment, where the share first reached SPEED_SHARE
    n_fast: int          # judgments of the run under their floor
    n: int               # judgments in the run
    median_seconds: float
    median_floor: float

    @property
    def share(self) -> float:
        return self.n_fast / self.n


def reading_floor(chars: np.ndarray, *, min_seconds: float = SPEED_MIN_SECONDS,
                  chars_per_second: float = SPEED_CHARS_PER_SECOND) -> np.ndarray:
    """The fewest seconds a judgment of two responses of ``chars`` characters in all can take
    (reading counted up to SPEED_FLOOR_MAX_CHARS)."""
    chars = np.minimum(np.asarray(chars, float), SPEED_FLOOR_MAX_CHARS)
    return min_seconds + chars / chars_per_second


def speed_flag(
    seconds: np.ndarray, chars: np.ndarray, *, start: int = 0,
    min_seconds: float = SPEED_MIN_SECONDS, chars_per_second: float = SPEED_CHARS_PER_SECOND,
    window: int = SPEED_WINDOW, share: float = SPEED_SHARE,
    min_judgments: int = SPEED_MIN_JUDGMENTS,
) -> SpeedFlag | None:
    """The first run of one annotator's judgments (time order) that is mostly too fast, or None.

    Runs are the last ``min(window, k)`` judgments at each position from ``start`` on (k
    judgments seen since ``start``, at least ``min_judgments``); a run is flagged when at least
    ``share`` of it took less than :func:`reading_floor`. ``start`` skips what an earlier alert
    already reported. Linear in the stream (running sums).
    """
    seconds = np.asarray(seconds, float)[start:]
    floor = reading_floor(np.asarray(chars, float)[start:], min_seconds=min_seconds,
                          chars_per_second=chars_per_second)
    n = seconds.size
    if n < max(min_judgments, 1):
        return None
    fast = (seconds < floor).astype(np.int64)
    cum = np.concatenate([[0], np.cumsum(fast)])
    ends = np.arange(n) + 1
    lengths = np.minimum(ends, window)
    n_fast = cum[ends] - cum[ends - lengths]
    hit = (ends >= min_judgments) & (n_fast >= share * lengths)
    if not hit.any():
        return None
    last = int(np.argmax(hit))
    first = last + 1 - int(lengths[last])
    run = slice(first, last + 1)
    onset = first + int(np.argmax(fast[run]))
    return SpeedFlag(onset=start + onset, alarm=start + last, n_fast=int(n_fast[last]),
                     n=int(lengths[last]), median_seconds=float(np.median(seconds[run])),
                     median_floor=float(np.median(floor[run])))
