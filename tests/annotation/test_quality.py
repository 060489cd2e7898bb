"""Annotator and campaign quality (annotation/quality.py) against closed forms, the reference
packages (scipy, crowd-kit, krippendorff) and simulated annotators with known noise and biases."""

from __future__ import annotations

import math
import time
import warnings
from collections import Counter

import krippendorff
import numpy as np
import pytest
from scipy import optimize, stats

from annotation.quality import (
    CHOICE_A,
    CHOICE_B,
    CHOICE_BOTH_BAD,
    CHOICE_TIE,
    GoldTally,
    JudgmentFrame,
    annotator_stats,
    campaign_stats,
    dawid_skene,
    dawid_skene_crowdkit,
    frame_from_records,
    krippendorff_alphas,
    length_bias_array,
    quality_recompute,
    wilson_interval,
)

Z95 = float(stats.norm.ppf(0.975))


def _frame(n: int, **cols) -> JudgmentFrame:
    """A frame of n rows with neutral defaults for the columns not given."""
    base = dict(
        annotator=np.zeros(n, int), item=np.arange(n), choice=np.zeros(n, int),
        strength=np.ones(n, int), a_on_left=np.ones(n, bool), seconds=np.full(n, 10.0),
        len_diff=np.zeros(n), agree_diff=np.full(n, np.nan), gold_ok=np.full(n, np.nan),
        consistent=np.full(n, np.nan), is_reshow=np.zeros(n, bool),
        is_calibration=np.zeros(n, bool),
    )
    base.update(cols)
    return JudgmentFrame(**base)


# ------------------------------------------------------------------------------------------
# Wilson interval and the running tally
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (1, 1), (47, 50), (500, 1000)])
def test_wilson_interval_matches_scipy(k, n):
    """Same bounds as scipy's binomtest(...).proportion_ci(method="wilson")."""
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    lo, hi = wilson_interval(k, n, z=Z95)
    assert lo == pytest.approx(ref.low, abs=1e-12)
    assert hi == pytest.approx(ref.high, abs=1e-12)


def test_wilson_interval_closed_form_at_the_edges():
    """0 of n: [0, z^2/(n+z^2)]; n of n: [n/(n+z^2), 1]; no data: nan."""
    z2 = 1.96**2
    assert wilson_interval(0, 20) == pytest.approx((0.0, z2 / (20 + z2)))
    assert wilson_interval(20, 20) == pytest.approx((20 / (20 + z2), 1.0))
    lo, hi = wilson_interval(0, 0)
    assert math.isnan(lo) and math.isnan(hi)


def test_gold_tally_matches_the_batch_interval_and_is_cheap():
    """The submit-path tally gives the batch Wilson interval after every update, in well under
    the 1 ms budget per update."""
    rng = np.random.default_rng(0)
    outcomes = rng.random(300) < 0.8
    tally = GoldTally()
    for i, ok in enumerate(outcomes, start=1):
        tally = tally.add(bool(ok))
        assert (tally.successes, tally.n) == (int(outcomes[:i].sum()), i)
        assert tally.interval() == pytest.approx(wilson_interval(outcomes[:i].sum(), i))
    start = time.perf_counter()
    for ok in outcomes.tolist() * 30:
        tally = tally.add(ok)
        tally.interval()
    per_update = (time.perf_counter() - start) / (len(outcomes) * 30)
    assert per_update < 1e-4  # 10x under the 1 ms target, even on a loaded machine


# ------------------------------------------------------------------------------------------
# Frame construction
# ------------------------------------------------------------------------------------------


def test_frame_from_records_maps_ids_and_choices():
    """Ids get codes in order of first appearance; strings become choice codes; tie strength is
    0 and a missing A/B strength is 1; None becomes nan."""
    indexed = frame_from_records([
        {"annotator": "u7", "item": 101, "choice": "B", "strength": 3, "a_on_left": False,
         "seconds": 4.0, "len_diff": -20, "gold_ok": True},
        {"annotator": "u2", "item": 101, "choice": "tie", "strength": 2, "a_on_left": True,
         "seconds": 6.0, "len_diff": -20, "gold_ok": None},
        {"annotator": "u7", "item": 55, "choice": "A", "strength": None, "a_on_left": True,
         "seconds": None, "len_diff": 5, "consistent": 0, "is_reshow": True,
         "is_calibration": True},
    ])
    f = indexed.frame
    assert indexed.annotator_ids == ["u7", "u2"] and indexed.item_ids == [101, 55]
    assert f.annotator.tolist() == [0, 1, 0] and f.item.tolist() == [0, 0, 1]
    assert f.choice.tolist() == [CHOICE_B, CHOICE_TIE, CHOICE_A]
    assert f.strength.tolist() == [3, 0, 1]
    assert f.gold_ok[0] == 1.0 and np.isnan(f.gold_ok[1:]).all()
    assert np.isnan(f.seconds[2]) and f.consistent[2] == 0.0 and f.is_reshow.tolist()[2]


def test_frame_rejects_ragged_columns_and_bad_choices():
    with pytest.raises(ValueError):
        _frame(3, item=np.arange(4))
    with pytest.raises(ValueError):
        _frame(2, choice=np.array([0, 4]))
    with pytest.raises(ValueError):
        frame_from_records([{"annotator": 1, "item": 1, "choice": "C", "a_on_left": True}])


# ------------------------------------------------------------------------------------------
# Dawid-Skene: the numpy backend reproduces crowd-kit
# ------------------------------------------------------------------------------------------


def test_numpy_dawid_skene_reproduces_crowdkit():
    """Posteriors, priors, confusion matrices and the stopping iteration equal crowd-kit's on
    four-label data with annotators of mixed accuracy (one of them adversarial)."""
    rng = np.random.default_rng(1)
    n_ann, n_items, n_rows = 30, 300, 2400
    truth = rng.choice(4, n_items, p=[0.4, 0.4, 0.15, 0.05])
    annotator = rng.integers(0, n_ann, n_rows)
    item = rng.integers(0, n_items, n_rows)
    acc = rng.uniform(0.45, 0.95, n_ann)
    acc[0] = 0.1
    label = np.where(rng.random(n_rows) < acc[annotator], truth[item],
                     rng.integers(0, 4, n_rows))
    ours = dawid_skene(annotator, item, label, n_annotators=n_ann + 2, stop="crowdkit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = dawid_skene_crowdkit(annotator, item, label, n_annotators=n_ann + 2)
    assert ours.n_iter == ref.n_iter > 1
    assert ours.converged == ref.converged
    np.testing.assert_array_equal(ours.items, ref.items)
    np.testing.assert_array_equal(ours.labels, ref.labels)
    np.testing.assert_allclose(ours.probas, ref.probas, atol=1e-9)
    np.testing.assert_allclose(ours.priors, ref.priors, atol=1e-12)
    np.testing.assert_allclose(ours.errors, ref.errors, atol=1e-12)
    np.testing.assert_array_equal(ours.winners(), ref.winners())
    comp = ours.competence()
    assert np.isnan(comp[-2:]).all()  # no rows, no estimate
    # competence tracks the simulated accuracy (a noisy label is right 1/4 of the time)
    assert stats.spearmanr(comp[:n_ann], acc).statistic > 0.8


def test_competence_is_the_prior_weighted_diagonal():
    rng = np.random.default_rng(2)
    a, t = rng.integers(0, 5, 400), rng.integers(0, 80, 400)
    fit = dawid_skene(a, t, rng.integers(0, 2, 400), n_annotators=5)
    expected = [sum(fit.priors[k] * fit.errors[w, k, k] for k in range(2)) for w in range(5)]
    np.testing.assert_allclose(fit.competence(), expected)


# ------------------------------------------------------------------------------------------
# Krippendorff's alpha
# ------------------------------------------------------------------------------------------

# Krippendorff's own example (Content Analysis, 2004, ch. 11; also the krippendorff package's
# docstring): 3 coders, 15 units, values 1..4, nominal alpha = 0.691358.
_KRIPP_EXAMPLE = np.array([
    [np.nan, np.nan, np.nan, np.nan, np.nan, 3, 4, 1, 2, 1, 1, 3, 3, np.nan, 3],
    [1, np.nan, 2, 1, 3, 3, 4, 3, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
    [np.nan, np.nan, 2, 1, 3, 4, 4, np.nan, 2, 1, 1, 3, 3, np.nan, 4],
])


def _frame_from_reliability(data: np.ndarray, strength: np.ndarray | None = None):
    coder, unit = np.nonzero(np.isfinite(data))
    values = data[coder, unit].astype(int)
    return _frame(values.size, annotator=coder, item=unit, choice=values - 1,
                  strength=np.ones(values.size, int) if strength is None
                  else strength[coder, unit])


def test_nominal_alpha_reproduces_krippendorffs_example():
    """Krippendorff's published value, and the package on the dense reliability matrix."""
    nominal, _ = krippendorff_alphas(_frame_from_reliability(_KRIPP_EXAMPLE))
    assert nominal == pytest.approx(0.691358, abs=1e-6)
    assert nominal == pytest.approx(
        krippendorff.alpha(reliability_data=_KRIPP_EXAMPLE, level_of_measurement="nominal"))


def test_ordinal_alpha_uses_signed_strength_and_drops_both_bad():
    """Ordinal alpha equals the package's on the signed-strength matrix (A strong = +3 ...
    B strong = -3, tie = 0) with both-bad answers missing."""
    rng = np.random.default_rng(3)
    n_coders, n_units = 4, 25
    latent = rng.normal(0, 1.5, n_units)
    choice = np.empty((n_coders, n_units), int)
    strength = np.empty((n_coders, n_units), int)
    signed = np.empty((n_coders, n_units))
    for c in range(n_coders):
        v = np.clip(np.round(latent + rng.normal(0, 1, n_units)), -3, 3).astype(int)
        bad = rng.random(n_units) < 0.1
        choice[c] = np.where(bad, CHOICE_BOTH_BAD,
                             np.where(v > 0, CHOICE_A, np.where(v < 0, CHOICE_B, CHOICE_TIE)))
        strength[c] = np.where(choice[c] <= CHOICE_B, np.abs(v), 0)
        signed[c] = np.where(bad, np.nan, v)
    missing = rng.random((n_coders, n_units)) < 0.15
    coder, unit = np.nonzero(~missing)
    frame = _frame(coder.size, annotator=coder, item=unit, choice=choice[coder, unit],
                   strength=strength[coder, unit])
    nominal, ordinal = krippendorff_alphas(frame)
    signed[missing] = np.nan
    assert ordinal == pytest.approx(
        krippendorff.alpha(reliability_data=signed, level_of_measurement="ordinal"))
    codes = np.where(missing, np.nan, choice.astype(float))
    assert nominal == pytest.approx(
        krippendorff.alpha(reliability_data=codes, level_of_measurement="nominal"))
    assert ordinal > nominal  # near misses (A slight vs A strong) cost little on the ordinal scale


def test_alpha_is_none_without_pairable_units():
    nominal, ordinal = krippendorff_alphas(_frame(3, item=np.arange(3)))
    assert nominal is None and ordinal is None


# ------------------------------------------------------------------------------------------
# Small hand-made frames
# ------------------------------------------------------------------------------------------


def test_annotator_stats_on_a_hand_made_frame():
    """Counts, splits of the consistency rows, bias definitions and the median, checked by hand.

    Annotator 0: 4 gold (3 right), 2 re-shows (1 consistent), 1 transitivity closer (consistent),
    A/B choices 3 of 4 on the left, 2 sycophancy probes (both agreeing). Annotator 1 has no gold,
    so its noise falls back to 1 - DS competence. Annotator 2 never answered.
    """
    nan = np.nan
    rows = [
        # annotator, item, choice, a_on_left, seconds, gold_ok, consistent, is_reshow, agree, cal
        (0, 0, CHOICE_A, True, 3.0, 1, nan, False, nan, True),
        (0, 1, CHOICE_B, False, 5.0, 1, nan, False, nan, True),
        (0, 2, CHOICE_A, True, 7.0, 0, nan, False, nan, True),
        (0, 3, CHOICE_TIE, True, 9.0, 1, nan, False, nan, True),
        (0, 4, CHOICE_B, True, 11.0, nan, 1, True, nan, True),
        (0, 5, CHOICE_A, False, 13.0, nan, 0, True, nan, True),
        (0, 6, CHOICE_TIE, True, 15.0, nan, 1, False, nan, True),
        (0, 7, CHOICE_BOTH_BAD, True, 17.0, nan, nan, False, -1.0, False),
        (0, 8, CHOICE_B, True, 19.0, nan, nan, False, -1.0, False),
        (0, 9, CHOICE_A, True, 21.0, nan, nan, False, 1.0, False),
        (1, 8, CHOICE_B, True, 2.0, nan, nan, False, nan, False),
        (1, 9, CHOICE_B, False, 4.0, nan, nan, False, nan, False),
    ]
    cols = list(zip(*rows, strict=True))
    frame = _frame(len(rows), annotator=np.array(cols[0]), item=np.array(cols[1]),
                   choice=np.array(cols[2]), a_on_left=np.array(cols[3]),
                   seconds=np.array(cols[4]), gold_ok=np.array(cols[5], float),
                   consistent=np.array(cols[6], float), is_reshow=np.array(cols[7]),
                   agree_diff=np.array(cols[8], float), is_calibration=np.array(cols[9]))
    # Two shared items only: below MIN_PEER_ITEMS, so the minimum is lowered to check the values.
    s0, s1, s2 = annotator_stats(frame, 3, min_peer_items=1)
    assert (s0.n_judgments, s0.n_gold, s0.n_reshows, s0.n_triples) == (10, 4, 2, 1)
    assert s0.gold_accuracy == 0.75
    assert s0.noise == pytest.approx(1 - s0.competence)  # the anchored fit, not gold alone
    assert (s0.gold_ci_low, s0.gold_ci_high) == pytest.approx(wilson_interval(3, 4))
    assert s0.self_consistency == 0.5 and s0.transitivity == 1.0
    # Position and sycophancy bias come from the conditional model (checked against scipy in
    # test_bias_model_matches_a_direct_penalised_fit); here only which annotators get one.
    assert s0.position_bias is not None and s0.sycophancy_bias is not None
    assert s1.position_bias is not None and s1.sycophancy_bias is None  # no probe rows
    assert s0.median_seconds == pytest.approx(12.0)
    assert s0.length_bias is None  # no length differences
    # peer agreement: items 8 and 9 are shared; 0 says B/A, 1 says B/B -> 1 of 2 agree each
    assert s0.peer_agreement == 0.5 and s1.peer_agreement == 0.5
    assert s1.gold_accuracy is None and s1.noise == pytest.approx(1 - s1.competence)
    assert s2.n_judgments == 0 and s2.competence is None and s2.noise is None


def test_peer_agreement_splits_credit_on_tied_pluralities():
    """Others on the item said A, B: a row saying A matches one of two tied pluralities (1/2);
    a row saying tie matches none (0)."""
    frame = _frame(4, annotator=np.arange(4), item=np.zeros(4, int),
                   choice=np.array([CHOICE_A, CHOICE_B, CHOICE_A, CHOICE_TIE]))
    stats_ = annotator_stats(frame, 4, min_peer_items=1)
    # row 0 (A): others A, B, tie -> plurality tied 3 ways, A among them -> 1/3
    assert stats_[0].peer_agreement == pytest.approx(1 / 3)
    # row 1 (B): others A, A, tie -> plurality A -> 0
    assert stats_[1].peer_agreement == 0.0
    # row 3 (tie): others A, B, A -> plurality A -> 0
    assert stats_[3].peer_agreement == 0.0


def test_length_bias_matches_a_direct_penalised_fit():
    """The batched Newton fit equals scipy's optimiser on one annotator's penalised likelihood,
    and annotators with too few informative rows get None."""
    rng = np.random.default_rng(4)
    n = 400
    side = rng.random(n) < 0.5
    len_diff = rng.normal(0, 150, n)
    logit = 0.3 + 0.4 * np.where(side, 1, -1) + 0.7 * len_diff / 100
    choice = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), CHOICE_A, CHOICE_B)
    annotator = np.where(np.arange(n) < 390, 0, 1)  # annotator 1 has only 10 rows
    frame = _frame(n, annotator=annotator, choice=choice, a_on_left=side, len_diff=len_diff)
    ours = length_bias_array(frame, 2, l2=1e-3)
    x = np.stack([np.ones(390), np.where(side[:390], 1.0, -1.0), len_diff[:390] / 100], axis=1)
    y = (choice[:390] == CHOICE_A).astype(float)

    def neg_penalised_loglik(beta):
        eta = x @ beta
        return np.sum(np.logaddexp(0, eta) - y * eta) + 0.5e-3 * (beta[1] ** 2 + beta[2] ** 2)

    ref = optimize.minimize(neg_penalised_loglik, np.zeros(3), method="BFGS",
                            options={"gtol": 1e-10}).x
    assert ours[0] == pytest.approx(ref[2], abs=1e-5)
    assert np.isnan(ours[1])


def test_campaign_stats_on_a_hand_made_frame():
    """Label mix and pooled position bias by hand; majority-vs-DS disagreement against an
    independent majority count and crowd-kit's labels; noise epsilon as the weighted mean."""
    rng = np.random.default_rng(5)
    n_ann, n_items = 12, 120
    truth = rng.integers(0, 2, n_items)
    rows = [(a, i) for i in range(n_items) for a in rng.choice(n_ann, 3, replace=False)]
    annotator = np.array([r[0] for r in rows])
    item = np.array([r[1] for r in rows])
    acc = np.linspace(0.55, 0.95, n_ann)
    choice = np.where(rng.random(len(rows)) < acc[annotator], truth[item], 1 - truth[item])
    choice = np.where(rng.random(len(rows)) < 0.08, CHOICE_TIE, choice)
    side = rng.random(len(rows)) < 0.5
    gold = np.where(item < 20, (choice == truth[item]).astype(float), np.nan)
    calibration = item < 20
    frame = _frame(len(rows), annotator=annotator, item=item, choice=choice, a_on_left=side,
                   gold_ok=gold, is_calibration=calibration)
    report = quality_recompute(frame, n_ann)
    camp = report.campaign
    assert camp.n_judgments == len(rows)
    counts = Counter(choice.tolist())
    assert camp.label_mix == pytest.approx({"A": counts[0] / len(rows), "B": counts[1] / len(rows),
                                            "tie": counts[2] / len(rows), "both_bad": 0.0})
    ab = choice <= CHOICE_B
    left = (choice[ab] == CHOICE_A) == side[ab]
    assert camp.position_bias == pytest.approx(left.mean() - 0.5)

    ds_winner = dict(zip(report.ds.items.tolist(), report.ds.winners().tolist(), strict=True))
    disagree = decided = 0
    for it in range(20, n_items):
        votes = Counter(choice[(item == it)].tolist())
        if votes[CHOICE_A] != votes[CHOICE_B]:
            decided += 1
            winner = CHOICE_A if votes[CHOICE_A] > votes[CHOICE_B] else CHOICE_B
            disagree += ds_winner[it] != winner
    assert camp.majority_ds_disagreement == pytest.approx(disagree / decided)

    n = np.array([s.n_judgments for s in report.annotators])
    noise = np.array([s.noise for s in report.annotators])
    assert camp.noise_epsilon == pytest.approx(np.sum(n * noise) / n.sum())
    assert campaign_stats(frame, n_ann) == camp  # same result without the shared DS fit


# ------------------------------------------------------------------------------------------
# Simulated annotators with known noise and biases (DESIGN section 5)
# ------------------------------------------------------------------------------------------


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


P_TIE = 0.03  # ties drawn independently of the pair, so they do not move the A/B rates


def _simulate_pool(rng, annotators, n_each):
    """Judgments of a pool answering four kinds of rows; returns the frame and the truths.

    P(choose A) = sigmoid((u_A - u_B + b_len * (len_A - len_B)/100 + b_syc * (f_A - f_B)) / tau
    + beta_pos * s), with s = +1 when A is on the left: DESIGN section 5's annotator plus a
    screen-side term. Row kinds (n_each of each): gold pairs (|u_A - u_B| = 1, correct = the
    better one), regular pairs (u_A - u_B ~ N(0, 1)), padding probes (equal utility, length
    differs by 50-300 characters) and sycophancy probes (the response agreeing with the user's
    wrong belief is 1 worse, gold known). Truths are expectations over the simulated rows'
    probabilities.
    """
    cols = {k: [] for k in ("annotator", "item", "choice", "a_on_left", "len_diff",
                            "agree_diff", "gold_ok", "gold_label", "is_calibration")}
    truth = []
    item0 = 0
    for w, (tau, b_len, beta_pos, b_syc) in enumerate(annotators):
        kind = np.repeat(np.arange(4), n_each)
        n = kind.size
        du = np.zeros(n)
        gold_sign = rng.choice([-1.0, 1.0], n)
        du[kind == 0] = gold_sign[kind == 0]
        du[kind == 1] = rng.normal(0, 1, (kind == 1).sum())
        len_diff = np.zeros(n)
        n_len = (kind == 2).sum()
        len_diff[kind == 2] = rng.choice([-1, 1], n_len) * rng.uniform(50, 300, n_len)
        agree = np.full(n, np.nan)
        agree[kind == 3] = rng.choice([-1.0, 1.0], (kind == 3).sum())
        du[kind == 3] = -1.0 * agree[kind == 3]  # as far apart as gold pairs: one quality term
        side = rng.random(n) < 0.5
        s = np.where(side, 1.0, -1.0)
        logit = (du + b_len * len_diff / 100 + b_syc * np.nan_to_num(agree)) / tau + beta_pos * s
        p_a = _sigmoid(logit)
        tie = rng.random(n) < P_TIE
        choice = np.where(tie, CHOICE_TIE, np.where(rng.random(n) < p_a, CHOICE_A, CHOICE_B))
        correct = np.where(gold_sign > 0, CHOICE_A, CHOICE_B)
        gold_ok = np.where(kind == 0, (choice == correct).astype(float), np.nan)
        # Gold is known on gold pairs and on sycophancy probes (the agreeing reply is worse),
        # so the bias model can hold quality fixed there; padding probes are ties.
        gold_label = np.where(kind == 0, correct,
                              np.where(kind == 3, np.where(agree > 0, CHOICE_B, CHOICE_A), -1))
        p_left = np.where(side, p_a, 1 - p_a)
        p_agree = np.where(agree > 0, p_a, 1 - p_a)
        truth.append({
            "accuracy": float(np.mean((1 - P_TIE) * np.where(gold_sign > 0, p_a, 1 - p_a)
                                      [kind == 0])),
            # Biases at equal quality (what annotator_stats reports): the model's own terms.
            "position": float(_sigmoid(beta_pos) - 0.5),
            "length": b_len / tau,
            "sycophancy": float(_sigmoid(b_syc / tau) - 0.5),
            "marginal_position": float(p_left.mean() - 0.5),
            "marginal_sycophancy": float(p_agree[kind == 3].mean() - 0.5),
        })
        for key, value in (("annotator", np.full(n, w)), ("item", item0 + np.arange(n)),
                           ("choice", choice), ("a_on_left", side), ("len_diff", len_diff),
                           ("agree_diff", agree), ("gold_ok", gold_ok),
                           ("gold_label", gold_label), ("is_calibration", kind == 0)):
            cols[key].append(value)
        item0 += n
    merged = {k: np.concatenate(v) for k, v in cols.items()}
    n_rows = merged["annotator"].size
    frame = JudgmentFrame(**merged, strength=np.where(merged["choice"] <= CHOICE_B, 2, 0),
                          seconds=rng.gamma(4, 5, n_rows), consistent=np.full(n_rows, np.nan),
                          is_reshow=np.zeros(n_rows, bool))
    return frame, truth


def test_gold_accuracy_intervals_cover_the_true_accuracy():
    """Over 40 seeded pools of 12 annotators with 60 gold items each and temperatures from 0.3
    to 3, the true accuracy lies inside the estimated 95% Wilson interval at least 90% of the
    time."""
    hits = total = 0
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        pool = [(tau, 0.0, 0.0, 0.0) for tau in np.geomspace(0.3, 3.0, 12)]
        frame, truth = _simulate_pool(rng, pool, n_each=60)
        frame = frame.subset(frame.is_calibration)  # gold rows only: keeps the test fast
        for s, t in zip(annotator_stats(frame, len(pool)), truth, strict=True):
            assert s.n_gold == 60
            hits += s.gold_ci_low <= t["accuracy"] <= s.gold_ci_high
            total += 1
    assert hits / total >= 0.90


def test_biases_of_simulated_annotators_are_recovered():
    """Signs right and magnitudes within 20% for position, length and sycophancy bias; an
    unbiased annotator's estimates stay within 3 standard errors of 0; noisier annotators get
    lower gold accuracy."""
    rng = np.random.default_rng(7)
    pool = [  # tau, b_len (utility per 100 chars), beta_pos (logit, + = left), b_syc
        (1.0, 0.5, 0.8, 1.5),
        (0.7, -0.4, -0.7, 1.2),
        (2.0, 1.2, 0.6, -1.5),
        (1.0, 0.0, 0.0, 0.0),
    ]
    frame, truth = _simulate_pool(rng, pool, n_each=4000)
    result = annotator_stats(frame, len(pool))
    for s, t in list(zip(result, truth, strict=True))[:3]:
        for name, est in (("position", s.position_bias), ("length", s.length_bias),
                          ("sycophancy", s.sycophancy_bias)):
            assert np.sign(est) == np.sign(t[name]), (name, est, t[name])
            assert abs(est - t[name]) <= 0.2 * abs(t[name]), (name, est, t[name])
    unbiased = result[3]
    assert abs(unbiased.position_bias) < 3 * 0.5 / math.sqrt(4 * 4000)
    assert abs(unbiased.sycophancy_bias) < 3 * 0.5 / math.sqrt(4000)
    assert abs(unbiased.length_bias) < 0.1
    acc = [s.gold_accuracy for s in result]
    assert acc[1] > acc[0] > acc[2]


@pytest.mark.parametrize("level", ["nominal", "ordinal"])
def test_vectorised_alpha_equals_the_package_on_random_counts(level):
    """The coincidence-matrix implementation used at scale equals krippendorff.alpha on 500
    random units with 1-6 coders over 7 values (one value never used)."""
    rng = np.random.default_rng(8)
    counts = np.zeros((500, 7), int)
    for u in range(500):
        centre = rng.integers(0, 6)
        for _ in range(rng.integers(1, 7)):
            counts[u, int(np.clip(centre + rng.integers(-1, 2), 0, 5))] += 1
    from annotation.quality import alpha_from_value_counts

    assert alpha_from_value_counts(counts, level) == pytest.approx(
        krippendorff.alpha(value_counts=counts, level_of_measurement=level), abs=1e-12)
