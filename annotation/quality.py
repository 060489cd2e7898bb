"""Annotator and campaign quality from a frame of current judgments. Pure numpy, no ORM.

DESIGN section 4 lists what is measured; this module computes all of it from one
:class:`JudgmentFrame` (one row per current judgment, ids already mapped to integers). Services
fetch the rows through selectors, build the frame with :func:`frame_from_records`, call
:func:`quality_recompute` and persist the result into ``AnnotatorQuality`` / ``CampaignQuality``.

Contract of the full recompute (:func:`quality_recompute`, or :func:`annotator_stats` and
:func:`campaign_stats` separately):

* Every per-annotator statistic is a grouped reduction (``np.bincount`` on annotator codes), so
  the cost is linear in the number of rows with no Python loop over annotators or rows. On
  1,000,000 judgments from 10,000 annotators over 300,000 items the whole recompute costs about
  0.6x what crowd-kit's ``DawidSkene`` alone costs on the same rows (1.5 s against 2.4 s of CPU
  on a shared 2-core machine; ``benchmarks/quality_at_scale.py``).
* Dawid-Skene runs once and is shared by both functions (pass ``ds=``). It is fitted on the
  non-calibration rows with all four labels (A, B, tie, both-bad). The default backend is
  :func:`dawid_skene`, a vectorised transcription of crowd-kit 1.4's EM that reproduces
  crowd-kit's posteriors, priors, confusion matrices and stopping iteration (checked in
  ``tests/annotation/test_quality.py``). It exists only for speed: crowd-kit's pandas
  joins/groupbys cost about 7x more per EM iteration (12 iterations on the 1M frame: 20 s
  against 2.9 s), more than all the other statistics together. ``ds_backend="crowdkit"`` runs
  crowd-kit itself (integer ids, ``probas_`` columns picked by label, as WEB-STACK.md advises).
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
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from annotation.choices import CHOICE_CODES, CHOICES

CHOICE_A, CHOICE_B, CHOICE_TIE, CHOICE_BOTH_BAD = (CHOICE_CODES[c] for c in CHOICES)
CHOICE_LABELS: tuple[str, ...] = CHOICES
N_CHOICES = len(CHOICE_LABELS)
_CHOICE_CODE = CHOICE_CODES

# Same floor crowd-kit uses for probabilities inside Dawid-Skene (crowdkit.aggregation.
# classification.dawid_skene._EPS); keeping it identical is what makes the two backends agree.
_DS_EPS = 1e-10


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
    transitivity closers. ``len_diff`` is len(A) - len(B) in characters.

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

    _DTYPES = {
        "annotator": np.int64, "item": np.int64, "choice": np.int64, "strength": np.int64,
        "a_on_left": bool, "seconds": np.float64, "len_diff": np.float64,
        "agree_diff": np.float64, "gold_ok": np.float64, "consistent": np.float64,
        "is_reshow": bool, "is_calibration": bool,
    }

    def __post_init__(self) -> None:
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
    ``is_calibration`` (default False). A/B choices with no strength get strength 1 (the weakest
    preference), tie and both-bad always get 0. Raises ValueError on an unknown choice.
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
    posterior P(true label of items[j] = labels[k]); ``priors[k]`` the class prior;
    ``errors[w, o, t]`` = P(annotator w answers labels[o] | true labels[t]) (zero where w never
    answered labels[o], as in crowd-kit); ``n_iter`` the EM iterations run.
    """

    items: np.ndarray
    labels: np.ndarray
    probas: np.ndarray
    priors: np.ndarray
    errors: np.ndarray
    n_iter: int

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
    n_iter: int = 100, tol: float = 1e-5,
) -> DawidSkeneFit:
    """Fit Dawid-Skene by EM with the same steps, floors and stopping rule as crowd-kit 1.4.

    Initialisation by majority-vote shares; E-step in log space; M-step with crowd-kit's 1e-10
    floor on observed (annotator, label) cells; stop when the per-row evidence lower bound (in
    crowd-kit's form) improves by less than ``tol``. Written with ``np.bincount`` because
    crowd-kit's pandas joins dominate a full recompute at scale (module docstring); the test
    suite checks this against ``crowdkit.aggregation.DawidSkene`` on the same data.
    """
    annotator = np.asarray(annotator, np.int64)
    if annotator.size == 0:
        empty = np.zeros((0,), np.int64)
        return DawidSkeneFit(items=empty, labels=empty, probas=np.zeros((0, 0)),
                             priors=np.zeros((0,)), errors=np.zeros((n_annotators, 0, 0)),
                             n_iter=0)
    items, t = _compress(np.asarray(item, np.int64))
    labels, lab = _compress(np.asarray(label, np.int64))
    n_items, k_labels, n_rows = items.size, labels.size, annotator.size
    wl = annotator * k_labels + lab  # cell of (annotator, observed label)
    n_cells = n_annotators * k_labels
    present = np.bincount(wl, minlength=n_cells) > 0
    per_item = np.bincount(t, minlength=n_items).astype(float)

    def m_step(probas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raw = np.empty((n_cells, k_labels))
        by_label = np.ascontiguousarray(probas.T)  # contiguous rows make the gathers cheap
        for k in range(k_labels):
            raw[:, k] = np.bincount(wl, weights=by_label[k][t], minlength=n_cells)
        err = np.where(present[:, None], np.maximum(raw, _DS_EPS), 0.0)
        err = err.reshape(n_annotators, k_labels, k_labels)
        with np.errstate(invalid="ignore"):
            err = err / err.sum(axis=1, keepdims=True)
        return np.nan_to_num(err, nan=0.0), raw

    def log_errors(err: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(err.reshape(n_cells, k_labels))

    def e_step(priors: np.ndarray, log_err: np.ndarray) -> np.ndarray:
        loglik = np.empty((n_items, k_labels))
        by_label = np.ascontiguousarray(log_err.T)
        for k in range(k_labels):
            loglik[:, k] = np.bincount(t, weights=by_label[k][wl], minlength=n_items)
        loglik += np.log(priors)
        loglik -= loglik.max(axis=1, keepdims=True)
        lik = np.exp(loglik)
        return lik / lik.sum(axis=1, keepdims=True)

    # Majority-vote initialisation: share of each label among an item's rows.
    probas = np.bincount(t * k_labels + lab, minlength=n_items * k_labels).astype(float)
    probas = probas.reshape(n_items, k_labels) / per_item[:, None]
    priors = np.maximum(probas.mean(axis=0), _DS_EPS)
    errors, _ = m_step(probas)
    loss = -np.inf
    it = 0
    for it in range(1, n_iter + 1):  # noqa: B007 (it is reported)
        probas = e_step(priors, log_errors(errors))
        priors = np.maximum(probas.mean(axis=0), _DS_EPS)
        errors, raw = m_step(probas)
        # crowd-kit's ELBO: E_q[log p(labels, z)] with the log prior counted once per *row*
        # (its join repeats it), plus the entropy of q. Only the stopping rule uses it, but the
        # same form is kept so both backends stop on the same iteration.
        log_err = log_errors(errors)
        joint = float(np.sum(raw[present] * log_err[present]))
        joint += float(per_item @ probas @ np.log(priors))
        clipped = np.maximum(probas, _DS_EPS)
        entropy = -float(np.sum(clipped * np.log(clipped)))
        new_loss = (joint + entropy) / n_rows
        if new_loss - loss < tol:
            break
        loss = new_loss
    return DawidSkeneFit(items=items, labels=labels, probas=probas, priors=priors,
                         errors=errors, n_iter=it)


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
    return DawidSkeneFit(items=items, labels=labels, probas=probas, priors=priors,
                         errors=errors, n_iter=len(model.loss_history_))


DsBackend = Literal["numpy", "crowdkit"]


def fit_dawid_skene(
    frame: JudgmentFrame, n_annotators: int, *, backend: DsBackend = "numpy"
) -> DawidSkeneFit:
    """Dawid-Skene on the frame's non-calibration rows, all four labels.

    Calibration rows are left out because they are chosen to have one clear answer (degraded
    pairs, known-answer pairs) or are one annotator's private re-shows; they would make the
    confusion matrices look better than the real work. Gold accuracy measures them instead.
    """
    rows = ~frame.is_calibration
    fit = dawid_skene if backend == "numpy" else dawid_skene_crowdkit
    return fit(frame.annotator[rows], frame.item[rows], frame.choice[rows],
               n_annotators=n_annotators)


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


def length_bias_array(
    frame: JudgmentFrame, n_annotators: int, *, min_rows: int = 20, l2: float = 1e-3,
    max_iter: int = 50,
) -> np.ndarray:
    """Per annotator, the logistic coefficient of choosing A on len(A) - len(B) per 100 chars.

    Model on the annotator's A/B choices: logit P(A) = c0 + c_side * s + c_len * len_diff/100,
    with s = +1 when A was shown on the left, -1 otherwise. The side term keeps position bias
    out of the length coefficient; without it the coefficient would be attenuated (logistic
    regression is non-collapsible). The coefficient is marginal over the utility difference of
    the two responses, so on pairs that also differ in quality it is attenuated towards 0 the
    same way; it equals the simulated annotator's b/tau (DESIGN section 5) on pairs that differ
    only in length (padding probes).

    All annotators are fitted at once by Newton-Raphson on grouped sums (np.bincount), with an
    L2 penalty ``l2`` (on the likelihood scale) on the two slopes so that a separable or tiny
    sample gives a finite answer; scipy's per-problem optimisers would need a Python loop over
    10,000 annotators. Returns nan for annotators with fewer than ``min_rows`` A/B rows with a
    non-zero length difference, or whose answers there are all the same.
    """
    ab = (frame.choice <= CHOICE_B) & np.isfinite(frame.len_diff)
    w = frame.annotator[ab]
    y = (frame.choice[ab] == CHOICE_A).astype(float)
    side = np.where(frame.a_on_left[ab], 1.0, -1.0)
    length = frame.len_diff[ab] / 100.0
    informative = length != 0
    n_inf = np.bincount(w[informative], minlength=n_annotators)
    n_a_inf = np.bincount(w[informative], weights=y[informative], minlength=n_annotators)
    ok = (n_inf >= min_rows) & (n_a_inf > 0) & (n_a_inf < n_inf)
    out = np.full(n_annotators, np.nan)
    if not ok.any():
        return out
    keep = ok[w]
    w, y, side, length = w[keep], y[keep], side[keep], length[keep]
    beta = np.zeros((3, n_annotators))
    pen = np.array([0.0, l2, l2])
    active = ok.copy()
    for _ in range(max_iter):
        # Annotators drop out once converged, and their rows with them, so the few slow
        # (near-separable) fits do not cost full passes over every row.
        rows = active[w]
        if not rows.all():
            w, y, side, length = w[rows], y[rows], side[rows], length[rows]
        p = 1.0 / (1.0 + np.exp(-(beta[0][w] + beta[1][w] * side + beta[2][w] * length)))
        r = y - p
        v = p * (1 - p)
        vs, vl = v * side, v * length

        def wsum(weights: np.ndarray, w: np.ndarray = w) -> np.ndarray:
            return np.bincount(w, weights=weights, minlength=n_annotators)

        grad = np.stack([wsum(r), wsum(r * side), wsum(r * length)]) - pen[:, None] * beta
        h00, h01, h02 = wsum(v), wsum(vs), wsum(vl)
        h11, h12, h22 = h00, wsum(vs * length), wsum(vl * length)  # side^2 = 1
        hess = np.stack([np.stack([h00, h01, h02], -1), np.stack([h01, h11, h12], -1),
                         np.stack([h02, h12, h22], -1)], 1) + np.diag(pen)
        hess[~active] = np.eye(3)  # finished or unused annotators: keep the solve well posed
        step = np.linalg.solve(hess, grad.T[..., None])[..., 0].T
        step[:, ~active] = 0.0
        beta += step
        active &= np.abs(step).max(axis=0) > 1e-7  # far below any standard error
        if not active.any():
            break
    out[ok] = beta[2, ok]
    return out


def _none(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _nones(values: np.ndarray) -> list[float | None]:
    """Floats with nan as None, in one pass (``_none`` per cell is slow at 10,000 annotators)."""
    return [None if v != v else v for v in np.asarray(values, float).tolist()]


def annotator_stats(
    frame: JudgmentFrame, n_annotators: int, *, ds: DawidSkeneFit | None = None,
    ds_backend: DsBackend = "numpy", min_length_rows: int = 20, z: float = 1.96,
) -> list[AnnotatorStats]:
    """Quality of every annotator 0..n_annotators-1 (one entry each, also for the idle ones).

    Definitions (DESIGN section 4):

    * gold: accuracy over rows with ``gold_ok`` set, with a Wilson interval at ``z``.
    * self_consistency over swapped re-shows; transitivity over the other ``consistent`` rows
      (transitivity closers).
    * competence: Dawid-Skene P(correct) (:meth:`DawidSkeneFit.competence`), non-calibration
      rows only. ``ds`` reuses a fit; otherwise one is made with ``ds_backend``.
    * peer_agreement: :func:`peer_agreement_array` (leave-one-out plurality).
    * position_bias: P(chose the left response | chose A or B) - 0.5.
    * length_bias: :func:`length_bias_array` (None with fewer than ``min_length_rows`` rows).
    * sycophancy_bias: P(chose the response agreeing with the user | probe row, A or B) - 0.5.
    * noise: 1 - gold accuracy when the annotator has gold, else 1 - competence.
    """
    a = frame.annotator
    if len(frame) and (a.min() < 0 or a.max() >= n_annotators):
        raise ValueError("annotator codes must be in 0..n_annotators-1")
    if ds is None:
        ds = fit_dawid_skene(frame, n_annotators, backend=ds_backend)
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
    chose_a = frame.choice == CHOICE_A
    chose_left = (chose_a == frame.a_on_left).astype(float)
    _, p_left = _group_mean(a[ab], chose_left[ab], n_annotators)

    probe = ab & np.isfinite(frame.agree_diff) & (np.nan_to_num(frame.agree_diff) != 0)
    chose_agreeing = (chose_a == (frame.agree_diff > 0)).astype(float)
    _, p_agree = _group_mean(a[probe], chose_agreeing[probe], n_annotators)

    secs = np.isfinite(frame.seconds)
    med_secs = _group_median(a[secs], frame.seconds[secs], n_annotators)

    competence = ds.competence() if ds.errors.shape[0] else np.full(n_annotators, np.nan)
    peer = peer_agreement_array(frame, n_annotators)
    length = length_bias_array(frame, n_annotators, min_rows=min_length_rows)
    noise = np.where(n_gold > 0, 1.0 - gold_acc, 1.0 - competence)

    # Columns in AnnotatorStats' field order, so each record is built positionally (building
    # 10,000 records through keyword dicts costs more than most of the statistics).
    columns = [
        np.arange(n_annotators), n_judgments, n_gold, gold_acc, gold_lo, gold_hi, n_reshows,
        self_cons, n_triples, trans, competence, peer, p_left - 0.5, length, p_agree - 0.5,
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
        ds = fit_dawid_skene(frame, n_annotators, backend=ds_backend)
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
    annotators: list[AnnotatorStats]
    campaign: CampaignStats
    ds: DawidSkeneFit


def quality_recompute(
    frame: JudgmentFrame, n_annotators: int, *, ds_backend: DsBackend = "numpy"
) -> QualityReport:
    """Full recompute: one Dawid-Skene fit, then every annotator's and the campaign's stats."""
    ds = fit_dawid_skene(frame, n_annotators, backend=ds_backend)
    annotators = annotator_stats(frame, n_annotators, ds=ds)
    campaign = campaign_stats(frame, n_annotators, ds=ds, annotators=annotators)
    return QualityReport(annotators=annotators, campaign=campaign, ds=ds)
