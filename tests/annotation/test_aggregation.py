"""Aggregation math: K-class labels, Davidson-Bradley-Terry, pairwise decisions (no database)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from annotation import aggregation as agg
from annotation.aggregation import PairVote


def _frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["task", "worker", "label"])


def _simulated_crowd(
    *, n_tasks: int, classes: list, workers: dict[str, float], per_task: int, seed: int,
) -> tuple[pd.DataFrame, pd.Series]:
    """Tasks with a uniform true class; each worker is right with their accuracy, else uniform
    over the other classes (accuracy None = spammer answering uniformly at random)."""
    rng = np.random.default_rng(seed)
    names = list(workers)
    truth = pd.Series([classes[k] for k in rng.integers(0, len(classes), n_tasks)],
                      index=[f"t{n}" for n in range(n_tasks)])
    rows = []
    for task, true in truth.items():
        for worker in rng.choice(names, size=per_task, replace=False):
            acc = workers[worker]
            if acc is None:
                label = classes[rng.integers(0, len(classes))]
            elif rng.random() < acc:
                label = true
            else:
                others = [c for c in classes if c != true]
                label = others[rng.integers(0, len(others))]
            rows.append((task, worker, label))
    return _frame(rows), truth


# ---------------------------------------------------------------- majority and tie handling


def test_majority_vote_counts_ties_as_judgments_not_votes():
    outcome = agg.majority_vote(["A", "tie", "A", "B", "both_bad"])
    assert (outcome.winner, outcome.votes_a, outcome.votes_b, outcome.n_judgments) == ("A", 2, 1, 5)
    assert outcome.agreement == pytest.approx(0.4)
    assert agg.majority_vote(["A", "B", "tie"]).winner is None


def test_majority_ties_are_broken_by_overall_frequency_and_reported():
    data = _frame([
        ("t1", "w1", "x"), ("t1", "w2", "y"),  # tie x / y
        ("t2", "w1", "y"), ("t2", "w2", "y"), ("t2", "w3", "x"),
        ("t3", "w1", "z"), ("t3", "w2", "x"),  # tie x / z
    ])
    result = agg.majority_labels(data)
    # x and y are each given three times; the tie between them falls to sorted order (x).
    assert agg.label_order(data) == ["x", "y", "z"]
    assert result.labels.to_dict() == {"t1": "x", "t2": "y", "t3": "x"}
    assert result.top["t1"] == ("x", "y") and result.top["t3"] == ("x", "z")
    assert result.n_ties == 2
    assert result.confidence["t2"] == pytest.approx(2 / 3)
    # Random tie-breaking credits half an item where gold is among the tied labels.
    scores = result.accuracy(pd.Series({"t1": "y", "t2": "y", "t3": "z", "t9": "x"}))
    assert scores == {"accuracy": pytest.approx((0.5 + 1 + 0.5) / 3),
                      "accuracy_tie_broken": pytest.approx(1 / 3), "n_scored": 3}


def test_a_repeated_label_keeps_the_workers_last_answer():
    data = _frame([("t1", "w1", "a"), ("t1", "w2", "b"), ("t1", "w1", "b"), ("t1", "w3", "a")])
    kept, dropped = agg.dedupe_labels(data)
    assert dropped == 1
    assert sorted(map(tuple, kept.to_numpy())) == [("t1", "w1", "b"), ("t1", "w2", "b"),
                                                   ("t1", "w3", "a")]
    assert agg.majority_labels(data).labels["t1"] == "b"
    with pytest.raises(ValueError, match="worker"):
        agg.dedupe_labels(data.drop(columns=["worker"]))


# ---------------------------------------------------------------- gold-weighted vote


def test_gold_weighted_beats_majority_when_half_the_workers_are_spammers():
    workers = {f"good{i}": 0.8 for i in range(6)} | {f"spam{i}": None for i in range(6)}
    data, truth = _simulated_crowd(n_tasks=600, classes=["a", "b", "c"], workers=workers,
                                   per_task=5, seed=7)
    gold = truth.iloc[:150]  # gold on a quarter of the tasks; score on the rest
    held_out = truth.iloc[150:]
    majority = agg.majority_labels(data).accuracy(held_out)["accuracy"]
    weighted = agg.gold_weighted_labels(data, gold)
    accuracy = weighted.accuracy(held_out)["accuracy"]
    assert accuracy > majority + 0.05, (accuracy, majority)
    weights = weighted.info["weights"]
    assert weights[[w for w in weights.index if w.startswith("spam")]].max() < \
        weights[[w for w in weights.index if w.startswith("good")]].min()
    # Cross-fitting scores every gold task with weights that never saw its answer, and still
    # beats majority on the gold.
    crossed = agg.gold_weighted_cross_fit(data, gold, n_folds=5, seed=0)
    assert crossed.info["cross_fit_folds"] == 5
    assert set(crossed.labels.index) == set(data["task"])
    assert crossed.accuracy(gold)["accuracy"] > agg.majority_labels(data).accuracy(gold)["accuracy"]


def test_gold_accuracy_is_shrunk_toward_the_pooled_accuracy():
    data = _frame([("t1", "w1", "a"), ("t2", "w1", "a"), ("t1", "w2", "b"), ("t3", "w3", "a")])
    gold = pd.Series({"t1": "a", "t2": "a"})
    quality = agg.worker_gold_accuracy(data, gold, prior_strength=2.0)
    pooled = 2 / 3
    assert quality.loc["w1", "smoothed"] == pytest.approx((2 + 2 * pooled) / 4)
    assert quality.loc["w2", "smoothed"] == pytest.approx((0 + 2 * pooled) / 3)
    assert quality.loc["w3", "n_gold"] == 0
    assert quality.loc["w3", "smoothed"] == pytest.approx(pooled)
    weights = agg.gold_log_odds_weights(pd.Series({"p": 0.8, "q": 0.4, "r": 0.3}), n_classes=3)
    assert weights["p"] == pytest.approx(math.log(2 * 0.8 / 0.2))
    assert weights["q"] == pytest.approx(math.log(2 * 0.4 / 0.6))  # above chance (1/3): a vote
    assert weights["r"] == 0.0  # below chance: no vote rather than an inverted one
    with pytest.raises(ValueError, match="gold"):
        agg.worker_gold_accuracy(data, pd.Series({"t9": "a"}))


# ---------------------------------------------------------------- Dawid-Skene and MACE


def test_dawid_skene_maps_classes_by_label_and_beats_majority_on_a_noisy_crowd():
    # Labels first met in non-sorted order, ids of mixed look: columns must follow the labels.
    workers = {f"w{i}": acc for i, acc in enumerate([0.9, 0.85, 0.8, 0.45, 0.45, 0.4, 0.4, 0.4])}
    data, truth = _simulated_crowd(n_tasks=250, classes=["zebra", "ant", "moth"], workers=workers,
                                   per_task=5, seed=3)
    result = agg.dawid_skene_labels(data)
    assert set(result.probas.columns) == {"zebra", "ant", "moth"}
    assert np.allclose(result.probas.sum(axis=1), 1.0)
    assert (result.probas.idxmax(axis=1) == result.labels).all()
    ds = result.accuracy(truth)["accuracy"]
    assert ds > agg.majority_labels(data).accuracy(truth)["accuracy"] + 0.03
    quality = result.worker_quality
    assert quality["w0"] > 0.8 and quality["w7"] < 0.6
    mace = agg.mace_labels(data)
    assert mace.accuracy(truth)["accuracy"] > 0.8
    assert set(mace.worker_quality.index) == set(workers)
    summary = agg.quality_summary(quality)
    assert summary["n_workers"] == 8 and summary["min"] <= summary["median"] <= summary["max"]


# ---------------------------------------------------------------- Bradley-Terry with ties


def test_davidson_fit_matches_the_closed_form_for_two_items():
    # Two items form a saturated model: the MLE reproduces the observed rates exactly, so
    # d = log(wins / losses) and nu = ties / sqrt(wins * losses).
    wins, losses, ties = 30, 10, 20
    first = [0] * (wins + losses + ties)
    second = [1] * len(first)
    outcome = [1.0] * wins + [0.0] * losses + [0.5] * ties
    fit = agg.bradley_terry_davidson(first, second, outcome, n_items=2)
    assert fit.converged
    assert fit.strengths[0] - fit.strengths[1] == pytest.approx(math.log(3), abs=1e-5)
    assert fit.tie == pytest.approx(20 / math.sqrt(300), abs=1e-5)
    assert fit.probabilities(0, 1) == pytest.approx((0.5, 1 / 6, 1 / 3), abs=1e-6)


def test_davidson_fit_recovers_strengths_and_tie_parameter_from_simulated_comparisons():
    rng = np.random.default_rng(2024)
    theta = np.array([-1.5, -0.6, 0.0, 0.4, 0.8, 1.4])
    theta -= theta.mean()
    nu = 0.7
    n = 6000
    i = rng.integers(0, 6, n)
    j = (i + rng.integers(1, 6, n)) % 6
    d = theta[i] - theta[j]
    z = np.exp(d / 2) + np.exp(-d / 2) + nu
    u = rng.random(n)
    outcome = np.where(u < np.exp(d / 2) / z, 1.0, np.where(u < (np.exp(d / 2) + nu) / z, 0.5, 0.0))
    fit = agg.bradley_terry_davidson(i, j, outcome, n_items=6)
    assert fit.converged
    assert list(np.argsort(fit.strengths)) == list(np.argsort(theta))
    assert np.abs(fit.strengths - theta).max() < 0.12
    assert fit.tie == pytest.approx(nu, abs=0.08)
    # Without ties the tie parameter goes to zero; a prior keeps a clean sweep finite.
    no_ties = agg.bradley_terry_davidson([0, 0, 1], [1, 2, 2], [1.0, 1.0, 1.0], n_items=3,
                                         prior_precision=1.0)
    assert no_ties.tie < 1e-6
    assert np.all(np.isfinite(no_ties.strengths))
    assert no_ties.strengths[0] > no_ties.strengths[1] > no_ties.strengths[2]


# ---------------------------------------------------------------- pairwise decisions


def test_confidence_maps_to_a_clipped_logit_margin_and_a_weight():
    assert agg.confidence_to_margin(0.8) == pytest.approx(math.log(4))
    assert agg.confidence_to_margin(0.5) == 0.0
    assert agg.confidence_to_margin(0.999) == 3.0
    assert agg.confidence_to_margin(1.0, margin_max=2.0) == 2.0
    assert agg.confidence_to_weight(0.8) == pytest.approx(0.6)
    assert agg.confidence_to_weight(0.5) == 0.0


def test_pairwise_majority_decides_by_directional_votes_with_laplace_confidence():
    votes = [PairVote(1, "u1", "A"), PairVote(1, "u2", "A"), PairVote(1, "u3", "B"),
             PairVote(2, "u1", "A"), PairVote(2, "u2", "B"), PairVote(2, "u3", "tie"),
             PairVote(3, "u1", "B"), PairVote(3, "u2", "both_bad")]
    decisions, params = agg.aggregate_pairwise("majority", votes)
    assert params == {"margin_max": 3.0}
    by_id = {d.comparison: d for d in decisions}
    assert by_id[1].winner == "A" and by_id[1].confidence == pytest.approx(3 / 5)
    assert by_id[1].margin == pytest.approx(math.log(1.5))
    assert by_id[1].agreement == pytest.approx(2 / 3)
    assert by_id[2].winner is None and by_id[2].weight == 0.0
    assert by_id[3].winner == "B" and by_id[3].confidence == pytest.approx(2 / 3)
    assert by_id[3].n_judgments == 2 and by_id[3].agreement == 0.5


def test_pairwise_gold_weighted_ignores_annotators_who_fail_gold():
    rng = np.random.default_rng(11)
    truth = {c: ("A" if rng.random() < 0.5 else "B") for c in range(200)}
    flip = {"A": "B", "B": "A"}
    votes = []
    for c, true in truth.items():
        votes += [PairVote(c, f"good{k}", true if rng.random() < 0.85 else flip[true])
                  for k in range(2)]
        votes += [PairVote(c, f"spam{k}", "A" if rng.random() < 0.5 else "B") for k in range(3)]
    gold_counts = {"good0": (17, 20), "good1": (18, 20),
                   "spam0": (10, 20), "spam1": (9, 20), "spam2": (11, 20)}
    weighted, _ = agg.aggregate_pairwise("gold_weighted", votes, gold_counts=gold_counts)
    majority, _ = agg.aggregate_pairwise("majority", votes)

    def accuracy(decisions: list[agg.PairwiseDecision]) -> float:
        return float(np.mean([d.winner == truth[d.comparison] for d in decisions]))

    assert accuracy(weighted) > accuracy(majority) + 0.05
    assert all(0.5 <= d.confidence <= 1.0 for d in weighted)
    with pytest.raises(ValueError, match="gold"):
        agg.aggregate_pairwise("gold_weighted", votes, gold_counts={})


def test_pairwise_dawid_skene_reads_posteriors_by_label():
    # B is met first and tie is a class of its own; the decision must still be by label.
    votes = []
    for c in range(30):
        winner = "B" if c % 3 else "A"
        votes += [PairVote(c, "u1", winner), PairVote(c, "u2", winner),
                  PairVote(c, "u3", "tie" if c % 2 else winner)]
    votes += [PairVote(99, "u1", "tie"), PairVote(99, "u2", "both_bad")]
    decisions, params = agg.aggregate_pairwise("dawid_skene", votes)
    assert params["n_iter"] == 500
    # No directional vote: P(A) vs P(B) would only echo the prior, so it stays undecided.
    assert decisions.pop().winner is None
    assert [d.winner for d in decisions] == ["B" if c % 3 else "A" for c in range(30)]
    assert all(0.5 < d.confidence <= 1.0 and 0 <= d.margin <= 3.0 for d in decisions)


def test_pairwise_bradley_terry_pools_evidence_across_shared_responses():
    # x beats y and y beats z clearly; x vs z was judged once, a tie. BT transfers the
    # evidence: x is chosen over z, and the undecided-by-votes comparison gets a direction.
    items = {1: ("x", "y"), 2: ("y", "z"), 3: ("z", "x")}
    votes = [PairVote(1, f"u{k}", "A") for k in range(4)]
    votes += [PairVote(2, f"u{k}", "A") for k in range(4)]
    votes += [PairVote(3, "u0", "tie")]
    decisions, fit, ids = agg.pairwise_bradley_terry(votes, items=items, prior_precision=1.0)
    by_id = {d.comparison: d for d in decisions}
    assert by_id[3].winner == "B"  # response B of comparison 3 is x
    strengths = dict(zip(ids, fit.strengths, strict=True))
    assert strengths["x"] > strengths["y"] > strengths["z"]
    d = strengths["x"] - strengths["y"]
    assert by_id[1].confidence == pytest.approx(1 / (1 + math.exp(-d)))
    assert by_id[1].margin == pytest.approx(min(d, 3.0))
    assert agg.aggregate_pairwise("majority", votes)[0][2].winner is None


def test_pairwise_params_resolve_defaults_and_reject_unknown_keys():
    assert agg.pairwise_params("bradley_terry", {"prior_precision": "2"}) == {
        "margin_max": 3.0, "prior_precision": 2.0}
    assert agg.pairwise_params("dawid_skene", None) == agg.pairwise_params(
        "dawid_skene", {"n_iter": 500, "tol": 1e-5, "margin_max": 3})
    with pytest.raises(ValueError, match="unknown parameter"):
        agg.pairwise_params("majority", {"beta": 1})
    with pytest.raises(ValueError, match="unknown method"):
        agg.pairwise_params("borda", None)
    with pytest.raises(ValueError, match=">= 0"):
        agg.pairwise_params("majority", {"margin_max": -1})
