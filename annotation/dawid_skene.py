"""The one Dawid-Skene EM of the project: integer codes in, posteriors and confusions out.

Dawid & Skene (1979): each item has a latent true class t drawn from the class prior pi; each
worker w answers o with probability errors[w, o, t]. EM alternates the posterior of every
item's class (E-step) and the prior and confusion matrices given those posteriors (M-step).
Pure numpy on integer codes: every sum over rows is an ``np.bincount``, so a step costs a few
passes over the rows with no Python loop over workers, items or rows. Callers
(``annotation.quality`` for competence, epsilon and drift's peer evidence;
``annotation.aggregation`` for ``crowd_eval`` and the pairwise snapshots) translate their ids
to codes and read the result back; none of them runs an EM of its own.

**Gold anchoring** (semi-supervised EM). ``gold`` gives, per item, the set of classes its gold
accepts (one label, or a tolerance such as "A or a tie"); an item whose set is not every class
is *anchored*: its posterior is restricted to (renormalised over) that set in every E-step, so
the workers' answers on it count in their confusion matrices as answers to a known truth, and
no consensus can outvote it. Anchored items do not use the class prior (gold items are built to
a recipe, not drawn from the campaign's mix), and the prior is estimated on the free items
only. The objective EM ascends is then

    L = sum_free log sum_t pi_t prod_rows e[w, o, t]
        + sum_anchored log sum_{t in S} prod_rows e[w, o, t]

(plus the smoothing prior's log density, below) and the M-step below is its exact maximiser,
so L never falls (up to the 1e-10 floor).

``truth`` restricts the classes an item's truth may take (the quality fit allows A and B: tie and
both-bad stay answers, not truths); the classes gold accepts are always allowed. Only the
allowed classes are carried through EM, which halves a step's cost for preferences.

**Acceleration: SQUAREM** (Varadhan & Roland 2008, "Simple and globally convergent methods for
accelerating the convergence of any EM algorithm", Scand. J. Statist. 35:335-353, scheme S3).
EM is the fixed-point map theta -> F(theta) = M(E(theta)) on theta = (priors, confusions). Its
rate is the largest fraction of missing information, close to 1 when items have few answers
(the 1M-judgment campaign had ~3 per item: plain EM ran 100 iterations without converging).
One SQUAREM iteration takes two EM steps, r = F(theta) - theta, v = F(F(theta)) - 2 F(theta) +
theta, steps to theta' = theta + 2 a r + a^2 v with a = |r| / |v| (kept in [1, a_max]; a = 1
gives F(F(theta)) exactly), projects theta' back onto the simplex, and takes one more EM step
from it. Monotonicity safeguard: theta' is kept only if L(theta') >= L(theta) (then
L(F(theta')) >= L(theta), EM being monotone); otherwise the iteration falls back to the plain
F(F(theta)) and a_max shrinks. a_max grows 4x each time the step hits it (the package's default
``mstep = 4``). ``iterations`` counts SQUAREM iterations, ``em_steps`` the EM maps evaluated
(about 3 per iteration).

**Convergence** (``tol``): the plain EM step from the current iterate (its fixed-point residual,
the same whether or not EM is accelerated) must move

* no item posterior by ``tol`` or more (what callers read: winners, confidences, consensus),
* no class prior by ``tol`` or more,
* no confusion cell by ``tol`` or more *after weighting each column errors[w, :, t] by
  n / (1 + n)*, where n is the expected number of w's answers to class-t items.

The weight is why the criterion is usable at scale: a column backed by a fraction of an answer
(an annotator with 3 answers, all on near-certain A items, has a "B" column resting on ~1e-3
expected answers) is a ratio of tiny numbers that keeps swinging while nothing that depends on
it moves; weighted, its change is the change in expected counts, which the posteriors already
bound. A column with many answers weighs ~1 and must itself settle to ``tol``. A criterion on
the log-likelihood alone would stop on a plateau where parameters still drift; on raw cells
alone it is held hostage by the thinnest of 10,000 annotators. ``max_change`` is the
criterion's value at the last step; ``converged`` is False when ``n_iter`` came first.

**Smoothing** (``smoothing``, a fixed Dirichlet prior: that many pseudo-answers added to every
answer a worker gave, in each truth column; MAP-EM, the objective gains smoothing x sum of the
log cells). Why: at maximum likelihood on sparse campaigns (about 3 answers per item, tens per
annotator) many confusion cells head to 0 (7% of annotators on the 100,000-judgment benchmark
frame), the maximum sits on the boundary, and EM converges *sublinearly* there, which no
extrapolation fixes: SQUAREM needed 133 iterations (398 EM steps) at 100,000 judgments and
had not converged after 100 at 1,000,000. One pseudo-answer keeps the maximum inside: 12 and
15 iterations (35 and 44 EM steps). ``annotation.quality`` uses 1 and reports what it does to
recovery; 0 (the default here) is crowd-kit's maximum likelihood.

``stop="crowdkit"`` (plain EM only) stops on crowd-kit 1.4's per-row bound instead; it exists so
a test can check this EM against ``crowdkit.aggregation.DawidSkene`` step for step.

Why not a library: crowd-kit's DawidSkene has no anchoring and stops on a miscomputed bound
(``annotation.aggregation``'s docstring), and its pandas joins cost 7x more per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

# Floor on observed confusion cells, as crowd-kit's DawidSkene (_EPS), so logs stay finite.
EPS = 1e-10
DsStop = Literal["params", "crowdkit"]


@dataclass(frozen=True)
class DawidSkeneEM:
    """Result of :func:`dawid_skene_fit`. Columns follow the class codes 0..n_classes-1.

    ``posteriors[i, t]``: P(truth of item i = t) (0 outside the allowed classes and, for an
    anchored item, outside its gold set); ``priors[t]``: class prior of the free items (0
    outside the allowed classes); ``errors[w, o, t]``: P(w answers o | truth t), zero where w
    never answered o (a disallowed column t is uniform over w's answers: no evidence);
    ``anchored``: items clamped to gold. ``log_likelihood`` is the objective of the module
    docstring (with ``smoothing``, the prior's log density included; with ``pool_prior``,
    the likelihood part only) at the parameters the returned posteriors were computed from;
    ``log_likelihood_fell`` (never set with ``pool_prior``, whose target moves) True would
    mean a bug: it says whether L fell between the iterates EM (or SQUAREM) accepted.
    """

    posteriors: np.ndarray
    priors: np.ndarray
    errors: np.ndarray
    anchored: np.ndarray
    iterations: int
    em_steps: int
    converged: bool
    max_change: float
    log_likelihood: float
    log_likelihood_fell: bool
    accelerated: bool


def dawid_skene_fit(
    *, worker: np.ndarray, item: np.ndarray, label: np.ndarray, n_workers: int, n_items: int,
    n_classes: int, truth: np.ndarray | None = None, gold: np.ndarray | None = None,
    gold_init: bool = False, pool_prior: float = 0.0, smoothing: float = 0.0,
    n_iter: int = 100, tol: float = 1e-5, accelerate: bool = True, stop: DsStop = "params",
) -> DawidSkeneEM:
    """Fit Dawid-Skene by (SQUAREM-accelerated) EM on integer codes; see the module docstring.

    ``worker``, ``item``, ``label``: one entry per answer, codes in 0..n_workers-1,
    0..n_items-1, 0..n_classes-1 (one answer per worker and item is the model's assumption;
    callers dedupe). ``truth`` (bool, n_classes): classes a truth may take (None: all).
    ``gold`` (bool, n_items x n_classes): classes each item's gold accepts; a row of all True
    is a free item. Starts from majority-vote shares (restricted to what is allowed), or with
    ``gold_init`` from confusion matrices of the anchored items alone, shrunk toward the pool
    by one pseudo-answer (so a biased majority does not write the start). ``pool_prior`` > 0
    adds that many pseudo-answers toward the pool's confusion column to every column (MAP);
    its target moves with the pool, so such fits run plain EM. ``smoothing`` > 0 adds that
    many pseudo-answers to every answer a worker gave, in every truth column (a fixed
    Dirichlet prior: MAP-EM, accelerated; ignored with ``pool_prior``). ``n_iter`` caps the
    (SQUAREM) iterations. Raises ValueError on codes out of range or a gold row accepting
    nothing.
    """
    worker = np.asarray(worker, np.int64)
    item = np.asarray(item, np.int64)
    label = np.asarray(label, np.int64)
    k_all = int(n_classes)
    if not worker.shape == item.shape == label.shape:
        raise ValueError("worker, item and label need one entry per answer")
    if worker.size and (worker.min() < 0 or worker.max() >= n_workers or item.min() < 0
                        or item.max() >= n_items or label.min() < 0 or label.max() >= k_all):
        raise ValueError("codes out of range")
    allowed_cls = np.ones(k_all, bool) if truth is None else np.asarray(truth, bool).copy()
    anchored = np.zeros(n_items, bool)
    if gold is not None:
        gold = np.asarray(gold, bool)
        if gold.shape != (n_items, k_all):
            raise ValueError("gold must be n_items x n_classes")
        anchored = ~gold.all(axis=1)
        if (~gold.any(axis=1)).any():
            raise ValueError("a gold row accepts no class")
        allowed_cls |= gold[anchored].any(axis=0)  # what gold says can be true is allowed
    if not allowed_cls.any():
        allowed_cls[:] = True
    cols = np.flatnonzero(allowed_cls)
    kt = cols.size
    if stop == "crowdkit" or pool_prior > 0:
        accelerate = False
    if worker.size == 0:
        return DawidSkeneEM(
            posteriors=np.zeros((n_items, k_all)), priors=np.zeros(k_all),
            errors=np.zeros((n_workers, k_all, k_all)), anchored=anchored, iterations=0,
            em_steps=0, converged=True, max_change=0.0, log_likelihood=0.0,
            log_likelihood_fell=False, accelerated=accelerate)

    n_cells = n_workers * k_all
    cell = worker * k_all + label  # (worker, answer) cell of each row
    cell_count = np.bincount(cell, minlength=n_cells).astype(float)
    present = cell_count > 0
    n_rows = worker.size
    any_anchor = bool(anchored.any())
    # log of the weight of each truth per item: log prior (added per E-step) for free items,
    # 0 / -inf (in the gold set or not) for anchored ones.
    anchor_mask = None
    if any_anchor:
        anchor_mask = np.where(gold[np.ix_(anchored, cols)], 0.0, -np.inf)
    free = ~anchored if (~anchored).any() else np.ones(n_items, bool)
    n_free = int(free.sum())
    # Per item and truth: 0, or -inf outside an anchored item's gold set; the log prior is
    # added on free items (``free_f``) in each E-step. Dense arrays, no fancy indexing per step.
    anchor_add = np.zeros((kt, n_items))
    if any_anchor:
        anchor_add[:, anchored] = anchor_mask.T
    free_f = free.astype(float)

    def m_step(post: np.ndarray, prior: float = pool_prior, *, partial: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(priors, errors (n_cells, kt), raw expected counts (n_cells, kt)) from posteriors
        laid out truth x item (each truth's row contiguous, so the gathers stream).
        ``partial``: some items' posteriors are all zero (the gold start), so every column is
        counted; otherwise the last one is what the others leave."""
        raw = np.empty((n_cells, kt))
        for j in range(kt if partial else kt - 1):
            raw[:, j] = np.bincount(cell, weights=np.take(post[j], item), minlength=n_cells)
        if not partial:
            # Posteriors sum to 1 over the allowed classes: the last column is what is left,
            # one pass over the rows saved (rounding ~1e-16 x count, far below the floor).
            raw[:, kt - 1] = cell_count - raw[:, : kt - 1].sum(axis=1)
        if prior > 0:
            cube = raw.reshape(n_workers, k_all, kt)
            pool = cube.sum(axis=0) + EPS
            pool /= pool.sum(axis=0, keepdims=True)  # P(answer o | truth t) over the pool
            err = np.maximum(cube + prior * pool[None], EPS).reshape(n_cells, kt)
        else:
            err = np.where(present[:, None], np.maximum(raw + smoothing, EPS), 0.0)
        priors = np.maximum((post @ free_f) / n_free, EPS)
        return priors, _normalise(err, n_workers, k_all), raw

    def e_step(priors: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, float]:
        """(posteriors (kt, n_items), log-likelihood L)."""
        with np.errstate(divide="ignore", invalid="ignore"):  # absent cells: log 0, unused
            log_err = np.log(err)
            diffs = [np.where(present, log_err[:, j] - log_err[:, kt - 1], 0.0)
                     for j in range(kt - 1)]
        ref = kt - 1  # log-likelihoods relative to the last class: kt - 1 passes over rows
        z = anchor_add + np.log(priors)[:, None] * free_f[None, :]
        for j in range(ref):
            z[j] += np.bincount(item, weights=np.take(diffs[j], cell), minlength=n_items)
        # sum over rows of log e[w, o, ref], by cell (absent cells have no rows).
        total_ref = float(cell_count[present] @ log_err[present, ref])
        if smoothing > 0:  # the Dirichlet prior's log density: MAP-EM ascends L + this
            total_ref += smoothing * float(log_err[present].sum())
        if kt == 2:  # preferences: one logaddexp and one exp instead of max/exp/sum/log
            lse = np.logaddexp(z[0], z[1])
            p = np.empty_like(z)
            np.exp(z[0] - lse, out=p[0])
            np.subtract(1.0, p[0], out=p[1])
            return p, total_ref + float(lse.sum())
        top = z.max(axis=0, keepdims=True)
        lik = np.exp(z - top)
        norm = lik.sum(axis=0, keepdims=True)
        loglik = total_ref + float(top.sum() + np.log(norm).sum())
        return lik / norm, loglik

    # Start: majority-vote shares over the allowed classes (gold items within their set).
    shares = np.bincount(item * k_all + label, minlength=n_items * k_all)
    post = shares.reshape(n_items, k_all)[:, cols].astype(float)
    if any_anchor:
        post[anchored] *= np.isfinite(anchor_mask)
    empty = post.sum(axis=1) == 0  # answered only outside the allowed classes
    if empty.any():
        post[empty] = 1.0
        if any_anchor:
            post[empty & anchored] = np.isfinite(anchor_mask[empty[anchored]])
    post = np.ascontiguousarray((post / post.sum(axis=1, keepdims=True)).T)
    priors, err, _ = m_step(post)
    if gold_init and any_anchor:
        # Confusions from what gold says about each annotator, shrunk toward the pool (an
        # annotator without gold starts as the pool does), not from the majority.
        _, err, _ = m_step(np.where(anchored[None, :], post, 0.0), prior=max(pool_prior, 1.0),
                           partial=True)

    def change(p_old: np.ndarray, p_new: np.ndarray, th_old: tuple, th_new: tuple,
               raw: np.ndarray) -> float:
        n = raw.reshape(n_workers, k_all, kt).sum(axis=1, keepdims=True)
        d_err = np.abs(th_new[1] - th_old[1]).reshape(n_workers, k_all, kt) * (n / (1.0 + n))
        return float(max(np.abs(p_new - p_old).max(), np.abs(th_new[0] - th_old[0]).max(),
                         d_err.max()))

    theta = (priors, err)
    history: list[float] = []
    converged, moved, iterations, em_steps, loglik = False, np.inf, 0, 0, -np.inf
    if not accelerate:
        prev_post, loss = post, -np.inf
        for iterations in range(1, int(n_iter) + 1):  # noqa: B007 (it is reported)
            post, loglik = e_step(*theta)
            new_priors, new_err, raw = m_step(post)
            em_steps += 1
            history.append(loglik)
            if stop == "crowdkit":
                theta = (new_priors, new_err)
                # crowd-kit's bound: E_q[log p(labels, z)] with the log prior once per *row*
                # (its join repeats it), plus the entropy of q. Kept only to reproduce its stop.
                with np.errstate(divide="ignore"):
                    log_err = np.log(new_err)
                joint = float(np.sum(raw[present] * log_err[present]))
                per_item = np.bincount(item, minlength=n_items).astype(float)
                joint += float((post @ per_item) @ np.log(new_priors))
                clipped = np.maximum(post, EPS)
                new_loss = (joint - float(np.sum(clipped * np.log(clipped)))) / n_rows
                if new_loss - loss < tol:
                    converged = new_loss >= loss  # a fall is crowd-kit's silent early stop
                    break
                loss = new_loss
                continue
            moved = change(prev_post, post, theta, (new_priors, new_err), raw)
            theta, prev_post = (new_priors, new_err), post
            if moved < tol:
                converged = True
                break
    else:
        step_max = 1.0
        for iterations in range(1, int(n_iter) + 1):  # noqa: B007 (it is reported)
            p0, l0 = e_step(*theta)
            th1 = m_step(p0)
            p1, l1 = e_step(th1[0], th1[1])
            th2 = m_step(p1)
            em_steps += 2
            history.append(l0)  # L at each accepted iterate: the safeguard keeps it rising
            moved = change(p0, p1, th1[:2], th2[:2], th2[2])
            if moved < tol:
                post, theta, loglik, converged = p1, th2[:2], l1, True
                break
            r = [a - b for a, b in zip(th1[:2], theta, strict=True)]
            v = [c - 2 * a + b for a, b, c in zip(th1[:2], theta, th2[:2], strict=True)]
            rr = sum(float(np.vdot(x, x)) for x in r)
            vv = sum(float(np.vdot(x, x)) for x in v)
            alpha = min(max(np.sqrt(rr / vv), 1.0), step_max) if vv > 0 else 1.0
            trial = (_project_priors(theta[0] + 2 * alpha * r[0] + alpha ** 2 * v[0]),
                     _normalise(np.where(present[:, None], np.maximum(
                         theta[1] + 2 * alpha * r[1] + alpha ** 2 * v[1], EPS), 0.0),
                         n_workers, k_all))
            p_t, l_t = e_step(*trial)
            em_steps += 1
            if np.isfinite(l_t) and l_t >= l0 - 1e-12 * abs(l0):
                post, loglik = p_t, l_t
                theta = m_step(p_t)[:2]
                if alpha >= step_max:
                    step_max *= 4.0
            else:  # the extrapolation lowered L: keep the two plain EM steps
                post, loglik = p1, l1
                theta = th2[:2]
                if alpha >= step_max:
                    step_max = max(1.0, step_max / 4.0)
    fell = any(b < a - 1e-9 * max(1.0, abs(a)) for a, b in zip(history, history[1:],
                                                                  strict=False))
    return _result(post, theta, cols, present, anchored, n_workers, k_all,
                   iterations=iterations, em_steps=em_steps, converged=converged,
                   max_change=float(moved), loglik=loglik if history else 0.0,
                   fell=fell and pool_prior <= 0, accelerated=accelerate)


def _normalise(err: np.ndarray, n_workers: int, k_all: int) -> np.ndarray:
    """Each column errors[w, :, t] to sum 1 (a worker with no rows keeps zeros)."""
    kt = err.shape[1]
    cube = err.reshape(n_workers, k_all, kt)
    total = cube.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        cube = np.where(total > 0, cube / total, 0.0)
    return cube.reshape(n_workers * k_all, kt)


def _project_priors(priors: np.ndarray) -> np.ndarray:
    priors = np.maximum(priors, EPS)
    return priors / priors.sum()


def _result(
    post: np.ndarray, theta: tuple[np.ndarray, np.ndarray], cols: np.ndarray,
    present: np.ndarray, anchored: np.ndarray, n_workers: int, k_all: int, *,
    iterations: int, em_steps: int, converged: bool, max_change: float, loglik: float,
    fell: bool, accelerated: bool,
) -> DawidSkeneEM:
    """Spread the allowed-class columns back to all classes."""
    n_items = post.shape[1]
    posteriors = np.zeros((n_items, k_all))
    posteriors[:, cols] = post.T
    priors = np.zeros(k_all)
    priors[cols] = theta[0]
    # A disallowed truth column has no evidence: uniform over the answers the worker gave.
    seen = present.reshape(n_workers, k_all).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        uniform = np.nan_to_num(seen / seen.sum(axis=1, keepdims=True))
    errors = np.repeat(uniform[:, :, None], k_all, axis=2)
    errors[:, :, cols] = theta[1].reshape(n_workers, k_all, cols.size)
    return DawidSkeneEM(
        posteriors=posteriors, priors=priors, errors=errors, anchored=anchored,
        iterations=int(iterations), em_steps=int(em_steps), converged=bool(converged),
        max_change=float(max_change), log_likelihood=float(loglik),
        log_likelihood_fell=bool(fell), accelerated=accelerated)
