"""Aggregate crowd labels and pairwise judgments. Pure functions on pandas/numpy; no ORM.

Two families live here (DESIGN section 4, "aggregation methods for snapshots"):

**K-class labels** (``crowd_eval`` on data such as Snow et al. 2008): a DataFrame with columns
``task, worker, label`` (crowd-kit's convention), any hashable ids, any number of classes, tasks
without gold allowed. Every method returns a ``LabelAggregate``:

* ``majority_labels``: plurality vote.
* ``gold_weighted_labels`` / ``gold_weighted_cross_fit``: votes weighted by the log-odds of each
  worker's smoothed gold accuracy.
* ``dawid_skene_labels``: Dawid & Skene (1979) EM (``dawid_skene_em``); with ``gold`` it is
  gold-anchored (``dawid_skene_gold``): gold tasks enter EM as observed truth, their posteriors
  clamped to the gold label, so a majority that shares a bias cannot outvote what gold says
  about each worker's confusion matrix. ``dawid_skene_gold_cross_fit`` scores it honestly.
* ``mace_labels``: MACE (Hovy et al. 2013), variational Bayes.

Converged or flagged: every iterative fit here (Dawid-Skene, MACE, Davidson-Bradley-Terry) runs
until the largest absolute change of its parameters between iterations (posteriors, priors,
confusions; competences, strategies; strengths) is below a tolerance, and records
``iterations`` and ``converged`` (False: it hit its iteration cap, and the last iterate is
returned). Both fits are written here rather than called from crowd-kit 1.4.2:

* crowd-kit's ``DawidSkene.fit`` stops when ``new_loss - loss < tol`` on its "evidence lower
  bound", so any fall of that number ends the fit, read as convergence and never reported. And
  the number falls although EM never lowers the likelihood: ``_evidence_lower_bound`` adds the
  log class prior once per *label* (it is joined onto each label row) instead of once per task,
  so it is not the bound EM ascends. On a public 4-class set (825 workers, 92,721 labels) it
  stopped after 2 iterations; ``tests/annotation/test_convergence.py`` reproduces the early
  stop on synthetic data. Stopping early can score higher than the converged maximum-likelihood
  fit on small pools (0.766 vs 0.748 there): early stopping then acts as a regulariser, but an
  unannounced one, so the fit here runs to its fixed point and says how many steps it took.
* crowd-kit's ``MACE`` builds its per-worker strategy counts with
  ``annotation.groupby(["worker", "label"]).sum()...unstack()`` (``mace.py``, ``_e_step``),
  whose rows are sorted by worker id and columns by label value, then uses ``.values`` of it
  as ``thetas_`` (``_variational_m_step`` / ``_m_step``), which the next E-step indexes with
  ``pd.factorize`` codes, i.e. by first appearance. Unless first appearance equals sorted order
  (for workers and labels alike), each worker is given another worker's spamming strategy. It
  also runs a fixed number of iterations with no convergence test, and its random restarts
  initialise workers by position. ``mace_labels`` starts from a symmetric point, so its answer
  depends on the labels alone, not on worker names or row order.

A worker who labels one task more than once keeps only the *last* label in input order
(``dedupe_labels``): a repeat is read as a correction, like a superseding judgment, and counting
every copy would let one worker outvote the others and break Dawid-Skene's model, in which a worker
gives one label per task.

Ties are broken deterministically and reported. The hard label takes, among the tied labels, the
one most frequent in the whole data set (the empirical class prior), then the first in sorted order.
``LabelAggregate.accuracy`` reports both the accuracy of those hard labels and the *expected*
accuracy under a uniformly random tie-break (a tied task scores 1/|tied| when gold is among the
tied labels). The latter is the convention behind Snow et al.'s 0.897 for majority vote on RTE.

**Pairwise preferences** (snapshots): ``PairVote`` rows (comparison, annotator, canonical choice
A / B / tie / both_bad). ``aggregate_pairwise`` runs one of ``PAIRWISE_METHODS`` and returns, per
comparison, a ``PairwiseDecision``: the winner ("A", "B", or None when undecided) and a
``confidence`` in [0.5, 1], the method's probability that the winner is the better response given
that one of the two is better (ties and both-bad votes express no direction):

* majority: Laplace-smoothed share of directional votes, (v_winner + 1) / (v_A + v_B + 2);
* gold_weighted: sigmoid of the log-odds-weighted vote, the one-coin posterior (uniform prior);
* dawid_skene: P(A) / (P(A) + P(B)) from the Dawid-Skene posterior over {A, B, tie, both_bad};
* bradley_terry: sigmoid(theta_winner - theta_loser) under Davidson's (1970) model with ties.

Confidence becomes TRL's ``margin`` and a per-row ``weight``:

* ``margin = clip(logit(confidence), 0, margin_max)``. TRL's reward loss is
  ``-log sigmoid(r_chosen - r_rejected - margin)`` (Touvron et al. 2023, Llama 2, section 3.2.2),
  so the margin asks for a reward gap at least as large as the log-odds the aggregate supports;
  under Bradley-Terry the margin is exactly the fitted strength difference. The clip (default 3,
  the largest Llama 2 margin) keeps overconfident posteriors (Dawid-Skene's independence
  assumption makes them so) from dominating the loss.
* ``weight = 2 * confidence - 1`` in [0, 1]: the expected agreement (+1 right, -1 wrong) of the
  label with the truth, the factor by which symmetric label noise shrinks the logistic loss's
  signal (Natarajan et al. 2013, section 3). A coin flip gets weight 0.

``majority_vote`` / ``MajorityOutcome`` are the A-versus-B count behind the majority method
(snapshots, and exports, which are written-out majority snapshots).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, logit

from annotation.choices import CHOICES
from annotation.dawid_skene import dawid_skene_fit

LABEL_COLUMNS = ("task", "worker", "label")
# Relative tolerance under which two scores count as tied.
_TIE_TOL = 1e-9
# Smoothed gold accuracies are kept inside this range so log-odds stay finite.
_ACC_CLIP = (1e-3, 1.0 - 1e-3)


# --------------------------------------------------------------------------------------------
# A-versus-B majority (the majority method of snapshots and exports)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MajorityOutcome:
    winner: str | None  # "A", "B", or None when tied or no directional vote
    votes_a: int
    votes_b: int
    n_judgments: int

    @property
    def agreement(self) -> float:
        """Share of all judgments (ties and both-bad included) that back the winner."""
        if self.winner is None or self.n_judgments == 0:
            return 0.0
        return (self.votes_a if self.winner == "A" else self.votes_b) / self.n_judgments


def majority_vote(choices: list[str]) -> MajorityOutcome:
    """Majority of A vs B votes; ties and both-bad count as judgments but not as votes."""
    counts = Counter(choices)
    a, b = counts.get("A", 0), counts.get("B", 0)
    winner = "A" if a > b else "B" if b > a else None
    return MajorityOutcome(winner=winner, votes_a=a, votes_b=b, n_judgments=len(choices))


# --------------------------------------------------------------------------------------------
# K-class label aggregation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelAggregate:
    """The result of one K-class aggregation method; every Series is indexed by task."""

    method: str
    labels: pd.Series  # task -> label, ties broken deterministically (module docstring)
    top: pd.Series  # task -> tuple of the labels tied for best (one label when no tie)
    confidence: pd.Series  # task -> the method's probability (or vote share) of ``labels``
    worker_quality: pd.Series  # worker -> estimated P(correct); empty when the method has none
    probas: pd.DataFrame | None = None  # task x label posterior, for probabilistic methods
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_ties(self) -> int:
        return int((self.top.map(len) > 1).sum())

    def accuracy(self, gold: pd.Series) -> dict[str, float | int | None]:
        """Accuracy against ``gold`` (task -> label) on the tasks both share.

        ``accuracy`` is the expected accuracy under a uniformly random tie-break;
        ``accuracy_tie_broken`` that of the deterministic ``labels``.
        """
        common = self.labels.index.intersection(gold.index)
        if len(common) == 0:
            return {"accuracy": None, "accuracy_tie_broken": None, "n_scored": 0}
        truth = gold.loc[common]
        top = self.top.loc[common]
        credit = [
            (1.0 / len(tied)) if t in tied else 0.0
            for t, tied in zip(truth.to_numpy(), top.to_numpy(), strict=True)
        ]
        hard = (self.labels.loc[common].to_numpy() == truth.to_numpy()).mean()
        return {
            "accuracy": float(np.mean(credit)),
            "accuracy_tie_broken": float(hard),
            "n_scored": int(len(common)),
        }


def dedupe_labels(data: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep each worker's last label per task (input order); return it and how many were dropped.

    Raises ValueError when a column of ``LABEL_COLUMNS`` is missing.
    """
    missing = [c for c in LABEL_COLUMNS if c not in data.columns]
    if missing:
        raise ValueError(f"missing column(s): {', '.join(missing)}")
    kept = data.loc[:, list(LABEL_COLUMNS)].drop_duplicates(subset=["task", "worker"], keep="last")
    return kept.reset_index(drop=True), len(data) - len(kept)


def label_order(data: pd.DataFrame) -> list[Hashable]:
    """Labels by tie-break preference: most frequent in ``data`` first, then sorted order."""
    counts = data["label"].value_counts()
    return sorted(counts.index, key=lambda lab: (-int(counts[lab]), str(lab)))


def _decide(
    method: str, scores: pd.DataFrame, order: list[Hashable], *,
    secondary: pd.DataFrame | None = None,
) -> tuple[pd.Series, pd.Series]:
    """Best label per task by ``scores`` (then ``secondary``), tie-broken by ``order``.

    Returns (labels, top): the hard label and the tuple of labels tied for best.
    """
    scores = scores.reindex(columns=order)
    values = scores.to_numpy(dtype=float)
    best = np.nanmax(values, axis=1, keepdims=True)
    tol = _TIE_TOL * np.maximum(1.0, np.abs(best))
    top_mask = values >= best - tol
    if secondary is not None:
        sec = np.where(top_mask, secondary.reindex(index=scores.index, columns=order)
                       .to_numpy(dtype=float), -np.inf)
        top_mask &= sec >= sec.max(axis=1, keepdims=True) - _TIE_TOL
    columns = np.asarray(order, dtype=object)
    # Columns run in tie-break order, so the first True is the deterministic choice.
    labels = pd.Series(columns[top_mask.argmax(axis=1)], index=scores.index, name=method)
    top = pd.Series([tuple(columns[row]) for row in top_mask], index=scores.index, name="top")
    return labels, top


def _vote_counts(data: pd.DataFrame, order: list[Hashable]) -> pd.DataFrame:
    return (
        data.groupby(["task", "label"], sort=False).size().unstack(fill_value=0)
        .reindex(columns=order, fill_value=0)
    )


def majority_labels(data: pd.DataFrame) -> LabelAggregate:
    """Plurality label per task; confidence is the winner's share of the task's votes."""
    data, _ = dedupe_labels(data)
    order = label_order(data)
    counts = _vote_counts(data, order)
    labels, top = _decide("majority", counts, order)
    share = counts.to_numpy()[np.arange(len(counts)), [order.index(lab) for lab in labels]]
    confidence = pd.Series(share / counts.sum(axis=1).to_numpy(), index=counts.index)
    return LabelAggregate(
        method="majority", labels=labels, top=top, confidence=confidence,
        worker_quality=pd.Series(dtype=float),
    )


def worker_gold_accuracy(
    data: pd.DataFrame, gold: pd.Series, *, prior_strength: float = 2.0,
    pooled: float | None = None,
) -> pd.DataFrame:
    """Per worker: ``n_gold``, ``n_correct``, raw ``accuracy`` and ``smoothed`` accuracy.

    ``smoothed = (n_correct + m * p0) / (n_gold + m)`` with m = ``prior_strength`` and p0 the
    pooled gold accuracy of all workers (or ``pooled``): a Beta prior centred on the crowd
    (empirical Bayes), so a worker with two lucky gold items is not trusted like an expert and a
    worker with no gold counts as an average one. Workers with no gold appear with n_gold = 0.
    Raises ValueError when no label falls on a gold task and ``pooled`` is not given.
    """
    data, _ = dedupe_labels(data)
    scored = data[data["task"].isin(gold.index)]
    correct = scored["label"].to_numpy() == gold.reindex(scored["task"]).to_numpy()
    per = (
        pd.DataFrame({"worker": scored["worker"].to_numpy(), "correct": correct})
        .groupby("worker", sort=False)["correct"].agg(["size", "sum"])
        .reindex(pd.unique(data["worker"]), fill_value=0)
    )
    if pooled is None:
        if len(scored) == 0:
            raise ValueError("no label falls on a gold task; gold weighting needs gold")
        pooled = float(correct.mean())
    n, c = per["size"].astype(float), per["sum"].astype(float)
    out = pd.DataFrame({
        "n_gold": n.astype(int),
        "n_correct": c.astype(int),
        "accuracy": (c / n.where(n > 0)),
        "smoothed": ((c + prior_strength * pooled) / (n + prior_strength)).clip(*_ACC_CLIP),
    })
    out.index.name = "worker"
    return out


def gold_log_odds_weights(smoothed_accuracy: pd.Series, *, n_classes: int) -> pd.Series:
    """Vote weight per worker: ``max(0, log((K - 1) p / (1 - p)))`` for accuracy p, K classes.

    In the one-coin model (right with probability p, otherwise one of the K - 1 wrong labels
    uniformly) this is the log-likelihood ratio of a vote, so the weighted plurality is the
    Bayes-optimal decision (Nitzan & Paroush 1982 for K = 2; Li & Yu 2014, section 3, for K
    classes). Clipped at 0: a worker at or below chance gets no vote rather than an inverted one,
    since with a handful of gold items a low score is more often bad luck than reliable error.
    """
    p = smoothed_accuracy.astype(float).clip(*_ACC_CLIP)
    k = max(int(n_classes), 2)
    return np.log((k - 1) * p / (1 - p)).clip(lower=0.0)


def _weighted_labels(
    data: pd.DataFrame, weights: pd.Series, order: list[Hashable],
) -> tuple[pd.Series, pd.Series, pd.Series]:
    w = weights.reindex(data["worker"]).fillna(0.0).to_numpy()
    frame = pd.DataFrame({"task": data["task"].to_numpy(), "label": data["label"].to_numpy(),
                          "w": w})
    score = (frame.groupby(["task", "label"], sort=False)["w"].sum().unstack()
             .reindex(columns=order))
    votes = _vote_counts(data, order).reindex(index=score.index)
    # Only labels somebody gave are candidates; among equal weighted scores the raw count decides
    # (e.g. every voter on a task weighs 0), then the deterministic order.
    score = score.where(votes > 0, -np.inf)
    labels, top = _decide("gold_weighted", score, order, secondary=votes)
    # One-coin posterior with a uniform class prior: P(k) proportional to exp(score_k), where
    # labels nobody gave score 0 (they remain possible truths).
    logits = score.where(votes > 0, 0.0).to_numpy(dtype=float)
    post = np.exp(logits - logits.max(axis=1, keepdims=True))
    post /= post.sum(axis=1, keepdims=True)
    pick = [order.index(lab) for lab in labels]
    confidence = pd.Series(post[np.arange(len(post)), pick], index=score.index)
    return labels, top, confidence


def gold_weighted_labels(
    data: pd.DataFrame, gold: pd.Series, *, prior_strength: float = 2.0,
) -> LabelAggregate:
    """Labels by a vote weighted with each worker's gold log-odds (``gold_log_odds_weights``).

    The weights see every gold task, so accuracy measured on the same gold is optimistic; use
    ``gold_weighted_cross_fit`` to evaluate.
    """
    data, _ = dedupe_labels(data)
    order = label_order(data)
    quality = worker_gold_accuracy(data, gold, prior_strength=prior_strength)
    weights = gold_log_odds_weights(quality["smoothed"], n_classes=len(order))
    labels, top, confidence = _weighted_labels(data, weights, order)
    return LabelAggregate(
        method="gold_weighted", labels=labels, top=top, confidence=confidence,
        worker_quality=quality["smoothed"], info={"weights": weights},
    )


def _gold_folds(data: pd.DataFrame, gold: pd.Series, *, n_folds: int,
                seed: int) -> list[np.ndarray]:
    """The labelled gold tasks of ``data`` in ``n_folds`` random folds (2 to one per task), for
    cross-fitting: each fold is scored by a fit that never saw its gold. Raises ValueError with
    fewer than two labelled gold tasks."""
    gold_tasks = np.asarray(pd.Index(pd.unique(data["task"])).intersection(gold.index))
    if len(gold_tasks) < 2:
        raise ValueError("cross-fitting needs at least two labelled gold tasks")
    n_folds = int(min(max(n_folds, 2), len(gold_tasks)))
    rng = np.random.default_rng(seed)
    return np.array_split(rng.permutation(gold_tasks), n_folds)


def gold_weighted_cross_fit(
    data: pd.DataFrame, gold: pd.Series, *, n_folds: int = 5, seed: int = 0,
    prior_strength: float = 2.0,
) -> LabelAggregate:
    """Gold-weighted labels where each gold task is labelled with weights fit on other folds.

    Weights fit on a task's own gold have seen its answer (the workers who were right there are
    up-weighted there), which inflates the accuracy measured on that gold. Cross-fitting splits
    the labelled gold tasks into ``n_folds`` random folds (``seed``) and labels each fold with
    weights from the rest, so every score is out-of-sample. Tasks without gold use weights from
    all gold; they are never scored. Raises ValueError with fewer than two labelled gold tasks.
    """
    data, _ = dedupe_labels(data)
    order = label_order(data)
    folds = _gold_folds(data, gold, n_folds=n_folds, seed=seed)
    pooled_all = worker_gold_accuracy(data, gold, prior_strength=prior_strength)
    pieces: list[tuple[pd.Series, pd.Series, pd.Series]] = []
    for fold in folds:
        train_gold = gold.drop(index=fold)
        quality = worker_gold_accuracy(data, train_gold, prior_strength=prior_strength)
        weights = gold_log_odds_weights(quality["smoothed"], n_classes=len(order))
        pieces.append(_weighted_labels(data[data["task"].isin(fold)], weights, order))
    rest = data[~data["task"].isin(np.concatenate(folds))]
    if len(rest):
        weights = gold_log_odds_weights(pooled_all["smoothed"], n_classes=len(order))
        pieces.append(_weighted_labels(rest, weights, order))
    labels, top, confidence = (pd.concat([p[i] for p in pieces]) for i in range(3))
    return LabelAggregate(
        method="gold_weighted", labels=labels, top=top, confidence=confidence,
        worker_quality=pooled_all["smoothed"], info={"cross_fit_folds": n_folds, "seed": seed},
    )


# Iterative fits stop on their parameters: Dawid-Skene on annotation.dawid_skene's criterion,
# MACE on the largest absolute change of any posterior, competence or strategy entry.


@dataclass(frozen=True)
class _Coded:
    """Integer codes of a deduped label frame: tasks, workers and labels as 0..n-1."""

    task: np.ndarray
    worker: np.ndarray
    label: np.ndarray
    tasks: pd.Index
    workers: pd.Index
    order: list[Hashable]


def _encode(data: pd.DataFrame, extra_labels: Iterable[Hashable] = ()) -> _Coded:
    """Integer codes for tasks, workers and labels (labels in ``label_order``).

    ``extra_labels`` (e.g. gold labels no worker gave) are appended to the classes. Codes of
    tasks and workers follow first appearance; the fits below only sum over labels, so their
    results do not depend on that order (up to floating-point rounding).
    """
    order = label_order(data)
    order += [lab for lab in dict.fromkeys(extra_labels) if lab not in order]
    task_codes, tasks = pd.factorize(data["task"])
    worker_codes, workers = pd.factorize(data["worker"])
    label_codes = pd.Index(order).get_indexer(data["label"])
    return _Coded(task=task_codes.astype(np.int64), worker=worker_codes.astype(np.int64),
                  label=label_codes.astype(np.int64), tasks=pd.Index(tasks),
                  workers=pd.Index(workers), order=order)


def _probabilistic_aggregate(
    method: str, posteriors: np.ndarray, coded: _Coded, worker_quality: pd.Series,
    info: dict[str, Any] | None = None,
) -> LabelAggregate:
    probas = pd.DataFrame(posteriors, index=coded.tasks,
                          columns=pd.Index(coded.order, dtype=object))
    labels, top = _decide(method, probas, coded.order)
    confidence = pd.Series(
        posteriors[np.arange(len(probas)), [coded.order.index(lab) for lab in labels]],
        index=probas.index,
    )
    return LabelAggregate(
        method=method, labels=labels, top=top, confidence=confidence,
        worker_quality=worker_quality, probas=probas, info=info or {},
    )


def _softmax_rows(log_p: np.ndarray) -> np.ndarray:
    p = np.exp(log_p - log_p.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def _majority_shares(
    task: np.ndarray, label: np.ndarray, *, n_tasks: int, n_classes: int,
) -> np.ndarray:
    counts = np.bincount(task * n_classes + label, minlength=n_tasks * n_classes)
    counts = counts.reshape(n_tasks, n_classes).astype(float)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1.0)


@dataclass(frozen=True)
class DawidSkeneFit:
    """Dawid-Skene EM result on integer codes (see ``dawid_skene_em``)."""

    posteriors: np.ndarray  # task x class, P(truth = class | labels, gold)
    priors: np.ndarray  # class prior
    confusions: np.ndarray  # worker x truth x said: P(worker says `said` | truth)
    iterations: int
    converged: bool
    max_change: float  # largest parameter change of the last iteration
    log_likelihood: float  # marginal log-likelihood of the labels (gold tasks: of the gold set)
    log_likelihood_fell: bool  # True would mean an EM bug: EM never lowers the likelihood
    em_steps: int = 0  # EM maps evaluated (about 3 per SQUAREM iteration)

    def info(self, *, n_iter: int, tol: float, anchored_on_gold: int | None = None
             ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "iterations": self.iterations, "converged": self.converged,
            "max_change": self.max_change, "tol": tol, "n_iter": n_iter,
            "log_likelihood": self.log_likelihood, "em_steps": self.em_steps,
        }
        if anchored_on_gold is not None:
            out["anchored_on_gold"] = anchored_on_gold
        return out


def dawid_skene_em(
    task: np.ndarray, worker: np.ndarray, label: np.ndarray, *, n_tasks: int, n_workers: int,
    n_classes: int, allowed: np.ndarray | None = None, n_iter: int = 500, tol: float = 1e-5,
    accelerate: bool = True, smoothing: float = 0.0,
) -> DawidSkeneFit:
    """Dawid & Skene (1979) on integer codes by the project's one EM
    (:func:`annotation.dawid_skene.dawid_skene_fit`), read back in this module's layout.

    ``allowed`` (task x class, bool) anchors tasks with gold: a task's posterior is restricted
    to (renormalised over) the classes its gold accepts, in every E-step, so gold enters EM as
    observed truth (semi-supervised DS) and pins each worker's confusion matrix to what gold
    says, whatever the majority says; the class prior is estimated on the other tasks. A task
    whose row is all True is unanchored.

    Starts from majority-vote shares (gold rows clamped); SQUAREM-accelerated unless
    ``accelerate`` is False (plain EM, one step per iteration, crowd-kit's sequence). Stops on
    that module's parameter criterion at ``tol`` (``converged``), or after ``n_iter``
    iterations (``converged`` False, flagged). Confusion entries of answers a worker gave are
    floored at 1e-10, as crowd-kit does. ``smoothing`` > 0 adds that many pseudo-answers per
    answer a worker gave (MAP; 0 is maximum likelihood). At maximum likelihood a sparse
    4-class fit creeps: on the 100,000-judgment benchmark frame it had not converged after
    500 SQUAREM iterations, with 1 it converged in 22 (at 1M: 30 iterations, 6.2 s).
    """
    fit = dawid_skene_fit(worker=worker, item=task, label=label, n_workers=n_workers,
                          n_items=n_tasks, n_classes=n_classes, gold=allowed, n_iter=n_iter,
                          tol=tol, accelerate=accelerate, smoothing=smoothing)
    return DawidSkeneFit(posteriors=fit.posteriors, priors=fit.priors,
                         confusions=np.ascontiguousarray(fit.errors.transpose(0, 2, 1)),
                         iterations=fit.iterations, converged=fit.converged,
                         max_change=fit.max_change, log_likelihood=fit.log_likelihood,
                         log_likelihood_fell=fit.log_likelihood_fell, em_steps=fit.em_steps)


def _gold_allowed(gold: Mapping[Hashable, Any] | pd.Series, coded: _Coded) -> np.ndarray:
    """task x class mask of what gold accepts: one label, or a collection of labels (tolerance)."""
    allowed = np.ones((len(coded.tasks), len(coded.order)), dtype=bool)
    position = {lab: n for n, lab in enumerate(coded.order)}
    task_index = {t: n for n, t in enumerate(coded.tasks)}
    for task, accepted in dict(gold).items():
        row = task_index.get(task)
        if row is None:
            continue  # gold on a task nobody labelled says nothing about anyone
        accepted = _gold_set(accepted)
        allowed[row] = False
        allowed[row, [position[lab] for lab in accepted]] = True
    return allowed


def _gold_set(accepted: Any) -> tuple[Hashable, ...]:
    if isinstance(accepted, (list, tuple, set, frozenset)):
        return tuple(accepted)
    return (accepted,)


def dawid_skene_labels(
    data: pd.DataFrame, *, gold: Mapping[Hashable, Any] | pd.Series | None = None,
    n_iter: int = 500, tol: float = 1e-5, accelerate: bool = True, smoothing: float = 0.0,
) -> LabelAggregate:
    """Dawid & Skene (1979) by ``dawid_skene_em``; gold-anchored when ``gold`` is given.

    ``gold`` maps a task to its label (or a collection of accepted labels); those tasks enter
    EM as observed truth and the method is named ``dawid_skene_gold``. Worker quality is the
    estimated accuracy ``sum_k prior_k * P(says k | truth k)``. ``info`` holds ``iterations``,
    ``converged``, ``max_change``, ``tol``, ``n_iter``, ``log_likelihood`` (and
    ``anchored_on_gold``, the number of labelled tasks clamped to gold), ``em_steps``.
    ``accelerate=False`` runs plain EM (crowd-kit's sequence of iterates); ``smoothing`` as in
    ``dawid_skene_em``.
    """
    data, _ = dedupe_labels(data)
    gold_map = dict(gold) if gold is not None else {}
    gold_labels = [lab for acc in gold_map.values() for lab in _gold_set(acc)]
    coded = _encode(data, extra_labels=gold_labels)
    allowed = _gold_allowed(gold_map, coded) if gold is not None else None
    fit = dawid_skene_em(coded.task, coded.worker, coded.label, n_tasks=len(coded.tasks),
                         n_workers=len(coded.workers), n_classes=len(coded.order),
                         allowed=allowed, n_iter=n_iter, tol=tol, accelerate=accelerate,
                         smoothing=smoothing)
    accuracy = np.einsum("c,wcc->w", fit.priors, fit.confusions)
    quality = pd.Series(accuracy, index=coded.workers, name="accuracy")
    anchored = None if allowed is None else int((~allowed).any(axis=1).sum())
    method = "dawid_skene" if gold is None else "dawid_skene_gold"
    return _probabilistic_aggregate(method, fit.posteriors, coded, quality,
                                    info=fit.info(n_iter=n_iter, tol=tol,
                                                  anchored_on_gold=anchored))


def dawid_skene_gold_cross_fit(
    data: pd.DataFrame, gold: pd.Series, *, n_folds: int = 5, seed: int = 0,
    n_iter: int = 500, tol: float = 1e-5,
) -> LabelAggregate:
    """Gold-anchored Dawid-Skene where each gold task is labelled by a fit blind to its gold.

    A fit anchored on a task's own gold returns that gold, so its accuracy there says nothing.
    As in ``gold_weighted_cross_fit``, the labelled gold tasks are split into ``n_folds`` random
    folds (``seed``); each fold's posteriors come from a fit anchored on the other folds' gold.
    Tasks without gold take the fit anchored on all gold. ``info`` holds the full fit's
    diagnostics plus ``folds``: each fold fit's ``iterations`` and ``converged``; ``iterations``
    is the most any fit took and ``converged`` is True only when every fit converged. Raises
    ValueError with fewer than two gold tasks.
    """
    data, _ = dedupe_labels(data)
    folds = _gold_folds(data, gold, n_folds=n_folds, seed=seed)
    full = dawid_skene_labels(data, gold=gold, n_iter=n_iter, tol=tol)
    probas = full.probas.copy()
    fold_info = []
    for fold in folds:
        fit = dawid_skene_labels(data, gold=gold.drop(index=fold), n_iter=n_iter, tol=tol)
        probas.loc[fold] = fit.probas.reindex(columns=probas.columns, fill_value=0.0).loc[fold]
        fold_info.append({"iterations": fit.info["iterations"],
                          "converged": fit.info["converged"]})
    order = list(probas.columns)
    labels, top = _decide("dawid_skene_gold", probas, order)
    values = probas.to_numpy(dtype=float)
    confidence = pd.Series(values[np.arange(len(values)), [order.index(x) for x in labels]],
                           index=probas.index)
    # The slowest fit speaks for the method: iterations is the most any fit took.
    info = dict(full.info, cross_fit_folds=n_folds, seed=seed, folds=fold_info,
                iterations=max([full.info["iterations"]] + [f["iterations"] for f in fold_info]),
                converged=bool(full.info["converged"]
                               and all(f["converged"] for f in fold_info)))
    return LabelAggregate(method="dawid_skene_gold", labels=labels, top=top,
                          confidence=confidence, worker_quality=full.worker_quality,
                          probas=probas, info=info)


# MACE's priors, as in Hovy et al. (2013) and crowd-kit: Beta(0.5, 0.5) on each worker's
# competence and a symmetric Dirichlet(10) on the labels a spamming worker gives.
_MACE_ALPHA = 0.5
_MACE_BETA = 0.5
_MACE_STRATEGY_PRIOR = 10.0


def mace_labels(data: pd.DataFrame, *, n_iter: int = 500, tol: float = 1e-5) -> LabelAggregate:
    """MACE (Hovy et al. 2013) by variational Bayes, run until its parameters stop moving.

    Each worker j knows the answer with probability theta_j (and then gives the truth) or
    spams, giving label l with probability xi_jl; the truth is uniform over the classes.
    Variational Bayes with MACE's priors (``_MACE_*``): the E-step uses the geometric-mean
    parameters exp(digamma(count + prior) - digamma(sum)). Starts from equal competence 0.5 and
    uniform strategies, which makes the first E-step a majority vote; no random restarts, so the
    result is a function of the labels alone, not of worker names or row order. Stops when the
    largest absolute change of any posterior, competence or strategy entry falls below ``tol``.

    Worker quality is the posterior mean competence (n_knowing + 0.5) / (n_labels + 1).
    Replaces ``crowdkit.aggregation.MACE`` (see the module docstring for its worker-order bug).
    """
    from scipy.special import digamma

    data, _ = dedupe_labels(data)
    coded = _encode(data)
    k, n_workers, n_tasks = len(coded.order), len(coded.workers), len(coded.tasks)
    task, worker, label = coded.task, coded.worker, coded.label
    spam = np.full(n_workers, 0.5)  # the E-step's weight of "spamming"
    know = np.full(n_workers, 0.5)  # ... and of "knowing"
    strategy = np.full((n_workers, k), 1.0 / k)
    posteriors = _majority_shares(task, label, n_tasks=n_tasks, n_classes=k)
    converged, change, iterations = False, math.inf, 0
    knowing = np.zeros(len(task))
    while iterations < int(n_iter):
        iterations += 1
        # E-step: P(label | truth c) = spam * xi[label] + know * [label == c].
        p_spam = spam[worker] * strategy[worker, label]
        log_post = np.stack([np.bincount(task, weights=np.log(p_spam + know[worker]
                                                              * (label == c)),
                                         minlength=n_tasks) for c in range(k)], axis=1)
        new_posteriors = _softmax_rows(log_post)
        # P(the worker knew) for each label: the truth is its label and "know" explains it.
        knowing = new_posteriors[task, label] * know[worker] / (p_spam + know[worker])
        n_know = np.bincount(worker, weights=knowing, minlength=n_workers)
        n_spam = np.bincount(worker, weights=1.0 - knowing, minlength=n_workers)
        by_label = np.bincount(worker * k + label, weights=1.0 - knowing,
                               minlength=n_workers * k).reshape(n_workers, k)
        # Variational M-step (Hovy et al. 2013, section 2.2).
        total = digamma(n_spam + n_know + _MACE_ALPHA + _MACE_BETA)
        new_spam = np.exp(digamma(n_spam + _MACE_ALPHA) - total)
        new_know = np.exp(digamma(n_know + _MACE_BETA) - total)
        new_strategy = np.exp(digamma(by_label + _MACE_STRATEGY_PRIOR)
                              - digamma(by_label.sum(axis=1, keepdims=True)
                                        + k * _MACE_STRATEGY_PRIOR))
        change = float(max(np.abs(new_posteriors - posteriors).max(),
                           np.abs(new_know - know).max(), np.abs(new_spam - spam).max(),
                           np.abs(new_strategy - strategy).max()))
        posteriors, spam, know, strategy = new_posteriors, new_spam, new_know, new_strategy
        if change < tol:
            converged = True
            break
    n_labels = np.bincount(worker, minlength=n_workers)
    n_know = np.bincount(worker, weights=knowing, minlength=n_workers)
    competence = pd.Series((n_know + _MACE_BETA) / (n_labels + _MACE_ALPHA + _MACE_BETA),
                           index=coded.workers, name="competence")
    info = {"iterations": iterations, "converged": converged, "max_change": change,
            "tol": tol, "n_iter": n_iter}
    return _probabilistic_aggregate("mace", posteriors, coded, competence, info=info)


def quality_summary(quality: pd.Series) -> dict[str, float | int | None]:
    """n_workers, mean, median, min and max of a worker-quality Series (NaNs left out)."""
    q = quality.dropna().astype(float)
    if q.empty:
        return {"n_workers": 0, "mean": None, "median": None, "min": None, "max": None}
    return {"n_workers": int(q.size), "mean": float(q.mean()), "median": float(q.median()),
            "min": float(q.min()), "max": float(q.max())}


# --------------------------------------------------------------------------------------------
# Bradley-Terry with ties (Davidson 1970)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DavidsonFit:
    """Maximum-likelihood (or MAP) fit of Davidson's Bradley-Terry model with ties."""

    strengths: np.ndarray  # log-strengths theta_i, centred to mean 0
    tie: float  # Davidson's nu >= 0; P(tie) between equal items is nu / (2 + nu)
    log_likelihood: float
    converged: bool  # the optimizer succeeded and a restart moved no parameter by ``tol``
    iterations: int = 0  # L-BFGS iterations over all rounds
    max_change: float = 0.0  # largest parameter change of the last round

    def probabilities(self, i: int, j: int) -> tuple[float, float, float]:
        """P(i beats j), P(j beats i), P(tie)."""
        d = float(self.strengths[i] - self.strengths[j])
        terms = np.array([d / 2, -d / 2, math.log(max(self.tie, 1e-300))])
        p = np.exp(terms - np.logaddexp.reduce(terms))
        return float(p[0]), float(p[1]), float(p[2])


def bradley_terry_davidson(
    first: Sequence[int] | np.ndarray, second: Sequence[int] | np.ndarray,
    outcome: Sequence[float] | np.ndarray, *, n_items: int, prior_precision: float = 0.0,
    weights: Sequence[float] | np.ndarray | None = None, max_iter: int = 1000,
    tol: float = 1e-6, max_rounds: int = 20,
) -> DavidsonFit:
    """Fit Davidson's model: P(i > j) = pi_i / Z, P(tie) = nu sqrt(pi_i pi_j) / Z.

    ``outcome`` is 1 when ``first`` won, 0 when ``second`` won and 0.5 for a tie. With
    theta = log pi and d = theta_i - theta_j the three probabilities are proportional to
    exp(d / 2), exp(-d / 2) and nu (Davidson 1970, eq. 2.1), so the log-likelihood is linear
    minus a log-sum-exp of affine functions of (theta, log nu): concave, and L-BFGS finds the
    global maximum. ``prior_precision`` > 0 adds a Gaussian N(0, 1 / precision) prior on each
    theta (MAP): it keeps estimates finite under perfect separation (a 3-0 vote) and pins each
    connected component of the comparison graph. With 0 it is the plain MLE, identified only for
    a connected graph in which no item wins or loses every comparison.

    Converged or flagged: L-BFGS stops on its own gradient and objective tests, which say
    nothing about how far the strengths still are from the optimum when the curvature is low
    (weakly connected graphs). So the fit is restarted from its own solution until a round
    moves no parameter (theta or log nu) by ``tol`` or more; ``converged`` is True only then,
    after at most ``max_rounds`` rounds. ``iterations`` counts L-BFGS iterations in all rounds.

    Written by hand because neither choix 0.4.1 nor crowd-kit 1.4's BradleyTerry / NoisyBT
    model ties. Rao & Kupper (1967) is the other classic tie model; Davidson's keeps the
    likelihood concave in these coordinates and puts the most tie mass on equal strengths.
    """
    i = np.asarray(first, dtype=np.int64)
    j = np.asarray(second, dtype=np.int64)
    y = np.asarray(outcome, dtype=float)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
    if not (i.shape == j.shape == y.shape == w.shape):
        raise ValueError("first, second, outcome and weights need one entry per comparison")
    if np.any((y != 0.0) & (y != 1.0) & (y != 0.5)):
        raise ValueError("outcome takes 1 (first won), 0 (second won) or 0.5 (tie)")
    win, loss, tie = (y == 1.0), (y == 0.0), (y == 0.5)
    lam = float(prior_precision)

    def negative_log_posterior(x: np.ndarray) -> tuple[float, np.ndarray]:
        theta, log_nu = x[:-1], x[-1]
        d = theta[i] - theta[j]
        log_z = np.logaddexp(np.logaddexp(d / 2, -d / 2), log_nu)
        ll = np.where(win, d / 2, np.where(loss, -d / 2, log_nu)) - log_z
        p_first, p_second = np.exp(d / 2 - log_z), np.exp(-d / 2 - log_z)
        p_tie = np.exp(log_nu - log_z)
        g_d = w * (0.5 * win - 0.5 * loss - (p_first - p_second) / 2)
        grad_theta = (np.bincount(i, g_d, minlength=n_items)
                      - np.bincount(j, g_d, minlength=n_items))
        grad_nu = float(np.sum(w * (tie - p_tie)))
        value = -float(np.sum(w * ll)) + lam / 2 * float(theta @ theta)
        return value, np.concatenate([-grad_theta + lam * theta, [-grad_nu]])

    # log nu is bounded: with no tie observed its MLE is -inf; e^-20 is zero for every purpose.
    x0 = np.zeros(n_items + 1)
    x0[-1] = math.log(0.5)
    bounds = [(None, None)] * n_items + [(-20.0, 5.0)]
    x, iterations, change, success = x0, 0, math.inf, False
    for _ in range(max(int(max_rounds), 1)):
        result = minimize(negative_log_posterior, x, jac=True, method="L-BFGS-B",
                          bounds=bounds,
                          options={"maxiter": max_iter, "gtol": 1e-8, "ftol": 1e-12})
        iterations += int(result.nit)
        # Strengths are identified up to a shift without a prior: compare centred values.
        step = (result.x - x)
        step[:-1] -= step[:-1].mean()
        change, x, success = float(np.abs(step).max(initial=0.0)), result.x, bool(result.success)
        if change < tol:
            break
    theta = x[:-1] - x[:-1].mean()
    penalty = lam / 2 * float(x[:-1] @ x[:-1])
    return DavidsonFit(strengths=theta, tie=float(math.exp(x[-1])),
                       log_likelihood=-(float(negative_log_posterior(x)[0]) - penalty),
                       converged=bool(success and change < tol), iterations=iterations,
                       max_change=change)


# --------------------------------------------------------------------------------------------
# Pairwise preference aggregation for snapshots
# --------------------------------------------------------------------------------------------

PAIRWISE_METHODS = ("majority", "gold_weighted", "dawid_skene", "dawid_skene_plain",
                    "bradley_terry")
# A method's keys are part of every stored snapshot's hashed header (re-resolved on read), so
# adding a key to an existing method would orphan its snapshots: add methods, not keys.
PAIRWISE_DEFAULTS: dict[str, dict[str, float | int]] = {
    "majority": {"margin_max": 3.0},
    "gold_weighted": {"margin_max": 3.0, "prior_strength": 2.0},
    "dawid_skene": {"margin_max": 3.0, "n_iter": 500, "tol": 1e-5},
    "dawid_skene_plain": {"margin_max": 3.0, "n_iter": 500, "tol": 1e-5},
    "bradley_terry": {"margin_max": 3.0, "prior_precision": 1.0},
}
# Gold answers of calibration comparisons: one choice, or the set a tolerance accepts.
PairGold = Mapping[Hashable, "str | Sequence[str]"]
_DIRECTIONAL = ("A", "B")
# A fitted strength difference below this is numerical noise, not a preference.
_BT_UNDECIDED = 1e-6


class PairVote(NamedTuple):
    comparison: Hashable
    annotator: Hashable
    choice: str  # canonical: "A", "B", "tie" or "both_bad"


@dataclass(frozen=True)
class PairwiseDecision:
    comparison: Hashable
    winner: str | None  # "A", "B", or None when undecided
    confidence: float  # P(winner is better | one is better), in [0.5, 1]; 0.5 when undecided
    margin: float  # clip(logit(confidence), 0, margin_max)
    weight: float  # 2 * confidence - 1
    n_judgments: int
    agreement: float  # share of all the comparison's judgments that chose the winner


def confidence_to_margin(confidence: float, *, margin_max: float = 3.0) -> float:
    """TRL margin for a confidence in [0.5, 1]: logit(confidence), clipped to [0, margin_max]."""
    c = min(max(float(confidence), 0.5), 1.0)
    return float(min(logit(c), margin_max)) if c < 1.0 else float(margin_max)


def confidence_to_weight(confidence: float) -> float:
    """Row weight for a confidence in [0.5, 1]: 2 * confidence - 1, in [0, 1]."""
    return float(2.0 * min(max(float(confidence), 0.5), 1.0) - 1.0)


def pairwise_params(method: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The method's defaults overlaid with ``params``; raises ValueError on an unknown method/key.

    Values are coerced to the defaults' types, so ``{"n_iter": "50"}`` and ``{"n_iter": 50}``
    resolve (and hash) the same.
    """
    if method not in PAIRWISE_DEFAULTS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(PAIRWISE_METHODS)}")
    defaults = PAIRWISE_DEFAULTS[method]
    params = dict(params or {})
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(f"unknown parameter(s) for {method}: {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(defaults))}")
    resolved: dict[str, Any] = {}
    for key, default in defaults.items():
        value = params.get(key, default)
        try:
            resolved[key] = type(default)(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{key} must be a {type(default).__name__}") from exc
        if not math.isfinite(resolved[key]) or resolved[key] < 0:
            raise ValueError(f"{key} must be a finite number >= 0")
    return resolved


def _by_comparison(votes: Iterable[PairVote]) -> dict[Hashable, list[PairVote]]:
    grouped: dict[Hashable, list[PairVote]] = defaultdict(list)
    for vote in votes:
        vote = PairVote(*vote)
        if vote.choice not in CHOICES:
            raise ValueError(f"unknown choice {vote.choice!r}")
        grouped[vote.comparison].append(vote)
    return dict(sorted(grouped.items(), key=lambda kv: (str(type(kv[0])), kv[0])))


def _decision(
    comparison: Hashable, votes: list[PairVote], winner: str | None, confidence: float,
    margin_max: float,
) -> PairwiseDecision:
    if winner is None:
        confidence = 0.5
    backing = sum(v.choice == winner for v in votes) if winner else 0
    return PairwiseDecision(
        comparison=comparison, winner=winner, confidence=float(confidence),
        margin=confidence_to_margin(confidence, margin_max=margin_max),
        weight=confidence_to_weight(confidence), n_judgments=len(votes),
        agreement=backing / len(votes) if winner else 0.0,
    )


def pairwise_majority(
    votes: Iterable[PairVote], *, margin_max: float = 3.0,
) -> list[PairwiseDecision]:
    """Majority of A vs B votes (``majority_vote``); equal counts are undecided.

    Confidence is (v_winner + 1) / (v_A + v_B + 2), the posterior mean of the share of
    directional votes backing the winner under a uniform prior, so 1-0 is not certainty.
    """
    out = []
    for comparison, group in _by_comparison(votes).items():
        outcome = majority_vote([v.choice for v in group])
        confidence = 0.5
        if outcome.winner is not None:
            backing = outcome.votes_a if outcome.winner == "A" else outcome.votes_b
            confidence = (backing + 1) / (outcome.votes_a + outcome.votes_b + 2)
        out.append(_decision(comparison, group, outcome.winner, confidence, margin_max))
    return out


def pairwise_gold_weights(
    gold_counts: Mapping[Hashable, tuple[int, int]], annotators: Iterable[Hashable], *,
    prior_strength: float = 2.0,
) -> dict[Hashable, float]:
    """Log-odds vote weight per annotator from (n_correct, n_gold) on calibration items.

    Same smoothing and weights as ``worker_gold_accuracy`` / ``gold_log_odds_weights`` with K = 2
    (a preference has two directions); annotators without gold count as the pooled average.
    Raises ValueError when no annotator has gold.
    """
    total = sum(n for _, n in gold_counts.values())
    if total == 0:
        raise ValueError("no calibration judgments with gold; gold weighting needs gold")
    pooled = sum(c for c, _ in gold_counts.values()) / total
    out = {}
    for annotator in annotators:
        c, n = gold_counts.get(annotator, (0, 0))
        p = (c + prior_strength * pooled) / (n + prior_strength)
        p = min(max(p, _ACC_CLIP[0]), _ACC_CLIP[1])
        out[annotator] = max(0.0, math.log(p / (1 - p)))
    return out


def pairwise_gold_weighted(
    votes: Iterable[PairVote], *, gold_counts: Mapping[Hashable, tuple[int, int]],
    prior_strength: float = 2.0, margin_max: float = 3.0,
) -> list[PairwiseDecision]:
    """Vote weighted by gold log-odds: S = sum of w (+1 for A, -1 for B; ties abstain).

    The winner is sign(S), undecided when S = 0 (e.g. only zero-weight annotators voted); the
    confidence sigmoid(|S|) is the posterior that the winner is right under the one-coin model.
    """
    grouped = _by_comparison(votes)
    annotators = {v.annotator for group in grouped.values() for v in group}
    weights = pairwise_gold_weights(gold_counts, annotators, prior_strength=prior_strength)
    out = []
    for comparison, group in grouped.items():
        score = sum(weights[v.annotator] * (1 if v.choice == "A" else -1)
                    for v in group if v.choice in _DIRECTIONAL)
        winner = None if abs(score) < 1e-12 else "A" if score > 0 else "B"
        out.append(_decision(comparison, group, winner, float(expit(abs(score))), margin_max))
    return out


def pairwise_dawid_skene(
    votes: Iterable[PairVote], *, anchor_votes: Iterable[PairVote] = (),
    gold: PairGold | None = None, n_iter: int = 500, tol: float = 1e-5, margin_max: float = 3.0,
) -> list[PairwiseDecision]:
    """Dawid-Skene over the four choices; the winner is the likelier of A and B.

    Tie and both-bad are classes of their own (an annotator's habit of saying tie is part of
    their confusion matrix) but, as in majority vote, not a decision. A comparison is undecided
    when P(A) = P(B), or when no judgment on it is directional: then P(A) versus P(B) would only
    echo the class prior. Confidence is P(winner) / (P(A) + P(B)).

    Gold-anchored when ``gold`` is given: ``anchor_votes`` (judgments on calibration
    comparisons) join the fit with each gold comparison's posterior clamped to what its gold
    accepts, so every annotator's confusion matrix is tied to gold. Decisions cover the
    comparisons of ``votes`` only. ``pairwise_dawid_skene_fit`` also returns the diagnostics.
    """
    return pairwise_dawid_skene_fit(votes, anchor_votes=anchor_votes, gold=gold,
                                    n_iter=n_iter, tol=tol, margin_max=margin_max)[0]


def pairwise_dawid_skene_fit(
    votes: Iterable[PairVote], *, anchor_votes: Iterable[PairVote] = (),
    gold: PairGold | None = None, n_iter: int = 500, tol: float = 1e-5, margin_max: float = 3.0,
) -> tuple[list[PairwiseDecision], dict[str, Any]]:
    """``pairwise_dawid_skene`` plus the fit's ``info`` (iterations, converged, ...)."""
    grouped = _by_comparison(votes)
    if not grouped:
        return [], {"iterations": 0, "converged": True, "tol": tol, "n_iter": int(n_iter)}
    anchors: list[PairVote] = []
    if gold is not None:
        anchors = [v for group in _by_comparison(anchor_votes).values() for v in group
                   if v.comparison in gold and v.comparison not in grouped]
    rows = [(v.comparison, v.annotator, v.choice)
            for g in grouped.values() for v in g] + [tuple(v) for v in anchors]
    frame = pd.DataFrame(rows, columns=list(LABEL_COLUMNS))
    anchored = None
    if gold is not None:
        anchored = {c: _gold_set(gold[c]) for c in {v.comparison for v in anchors}}
        for accepted in anchored.values():
            unknown = [choice for choice in accepted if choice not in CHOICES]
            if unknown:
                raise ValueError(f"unknown gold choice(s) {unknown}")
    result = dawid_skene_labels(frame, gold=anchored, n_iter=int(n_iter), tol=tol)
    probas = result.probas
    assert probas is not None
    p_a = probas["A"] if "A" in probas.columns else pd.Series(0.0, index=probas.index)
    p_b = probas["B"] if "B" in probas.columns else pd.Series(0.0, index=probas.index)
    out = []
    for comparison, group in grouped.items():
        a, b = float(p_a.loc[comparison]), float(p_b.loc[comparison])
        directional = any(v.choice in _DIRECTIONAL for v in group)
        if not directional or a + b <= 0 or abs(a - b) <= _TIE_TOL * (a + b):
            out.append(_decision(comparison, group, None, 0.5, margin_max))
        else:
            winner = "A" if a > b else "B"
            out.append(_decision(comparison, group, winner, max(a, b) / (a + b), margin_max))
    return out, dict(result.info)


def pairwise_bradley_terry(
    votes: Iterable[PairVote], *, items: Mapping[Hashable, tuple[Hashable, Hashable]],
    prior_precision: float = 1.0, margin_max: float = 3.0,
) -> tuple[list[PairwiseDecision], DavidsonFit, list[Hashable]]:
    """Davidson-Bradley-Terry over responses; each judgment is one observation.

    ``items`` maps a comparison to its (response A, response B) ids, so responses shared by
    several comparisons pool their evidence. Tie and both-bad judgments are Davidson ties
    (neither is preferred). Returns the decisions, the fit and the item ids in strength order.
    Confidence is sigmoid(|theta_A - theta_B|), P(winner beats loser | no tie) in the model.
    """
    grouped = _by_comparison(votes)
    missing = [c for c in grouped if c not in items]
    if missing:
        raise ValueError(f"no items for comparison(s) {missing[:5]}")
    ids = sorted({x for c in grouped for x in items[c]}, key=lambda x: (str(type(x)), x))
    index = {x: k for k, x in enumerate(ids)}
    first, second, outcome = [], [], []
    for comparison, group in grouped.items():
        a, b = items[comparison]
        for v in group:
            first.append(index[a])
            second.append(index[b])
            outcome.append(1.0 if v.choice == "A" else 0.0 if v.choice == "B" else 0.5)
    fit = bradley_terry_davidson(first, second, outcome, n_items=len(ids),
                                 prior_precision=prior_precision)
    out = []
    for comparison, group in grouped.items():
        a, b = items[comparison]
        d = float(fit.strengths[index[a]] - fit.strengths[index[b]])
        winner = None if abs(d) < _BT_UNDECIDED else "A" if d > 0 else "B"
        out.append(_decision(comparison, group, winner, float(expit(abs(d))), margin_max))
    return out, fit, ids


@dataclass(frozen=True)
class PairwiseFit:
    """Decisions of one pairwise method, its resolved params and its fit diagnostics."""

    decisions: list[PairwiseDecision]  # sorted by comparison
    params: dict[str, Any]
    # Iterative methods: iterations, converged, max_change, tol (Dawid-Skene also n_iter,
    # log_likelihood and anchored_on_gold); empty for majority and gold_weighted.
    info: dict[str, Any]


def aggregate_pairwise_fit(
    method: str, votes: Iterable[PairVote], *,
    items: Mapping[Hashable, tuple[Hashable, Hashable]] | None = None,
    gold_counts: Mapping[Hashable, tuple[int, int]] | None = None,
    anchor_votes: Iterable[PairVote] = (), gold: PairGold | None = None,
    params: Mapping[str, Any] | None = None,
) -> PairwiseFit:
    """Run one of ``PAIRWISE_METHODS``; return its decisions, params and fit diagnostics.

    gold_weighted needs ``gold_counts`` (annotator -> (n_correct, n_gold)); bradley_terry needs
    ``items`` (comparison -> (response A id, response B id)); dawid_skene (gold-anchored) uses
    ``anchor_votes`` and ``gold`` (calibration comparison -> accepted choices) and, without
    them, fits like dawid_skene_plain with ``info["anchored_on_gold"] == 0``;
    dawid_skene_plain ignores gold. Raises ValueError on bad input.
    """
    resolved = pairwise_params(method, params)
    votes = list(votes)
    if method == "majority":
        return PairwiseFit(pairwise_majority(votes, **resolved), resolved, {})
    if method == "gold_weighted":
        if gold_counts is None:
            raise ValueError("gold_weighted needs gold_counts")
        return PairwiseFit(pairwise_gold_weighted(votes, gold_counts=gold_counts, **resolved),
                           resolved, {})
    if method in ("dawid_skene", "dawid_skene_plain"):
        anchored = method == "dawid_skene"
        decisions, info = pairwise_dawid_skene_fit(
            votes, anchor_votes=anchor_votes if anchored else (),
            gold=(gold or {}) if anchored else None, **resolved)
        return PairwiseFit(decisions, resolved, info)
    if items is None:
        raise ValueError("bradley_terry needs items")
    if not votes:
        return PairwiseFit([], resolved, {"iterations": 0, "converged": True})
    decisions, fit, _ = pairwise_bradley_terry(votes, items=items, **resolved)
    return PairwiseFit(decisions, resolved, {"iterations": fit.iterations,
                                             "converged": fit.converged,
                                             "max_change": fit.max_change})


def aggregate_pairwise(
    method: str, votes: Iterable[PairVote], *,
    items: Mapping[Hashable, tuple[Hashable, Hashable]] | None = None,
    gold_counts: Mapping[Hashable, tuple[int, int]] | None = None,
    anchor_votes: Iterable[PairVote] = (), gold: PairGold | None = None,
    params: Mapping[str, Any] | None = None,
) -> tuple[list[PairwiseDecision], dict[str, Any]]:
    """``aggregate_pairwise_fit`` without the diagnostics: (decisions, resolved params)."""
    fit = aggregate_pairwise_fit(method, votes, items=items, gold_counts=gold_counts,
                                 anchor_votes=anchor_votes, gold=gold, params=params)
    return fit.decisions, fit.params
