"""Simulated annotators: the choice model, campaigns built from a world, and simulated runs
through the annotation services and the REST API."""

from __future__ import annotations

import math
import random
from dataclasses import replace

import pytest
from django.core.management import CommandError, call_command

from annotation.errors import ApplicationError
from annotation.models import AnnotatorProfile, Campaign, Comparison, Judgment, Response
from evaluation.services import (
    simulate_campaign,
    simulated_annotator_get_or_create,
    world_campaign_create,
)
from evaluation.simulation import (
    CROWD,
    EXPERT,
    AnnotatorConfig,
    DriftSchedule,
    PoolMember,
    decide,
    parse_pool,
)
from evaluation.worlds.arithmetic import WORLD

TURNS = [{"role": "user", "content": "What is 37 + 48?"}]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def _campaign(name: str = "arith", **kw) -> Campaign:
    args = {"world_name": "arithmetic", "name": name, "n_prompts": 40, "seed": 1, "overlap": 3,
            "calibration_rate": 0.2, "accuracy_threshold": 0.0}
    args.update(kw)
    campaign = world_campaign_create(**args)
    # Re-shows are drawn from the server's own randomness; off, so runs are reproducible.
    Campaign.objects.filter(pk=campaign.pk).update(reshow_rate=0.0)
    campaign.refresh_from_db()
    return campaign


def _screen_choice(j: Judgment) -> str:
    if j.choice in ("tie", "both_bad"):
        return j.choice
    return "left" if (j.choice == "A") == j.a_on_left else "right"


def _gold_ok(j: Judgment) -> bool:
    c = j.comparison
    return j.choice in (c.gold_accepts or [c.gold_choice])


# ---------------------------------------------------------------------------------------------
# The choice model (pure)
# ---------------------------------------------------------------------------------------------

def test_choice_probability_follows_the_logistic_model():
    """P(left) = σ(m/τ) for m = r*(L) - r*(R) + b·Δf + b_pos, sampled over many decisions."""
    config = AnnotatorConfig(tau=0.5, bias={"length": 0.3}, position_bias=0.2)
    left, right = "37 + 48 = 85.", "Let me work through this carefully. 37 + 48 = 84."
    rng = random.Random(0)
    picks = [decide(config=config, world=WORLD, turns=TURNS, left_text=left, right_text=right,
                    rng=rng) for _ in range(4000)]
    margin = picks[0].margin
    expected_margin = (1.0 - (-0.5)) + 0.3 * (len(left) - len(right)) / 100 + 0.2
    assert margin == pytest.approx(expected_margin)
    share_left = sum(p.choice == "left" for p in picks) / len(picks)
    assert share_left == pytest.approx(_sigmoid(margin / 0.5), abs=0.03)
    assert {p.strength for p in picks} == {1, 2, 3}


def test_decisions_are_reproducible_from_the_seed():
    def run(seed):
        rng = random.Random(seed)
        return [decide(config=CROWD, world=WORLD, turns=TURNS, left_text="85.",
                       right_text="84.", rng=rng) for _ in range(50)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_position_bias_on_identical_texts_favours_the_left():
    config = AnnotatorConfig(tau=0.5, position_bias=0.5)
    rng = random.Random(1)
    picks = [decide(config=config, world=WORLD, turns=TURNS, left_text="85.", right_text="85.",
                    rng=rng).choice for _ in range(3000)]
    assert picks.count("left") / len(picks) == pytest.approx(_sigmoid(1.0), abs=0.03)


def test_ties_both_bad_and_random_clicks():
    rng = random.Random(2)
    tie = AnnotatorConfig(tau=0.1, tie_band=10.0)
    assert decide(config=tie, world=WORLD, turns=TURNS, left_text="85.", right_text="84.",
                  rng=rng).choice == "tie"
    picky = AnnotatorConfig(tau=0.0, both_bad_below=0.0)
    both_wrong = decide(config=picky, world=WORLD, turns=TURNS, left_text="84.",
                        right_text="83.", rng=rng)
    assert both_wrong.choice == "both_bad" and both_wrong.strength is None
    assert decide(config=picky, world=WORLD, turns=TURNS, left_text="84.", right_text="85.",
                  rng=rng).choice == "right"
    clicker = AnnotatorConfig(random_rate=1.0)
    picks = [decide(config=clicker, world=WORLD, turns=TURNS, left_text="85.",
                    right_text="84.", rng=rng).choice for _ in range(2000)]
    assert picks.count("left") / len(picks) == pytest.approx(0.5, abs=0.04)


def test_unreadable_prompt_leaves_only_biases_and_noise():
    config = AnnotatorConfig(tau=0.0, bias={"length": 1.0})
    turns = [{"role": "user", "content": "Write me a poem."}]
    d = decide(config=config, world=WORLD, turns=turns, left_text="short",
               right_text="a much longer reply", rng=random.Random(0))
    assert d.margin == 0.0 and d.choice == "right"


def test_drift_schedule_switches_parameters_at_t0():
    config = replace(CROWD, drift=DriftSchedule(t0=10, tau=2.0, bias={"length": 1.0}))
    assert config.at(9) is config
    after = config.at(10)
    assert after.tau == 2.0 and after.bias == {"length": 1.0}
    assert after.position_bias == CROWD.position_bias and after.drift is None


def test_parse_pool():
    members = parse_pool("crowd:8, drifting:1,expert:2")
    assert [(m.kind, m.count) for m in members] == [("crowd", 8), ("drifting", 1), ("expert", 2)]
    assert members[0].config is CROWD
    for bad in ("crowd", "crowd:x", "gods:2", "crowd:1,crowd:2", "crowd:0", ""):
        with pytest.raises(ValueError):
            parse_pool(bad)


# ---------------------------------------------------------------------------------------------
# Campaigns from a world
# ---------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_world_campaign_has_features_comparisons_and_calibration():
    campaign = _campaign(n_prompts=30, pairs_per_prompt=2, n_calibration=15)
    regular = campaign.comparisons.filter(kind=Comparison.Kind.REGULAR)
    calibration = list(campaign.comparisons.filter(kind=Comparison.Kind.CALIBRATION)
                       .select_related("prompt", "response_a", "response_b"))
    assert regular.count() == 60 and len(calibration) == 15
    assert campaign.prompts.count() == 30  # calibration items sit on regular prompts
    assert not campaign.prompts.filter(category__in=WORLD.held_out_categories).exists()
    for response in Response.objects.filter(prompt__campaign=campaign).select_related("prompt"):
        prompt = WORLD.parse_prompt(response.prompt.turns)
        assert response.features["utility"] == WORLD.utility(prompt, response.text)
        assert response.features["length"] == WORLD.features(prompt, response.text)["length"]
    types = {(c.calibration_type, tuple(c.gold_accepts) != (c.gold_choice,)) for c in calibration}
    assert types == {("known_answer", False), ("known_answer", True), ("degraded", False)}
    for c in calibration:
        good, bad = ((c.response_a, c.response_b) if c.gold_choice == "A"
                     else (c.response_b, c.response_a))
        assert good.features["utility"] > bad.features["utility"]
        assert c.gold_choice in c.gold_accepts and set(c.gold_accepts) <= {"A", "B", "tie"}
    assert {c.gold_choice for c in calibration} == {"A", "B"}  # the good side is random


@pytest.mark.django_db
def test_world_campaign_is_deterministic_and_validates():
    first = _campaign("one", seed=5)
    second = _campaign("two", seed=5)

    def texts(c):
        return list(Comparison.objects.filter(campaign=c).order_by("id")
                    .values_list("response_a__text", "response_b__text", "kind", "gold_choice"))

    assert texts(first) == texts(second)
    held = _campaign("held", include_held_out=True, n_prompts=20)
    assert held.prompts.filter(category__in=WORLD.held_out_categories).exists()
    with pytest.raises(ApplicationError, match="already exists"):
        _campaign("one")
    with pytest.raises(ApplicationError, match="Unknown world"):
        world_campaign_create(world_name="chess", name="x", n_prompts=3, seed=1)
    with pytest.raises(ApplicationError):
        world_campaign_create(world_name="arithmetic", name="y", n_prompts=0, seed=1)
    with pytest.raises(ApplicationError, match="name"):
        world_campaign_create(world_name="arithmetic", name="not a slug", n_prompts=2, seed=1)


# ---------------------------------------------------------------------------------------------
# Simulated runs through the services
# ---------------------------------------------------------------------------------------------

def _regular_decided(campaign: Campaign, username_prefix: str) -> list[Judgment]:
    return list(
        Judgment.objects.filter(campaign=campaign, comparison__kind=Comparison.Kind.REGULAR,
                                annotator__username__startswith=username_prefix,
                                choice__in=["A", "B"])
        .select_related("comparison__response_a", "comparison__response_b")
    )


def _length_excess(judgments: list[Judgment], tau: float) -> tuple[float, float, int]:
    """Mean of [longer reply chosen] minus its expectation from utility alone, with its SE."""
    diffs = []
    for j in judgments:
        a, b = j.comparison.response_a.features, j.comparison.response_b.features
        if abs(a["length"] - b["length"]) < 0.5:
            continue
        long_, short = (a, b) if a["length"] > b["length"] else (b, a)
        chose_long = (j.choice == "A") == (long_ is a)
        diffs.append(chose_long - _sigmoid((long_["utility"] - short["utility"]) / tau))
    n = len(diffs)
    mean = sum(diffs) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)
    return mean, se, n


@pytest.mark.django_db
def test_length_biased_crowd_prefers_longer_replies_beyond_their_utility():
    """Through the services, the crowd's length bias shows; the unbiased experts' does not."""
    campaign = _campaign(n_prompts=35, calibration_rate=0.0, overlap=3)
    result = simulate_campaign(campaign=campaign, pool="crowd:2,expert:1", seed=7)
    assert result.exhausted and result.n_judgments >= 3 * 70
    crowd, crowd_se, n = _length_excess(_regular_decided(campaign, "sim-crowd"), CROWD.tau)
    expert, expert_se, _ = _length_excess(_regular_decided(campaign, "sim-expert"), EXPERT.tau)
    assert n > 70
    assert crowd > 0.1 and crowd > 3 * crowd_se
    assert abs(expert) < 3 * expert_se + 0.03


@pytest.mark.django_db
def test_position_bias_shows_in_screen_side_versus_choice():
    """The annotator decides in screen terms, so a left-side bias is visible in the judgments."""
    campaign = _campaign(n_prompts=25, calibration_rate=0.0, overlap=2)
    lefty = PoolMember("crowd", 2, replace(CROWD, position_bias=0.8))
    simulate_campaign(campaign=campaign, pool=[lefty], seed=3)
    judgments = list(Judgment.objects.filter(campaign=campaign, choice__in=["A", "B"]))
    assert len(judgments) > 90
    assert {j.a_on_left for j in judgments} == {True, False}  # the server picked the sides
    share_left = sum(_screen_choice(j) == "left" for j in judgments) / len(judgments)
    share_a = sum(j.choice == "A" for j in judgments) / len(judgments)
    assert share_left > 0.65
    assert abs(share_a - 0.5) < abs(share_left - 0.5)  # canonical order carries no bias


@pytest.mark.django_db
def test_drifting_annotator_gold_accuracy_falls_after_t0():
    t0 = 30
    drifting = AnnotatorConfig(tau=0.2, drift=DriftSchedule(t0=t0, tau=3.0))
    campaign = _campaign(n_prompts=40, calibration_rate=0.5, n_calibration=60, overlap=1)
    result = simulate_campaign(campaign=campaign, pool=[PoolMember("drifting", 1, drifting)],
                               n_judgments=100, seed=2)
    assert result.n_judgments == 100
    stream = Judgment.objects.filter(campaign=campaign).order_by("id").select_related("comparison")
    before, after = [], []
    for t, j in enumerate(stream):
        c = j.comparison
        if c.kind != Comparison.Kind.CALIBRATION or c.gold_choice is None:
            continue
        ok = _gold_ok(j)
        (before if t < t0 else after).append(ok)
    assert len(before) >= 10 and len(after) >= 25, (len(before), len(after))
    acc_before, acc_after = sum(before) / len(before), sum(after) / len(after)
    assert acc_before >= 0.8
    assert acc_after < acc_before - 0.25


@pytest.mark.django_db
def test_simulator_never_reads_gold():
    """Flipping every gold answer changes nothing the simulated annotators do."""
    def run(name: str, flip: bool) -> tuple[list[tuple], float]:
        campaign = _campaign(name, n_prompts=20, calibration_rate=0.4, overlap=2)
        if flip:
            swap = {"A": "B", "B": "A", "tie": "tie"}
            for c in campaign.comparisons.filter(kind=Comparison.Kind.CALIBRATION):
                c.gold_choice = swap[c.gold_choice]
                c.gold_accepts = [swap[x] for x in c.gold_accepts]
                c.save(update_fields=["gold_choice", "gold_accepts"])
        simulate_campaign(campaign=campaign, pool="crowd:2,expert:1", n_judgments=60, seed=4)
        rows, hits, gold = [], 0, 0
        for j in (Judgment.objects.filter(campaign=campaign).order_by("id")
                  .select_related("annotator", "comparison__prompt", "comparison__response_a",
                                  "comparison__response_b")):
            c = j.comparison
            a, b = c.response_a.text, c.response_b.text
            left, right = (a, b) if j.a_on_left else (b, a)
            rows.append((j.annotator.username, c.prompt.external_id, left, right,
                         _screen_choice(j), j.strength))
            if c.kind == Comparison.Kind.CALIBRATION and c.gold_choice:
                gold += 1
                hits += _gold_ok(j)
        return rows, hits / gold

    plain, plain_acc = run("plain", flip=False)
    flipped, flipped_acc = run("flipped", flip=True)
    assert len(plain) == 60
    assert plain == flipped
    assert plain_acc > 0.7 > flipped_acc  # the gold mattered for scoring, not for choosing


@pytest.mark.django_db
def test_paused_annotator_stops_while_the_others_go_on():
    campaign = _campaign("pause", n_prompts=5, calibration_rate=0.0, overlap=2)
    user = simulated_annotator_get_or_create(kind="crowd", index=0)
    AnnotatorProfile.objects.filter(user=user).update(status=AnnotatorProfile.Status.PAUSED)
    result = simulate_campaign(campaign=campaign, pool="crowd:2", seed=1)
    assert result.per_annotator == {"sim-crowd-00": 0, "sim-crowd-01": 10}
    assert "paused" in result.stopped["sim-crowd-00"]
    assert result.stopped["sim-crowd-01"] == "no work left" and result.exhausted


# ---------------------------------------------------------------------------------------------
# Management commands and the HTTP load mode
# ---------------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_seed_world_and_simulate_commands(capsys):
    call_command("seed_world", "--campaign", "cmd", "--prompts", "10", "--seed", "3")
    assert "Created campaign 'cmd'" in capsys.readouterr().out
    call_command("seed_world", "--campaign", "cmd", "--prompts", "10", "--seed", "3")
    assert "already exists" in capsys.readouterr().out
    assert Campaign.objects.filter(name="cmd").count() == 1
    call_command("simulate", "--campaign", "cmd", "--pool", "crowd:2", "--judgments", "12",
                 "--seed", "1", "--no-progress")
    assert "12 judgments" in capsys.readouterr().out
    assert Judgment.objects.filter(campaign__name="cmd").count() == 12
    with pytest.raises(CommandError, match="No campaign"):
        call_command("simulate", "--campaign", "nope", "--no-progress")
    with pytest.raises(CommandError, match="Unknown annotator kind"):
        call_command("simulate", "--campaign", "cmd", "--pool", "gods:1", "--no-progress")


@pytest.mark.django_db(transaction=True)
def test_http_load_mode_submits_through_the_rest_api(live_server):
    campaign = _campaign("http", n_prompts=5, calibration_rate=0.2, overlap=1)
    result = simulate_campaign(campaign=campaign, pool="expert:1,crowd:1", n_judgments=6,
                               seed=1, http_base_url=live_server.url)
    assert result.n_judgments == 6 and not result.stopped
    judgments = Judgment.objects.filter(campaign=campaign)
    assert judgments.count() == 6
    assert {j.idempotency_key[:4] for j in judgments} == {"sim-"}
    assert set(judgments.values_list("annotator__username", flat=True)) == {
        "sim-expert-00", "sim-crowd-00"}


# ---------------------------------------------------------------------------------------------
# The known truth: simulate's JSON line and simulated_truth
# ---------------------------------------------------------------------------------------------

def _direct_truth(campaign: Campaign, username: str) -> tuple[int, int, int, int, int]:
    """(scored, correct, current judgments, scored regular, correct regular) of one annotator,
    counted straight from the texts: the world reads each question from the turns and scores
    both replies; equal utilities and tie/both-bad answers are not scored."""
    scored = correct = n = scored_regular = correct_regular = 0
    for j in (Judgment.objects.filter(campaign=campaign, annotator__username=username,
                                      superseded_by__isnull=True)
              .select_related("comparison__prompt", "comparison__response_a",
                              "comparison__response_b")):
        n += 1
        prompt = WORLD.parse_prompt(j.comparison.prompt.turns)
        u_a = WORLD.utility(prompt, j.comparison.response_a.text)
        u_b = WORLD.utility(prompt, j.comparison.response_b.text)
        if j.choice not in ("A", "B") or u_a == u_b:
            continue
        ok = (j.choice == "A") == (u_a > u_b)
        scored += 1
        correct += ok
        if j.comparison.kind == Comparison.Kind.REGULAR:
            scored_regular += 1
            correct_regular += ok
    return scored, correct, n, scored_regular, correct_regular


@pytest.mark.django_db
def test_simulate_ends_with_a_json_line_of_true_accuracies_that_match_a_direct_count(capsys):
    """The last line parses; each annotator's true accuracy, parameters and onset are the ones
    counted from the texts and set in the presets; the total is their judgment-weighted error."""
    import json

    from evaluation.simulation import DRIFTING

    _campaign("truth", n_prompts=30, calibration_rate=0.2, overlap=3)
    call_command("simulate", "--campaign", "truth", "--pool", "crowd:2,drifting:1,expert:1",
                 "--judgments", "120", "--seed", "5", "--no-progress")
    out = capsys.readouterr().out.strip().splitlines()
    line = json.loads(out[-1])
    assert line["campaign"] == "truth" and line["world"] == "arithmetic"
    assert line["run"]["n_judgments"] == 120
    campaign = Campaign.objects.get(name="truth")
    by_name = {a["username"]: a for a in line["annotators"]}
    assert set(by_name) == {"sim-crowd-00", "sim-crowd-01", "sim-drifting-00", "sim-expert-00"}
    weighted = weight = 0.0
    for username, a in by_name.items():
        scored, correct, n, scored_regular, correct_regular = _direct_truth(campaign, username)
        assert scored >= 20 and scored > scored_regular > 0, (username, scored, scored_regular)
        assert (a["n_scored"], a["n_correct"], a["n_judgments"]) == (scored, correct, n)
        assert a["true_accuracy"] == pytest.approx(correct / scored)
        assert a["n_scored_regular"] == scored_regular
        assert a["true_accuracy_regular"] == pytest.approx(correct_regular / scored_regular)
        assert a["true_accuracy_calibration"] == pytest.approx(
            (correct - correct_regular) / (scored - scored_regular))
        assert a["judgments_this_run"] == n == 30
        weighted += n * (1 - correct / scored)
        weight += n
    assert line["totals"]["true_error"] == pytest.approx(weighted / weight)
    assert line["totals"]["n_judgments"] == 120
    # Parameters and onsets come from the pool's configs.
    assert by_name["sim-expert-00"]["config"]["tau"] == EXPERT.tau
    assert by_name["sim-crowd-00"]["config"]["bias"] == dict(CROWD.bias)
    assert by_name["sim-crowd-00"]["drift_onset_judgment"] is None
    drifting = by_name["sim-drifting-00"]
    assert drifting["drift_onset_judgment"] == DRIFTING.drift.t0 + 1 == 61
    assert drifting["config"]["drift"]["tau"] == DRIFTING.drift.tau
    # The experts beat the crowd in truth, by a margin this small run still shows.
    assert by_name["sim-expert-00"]["true_accuracy"] > 0.85 > max(
        by_name["sim-crowd-00"]["true_accuracy"], by_name["sim-crowd-01"]["true_accuracy"])


@pytest.mark.django_db
def test_simulated_truth_splits_accuracy_at_the_drift_onset_judgment():
    """A schedule changing at t0 = 20 gives onset judgment 21; the scored answers before and
    after it are those of judgments 1-20 and 21-60, and the drift shows in truth."""
    from evaluation.services import simulated_truth

    t0 = 20
    config = AnnotatorConfig(tau=0.1, drift=DriftSchedule(t0=t0, tau=3.0))
    campaign = _campaign("split", n_prompts=40, calibration_rate=0.2, overlap=1)
    simulate_campaign(campaign=campaign, pool=[PoolMember("drifty", 1, config)],
                      n_judgments=60, seed=3)
    truth = simulated_truth(campaign=campaign, configs={"sim-drifty-00": config})
    (a,) = truth["annotators"]
    assert a["drift_onset_judgment"] == t0 + 1
    judgments = list(Judgment.objects.filter(campaign=campaign).order_by("created_at", "id")
                     .select_related("comparison__prompt", "comparison__response_a",
                                     "comparison__response_b"))
    halves = {True: [0, 0], False: [0, 0]}  # before onset -> [scored, correct]
    for number, j in enumerate(judgments, start=1):
        prompt = WORLD.parse_prompt(j.comparison.prompt.turns)
        u_a = WORLD.utility(prompt, j.comparison.response_a.text)
        u_b = WORLD.utility(prompt, j.comparison.response_b.text)
        if j.choice in ("A", "B") and u_a != u_b:
            half = halves[number < t0 + 1]
            half[0] += 1
            half[1] += (j.choice == "A") == (u_a > u_b)
    assert a["true_accuracy_before_onset"] == pytest.approx(halves[True][1] / halves[True][0])
    assert a["true_accuracy_after_onset"] == pytest.approx(halves[False][1] / halves[False][0])
    assert a["n_scored_after_onset"] == halves[False][0]
    assert a["true_accuracy_before_onset"] > a["true_accuracy_after_onset"] + 0.2
    # A user with no preset and no config has truth but no parameters.
    assert simulated_truth(campaign=campaign)["annotators"][0]["config"] is None


def test_answer_truth_defines_ties_and_abstentions():
    from evaluation.simulation import answer_truth

    assert answer_truth("A", 1.0, -0.5) is True
    assert answer_truth("B", 1.0, -0.5) is False
    assert answer_truth("B", 0.2, 0.2 + 1e-12) is None  # equal utilities: no right answer
    assert answer_truth("tie", 1.0, -0.5) is None
    assert answer_truth("A", None, 1.0) is None
