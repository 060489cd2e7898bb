"""Iterative aggregation converges or says it did not; MACE is blind to worker names and order;
gold-anchored Dawid-Skene recovers a truth that a crowd with a shared bias outvotes.

No database: pure math on synthetic crowds with a known truth.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotation import aggregation as agg
from annotation.aggregation import PairVote

CROWDKIT_1_4_2 = importlib.metadata.version("crowd-kit") == "1.4.2"


def _one_coin_crowd(
    seed: int, *, n_tasks: int = 300, n_workers: int = 20, per_task: int = 4,
    prior: tuple[float, ...] = (0.7, 0.1, 0.1, 0.1), accuracy: tuple[float, float] = (0.3, 0.9),
) -> tuple[pd.DataFrame, pd.Series]:
    """Integer-coded K-class crowd: worker accuracy uniform in ``accuracy``, else a uniform label
    (so the noise is 10-70%); small pools (4 labels a task), imbalanced classes."""
    rng = np.random.default_rng(seed)
    k = len(prior)
    truth = rng.choice(k, size=n_tasks, p=np.asarray(prior) / sum(prior))
    acc = rng.uniform(*accuracy, n_workers)
    rows = []
    for t in range(n_tasks):
        for w in rng.choice(n_workers, per_task, replace=False):
            rows.append((t, int(w), int(truth[t] if rng.random() < acc[w] else rng.integers(k))))
    return pd.DataFrame(rows, columns=["task", "worker", "label"]), pd.Series(truth)


# ---------------------------------------------------------------- converged or flagged


@pytest.mark.skipif(not CROWDKIT_1_4_2, reason="documents crowd-kit 1.4.2's stopping rule")
def test_crowdkit_stops_when_its_bound_falls_while_our_em_runs_to_convergence():
    """crowd-kit's DawidSkene ends the fit the first time its (miscomputed) bound falls. The same
    EM run for the same number of steps is, by our parameter test, far from converged; run on,
    it converges, and its likelihood never falls on the way."""
    from crowdkit.aggregation import DawidSkene

    data, truth = _one_coin_crowd(7)
    ck = DawidSkene(n_iter=100).fit(data)
    steps = len(ck.loss_history_)
    assert ck.loss_history_[-1] < ck.loss_history_[-2]  # the fall that stopped it
    assert steps < 100  # ... long before its own cap

    # Plain EM (no SQUAREM) walks crowd-kit's sequence of iterates.
    stopped = agg.dawid_skene_labels(data, n_iter=steps, accelerate=False)
    # Same algorithm, same start: after the same steps the posteriors agree with crowd-kit's.
    ck_probas = ck.probas_.sort_index().reindex(columns=range(4), fill_value=0.0).to_numpy()
    ours = stopped.probas.sort_index().reindex(columns=range(4), fill_value=0.0).to_numpy()
    assert np.abs(ck_probas - ours).max() < 1e-6
    assert stopped.info["converged"] is False
    assert stopped.info["max_change"] > 100 * stopped.info["tol"]  # still moving a lot

    full = agg.dawid_skene_labels(data, accelerate=False)
    assert full.info["converged"] is True
    assert full.info["iterations"] > 3 * steps
    assert full.info["max_change"] < full.info["tol"]
    assert full.info["log_likelihood"] > stopped.info["log_likelihood"]
    # A real change, not rounding: some tasks change their label between the two.
    assert (full.labels.sort_index() != stopped.labels.sort_index()).sum() >= 3
    accuracy = {name: r.accuracy(truth)["accuracy"] for name, r in
                (("stopped", stopped), ("converged", full))}
    assert all(0.75 < a < 0.95 for a in accuracy.values()), accuracy


def test_dawid_skene_em_likelihood_never_falls_and_cap_is_flagged():
    data, _ = _one_coin_crowd(2, per_task=3, n_workers=10, prior=(0.55, 0.25, 0.15, 0.05))
    coded = agg._encode(data)
    fit = agg.dawid_skene_em(coded.task, coded.worker, coded.label, n_tasks=len(coded.tasks),
                             n_workers=len(coded.workers), n_classes=len(coded.order))
    assert fit.converged and not fit.log_likelihood_fell
    capped = agg.dawid_skene_em(coded.task, coded.worker, coded.label,
                                n_tasks=len(coded.tasks), n_workers=len(coded.workers),
                                n_classes=len(coded.order), n_iter=3)
    assert (capped.iterations, capped.converged) == (3, False)
    assert capped.log_likelihood < fit.log_likelihood


def test_bradley_terry_restarts_until_the_strengths_stop_moving():
    rng = np.random.default_rng(0)
    theta = rng.normal(0, 1.5, 40)
    i, j = rng.integers(0, 40, 600), rng.integers(0, 40, 600)
    keep = i != j
    i, j = i[keep], j[keep]
    p = 1 / (1 + np.exp(-(theta[i] - theta[j])))
    outcome = (rng.random(len(i)) < p).astype(float)
    fit = agg.bradley_terry_davidson(i, j, outcome, n_items=40, prior_precision=0.1)
    assert fit.converged and fit.iterations > 0 and fit.max_change < 1e-6
    assert np.corrcoef(fit.strengths, theta)[0, 1] > 0.9
    capped = agg.bradley_terry_davidson(i, j, outcome, n_items=40, prior_precision=0.1,
                                        max_iter=2, max_rounds=1)
    assert capped.converged is False and capped.iterations <= 2


def test_pairwise_fit_info_reports_iterations_and_convergence():
    votes = [PairVote(c, f"u{k}", "A" if (c + k) % 4 else "B") for c in range(20)
             for k in range(3)]
    items = {c: (f"r{c}", f"s{c}") for c in range(20)}
    for method in ("dawid_skene", "dawid_skene_plain", "bradley_terry"):
        fit = agg.aggregate_pairwise_fit(method, votes, items=items)
        assert fit.info["converged"] is True and fit.info["iterations"] >= 1, method
    assert agg.aggregate_pairwise_fit("majority", votes).info == {}
    assert agg.aggregate_pairwise_fit("dawid_skene", votes).info["anchored_on_gold"] == 0


# ---------------------------------------------------------------- MACE and worker order


def _rename_and_shuffle(data: pd.DataFrame, names: list, order: list[int]) -> pd.DataFrame:
    mapping = dict(zip(sorted(data["worker"].unique()), names, strict=True))
    return data.iloc[order].assign(worker=lambda f: f["worker"].map(mapping)), mapping


@pytest.fixture(scope="module")
def binary_crowd() -> tuple[pd.DataFrame, pd.Series]:
    data, truth = _one_coin_crowd(11, n_tasks=120, n_workers=12, per_task=5, prior=(0.5, 0.5),
                                  accuracy=(0.45, 0.95))
    return data, truth


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mace_gives_the_same_answer_under_any_renaming_and_reordering(binary_crowd, data):
    labels, _ = binary_crowd
    base = agg.mace_labels(labels)
    order = data.draw(st.permutations(range(len(labels))))
    names = data.draw(st.lists(st.one_of(st.integers(-10**6, 10**6), st.text(min_size=1,
                                                                               max_size=6)),
                               min_size=12, max_size=12, unique_by=str))
    if len({type(n) for n in names}) > 1:
        names = [str(n) for n in names]  # ids of one type, as any real file has
    shuffled, mapping = _rename_and_shuffle(labels, names, list(order))
    other = agg.mace_labels(shuffled)
    assert other.info["converged"] and other.info["iterations"] == base.info["iterations"]
    probas = other.probas.reindex(index=base.probas.index, columns=base.probas.columns)
    assert np.abs(probas.to_numpy() - base.probas.to_numpy()).max() < 1e-9
    assert (other.labels.reindex(base.labels.index) == base.labels).all()
    renamed = base.worker_quality.rename(index=mapping)
    assert np.allclose(other.worker_quality.reindex(renamed.index), renamed, atol=1e-9)


@pytest.mark.skipif(not CROWDKIT_1_4_2, reason="documents crowd-kit 1.4.2's MACE")
def test_crowdkit_mace_changes_its_answer_when_workers_are_renamed(binary_crowd):
    """The upstream bug: strategy rows sorted by worker id, read by first-appearance position."""
    from crowdkit.aggregation import MACE

    labels, truth = binary_crowd
    # Reverse ids: sorted order is then the reverse of first appearance.
    first_seen = list(pd.unique(labels["worker"]))
    names = {w: 100 - n for n, w in enumerate(first_seen)}
    renamed = labels.assign(worker=labels["worker"].map(names))
    in_order = labels.assign(worker=labels["worker"].map({w: n for n, w in
                                                         enumerate(first_seen)}))
    fits = [MACE(n_restarts=1, n_iter=50, random_state=0).fit(f).probas_.sort_index()
            for f in (in_order, renamed)]
    assert np.abs(fits[0].to_numpy() - fits[1][fits[0].columns].to_numpy()).max() > 0.05
    ours = agg.mace_labels(labels).accuracy(truth)["accuracy"]
    assert ours >= 0.9


def test_dawid_skene_is_also_blind_to_worker_names_and_order(binary_crowd):
    labels, _ = binary_crowd
    base = agg.dawid_skene_labels(labels)
    order = np.random.default_rng(3).permutation(len(labels))
    shuffled, _ = _rename_and_shuffle(labels, [f"w{n}" for n in range(12)][::-1], list(order))
    other = agg.dawid_skene_labels(shuffled)
    probas = other.probas.reindex(index=base.probas.index, columns=base.probas.columns)
    assert np.abs(probas.to_numpy() - base.probas.to_numpy()).max() < 1e-9


# ---------------------------------------------------------------- gold-anchored Dawid-Skene


def _confusing_crowd(seed: int, *, n_tasks: int = 400, gold_share: float = 0.2
                     ) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Three classes; 7 crowd workers and 3 experts, 5 labels a task. On 60% of the class-b
    tasks (a shared, item-level confusion) each crowd worker says c with probability 0.85, so
    the crowd turns b into c about half the time, together; otherwise the crowd is 85% and the
    experts 90% accurate. Gold on the first ``gold_share`` of the tasks."""
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c"]
    truth = rng.choice(classes, n_tasks)
    workers = [f"crowd{i}" for i in range(7)] + [f"expert{i}" for i in range(3)]
    rows = []
    for t in range(n_tasks):
        confusing = truth[t] == "b" and rng.random() < 0.6
        for w in rng.choice(workers, 5, replace=False):
            crowd = w.startswith("crowd")
            if crowd and confusing and rng.random() < 0.85:
                label = "c"
            elif rng.random() < (0.85 if crowd else 0.9):
                label = truth[t]
            else:
                label = rng.choice([c for c in classes if c != truth[t]])
            rows.append((f"t{t}", w, label))
    truth = pd.Series(truth, index=[f"t{t}" for t in range(n_tasks)])
    return pd.DataFrame(rows, columns=["task", "worker", "label"]), truth, \
        truth.iloc[: int(gold_share * n_tasks)]


def test_gold_anchored_dawid_skene_recovers_what_a_shared_bias_hides():
    """Scored on the tasks without gold. Measured (seeds 0-3): plain 0.872 0.803 0.794 0.806,
    anchored 0.925 0.825 0.931 0.922; majority 0.881 0.825 0.823 0.836."""
    plain, anchored, flips = [], [], []
    for seed in range(4):
        data, truth, gold = _confusing_crowd(seed)
        rest = truth.drop(gold.index)
        crowd_on_b = data[data["worker"].str.startswith("crowd")
                          & data["task"].map(truth).eq("b")]
        flips.append((crowd_on_b["label"] == "c").mean())
        plain_fit = agg.dawid_skene_labels(data)
        anchored_fit = agg.dawid_skene_labels(data, gold=gold)
        assert anchored_fit.method == "dawid_skene_gold"
        assert anchored_fit.info["anchored_on_gold"] == len(gold)
        assert plain_fit.info["converged"] and anchored_fit.info["converged"]
        # Anchored tasks return their gold.
        assert (anchored_fit.labels.loc[gold.index] == gold).all()
        plain.append(plain_fit.accuracy(rest)["accuracy"])
        anchored.append(anchored_fit.accuracy(rest)["accuracy"])
        # On the confusing class, plain DS sides with the crowd: the experts look wrong to it.
        b_tasks = rest[rest == "b"].index
        assert (plain_fit.labels.loc[b_tasks] == "b").mean() < \
            (anchored_fit.labels.loc[b_tasks] == "b").mean()
    assert min(flips) > 0.3  # the crowd flips b to c well over 30% of the time
    assert np.mean(anchored) - np.mean(plain) > 0.05
    assert np.mean(anchored) > 0.88 and np.mean(plain) < 0.84


def test_gold_anchored_cross_fit_never_scores_a_task_with_its_own_gold():
    data, truth, gold = _confusing_crowd(0, n_tasks=200, gold_share=0.5)
    crossed = agg.dawid_skene_gold_cross_fit(data, gold, n_folds=4)
    in_sample = agg.dawid_skene_labels(data, gold=gold)
    assert in_sample.accuracy(gold)["accuracy"] == 1.0
    assert crossed.accuracy(gold)["accuracy"] < 1.0
    assert len(crossed.info["folds"]) == 4 and crossed.info["converged"] is True
    with pytest.raises(ValueError, match="two labelled gold"):
        agg.dawid_skene_gold_cross_fit(data, gold.iloc[:1])


def _length_biased_pairs(seed: int, *, n_items: int = 300, n_gold: int = 60
                         ) -> tuple[list[PairVote], list[PairVote], dict, dict]:
    """Comparisons where the better reply is the shorter one 65% of the time. Eight crowd
    annotators pick the better reply 90% of the time when it is also the longer, 30% when it is
    the shorter (they prefer length); two experts are right 92% of the time. 5% ties. Five
    judgments per comparison; every annotator judges the ``n_gold`` calibration items."""
    rng = np.random.default_rng(seed)
    people = [f"crowd{i}" for i in range(8)] + [f"expert{i}" for i in range(2)]
    flip = {"A": "B", "B": "A"}
    truth, votes, anchors, gold = {}, [], [], {}
    for c in range(n_items + n_gold):
        better = str(rng.choice(["A", "B"]))
        longer = better if rng.random() < 0.35 else flip[better]
        truth[c] = better
        is_gold = c >= n_items
        for u in (people if is_gold else rng.choice(people, 5, replace=False)):
            if rng.random() < 0.05:
                choice = "tie"
            else:
                p = (0.9 if longer == better else 0.3) if u.startswith("crowd") else 0.92
                choice = better if rng.random() < p else flip[better]
            (anchors if is_gold else votes).append(PairVote(c, str(u), choice))
        if is_gold:
            gold[c] = better
    return votes, anchors, gold, truth


def test_gold_anchored_pairwise_dawid_skene_resists_a_length_biased_crowd():
    """Measured (seeds 0-3): majority 0.543 0.560 0.537 0.567, plain DS 0.483 0.460 0.523 0.477,
    anchored DS 0.750 0.810 0.793 0.777 (accuracy over the regular comparisons)."""
    def accuracy(method: str, seed: int, votes: list, anchors: list, gold: dict, truth: dict
                 ) -> float:
        fit = agg.aggregate_pairwise_fit(method, votes, anchor_votes=anchors, gold=gold)
        # Plain EM on seed 1 was still creeping at 500 iterations; SQUAREM converges (185 steps).
        assert fit.info["converged"] is True
        assert {d.comparison for d in fit.decisions} == {v.comparison for v in votes}
        return float(np.mean([d.winner == truth[d.comparison] for d in fit.decisions]))

    for seed in range(4):
        crowd = _length_biased_pairs(seed)
        plain = accuracy("dawid_skene_plain", seed, *crowd)
        anchored = accuracy("dawid_skene", seed, *crowd)
        assert plain < 0.6, (seed, plain)  # follows the length-loving majority
        assert anchored > 0.72 and anchored - plain > 0.2, (seed, anchored, plain)


def test_pairwise_gold_with_a_tolerance_clamps_to_the_accepted_set():
    """Gold "A, or a tie" leaves A and tie possible and rules out B and both-bad."""
    votes = [PairVote(1, "u1", "A"), PairVote(1, "u2", "B")]
    anchors = [PairVote(9, "u1", "tie"), PairVote(9, "u2", "B")]
    _, info = agg.pairwise_dawid_skene_fit(votes, anchor_votes=anchors, gold={9: ("A", "tie")})
    assert info["anchored_on_gold"] == 1
    frame = pd.DataFrame([(1, "u1", "A"), (1, "u2", "B"), (9, "u1", "tie"), (9, "u2", "B")],
                         columns=["task", "worker", "label"])
    fit = agg.dawid_skene_labels(frame, gold={9: ("A", "tie")})
    assert fit.probas.loc[9, "B"] == 0.0
    assert fit.probas.loc[9, ["A", "tie"]].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown gold choice"):
        agg.pairwise_dawid_skene_fit(votes, anchor_votes=anchors, gold={9: "maybe"})
