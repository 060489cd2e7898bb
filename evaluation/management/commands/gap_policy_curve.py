"""Trace tilting and best-of-n over a real causal LM's samples (evaluation/policy_pressure.py)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from evaluation.worlds import world_names

SMOLLM2 = "smollm2"


class Command(BaseCommand):
    help = (
        "pi0 = the causal LM in --policy (a local model folder, or 'smollm2' for "
        "SmolLM2-135M-Instruct imported from its wheel) sampled --samples times at "
        "--temperature on --prompts fresh prompts of the world; r-hat = a tiny reward model "
        "trained on a simulated --pool's campaign of the same world (its snapshot rows); r* = "
        "the world's utility. Applies tilting and best-of-n to pi0's pools, fits gold = "
        "d(alpha - beta d) and the gap's slope, and writes everything to --out. The last "
        "stdout line is one JSON object: pi0's share parseable / correct and mean utility, the "
        "reward model's accuracy, per pressure method the gap slope with its interval, peak or "
        "\"no peak\", d*, and the timings."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--policy", required=True,
                            help=f"Model folder (save_pretrained), or '{SMOLLM2}'.")
        parser.add_argument("--tokenizer", default="", help="Tokenizer folder, if apart.")
        parser.add_argument("--world", default="arithmetic", choices=world_names())
        parser.add_argument("--prompts", type=int, default=24, help="Evaluation prompts.")
        parser.add_argument("--samples", type=int, default=8, help="K samples per prompt.")
        parser.add_argument("--temperature", type=float, default=0.7,
                            help="pi0's sampling temperature (part of pi0).")
        parser.add_argument("--max-new-tokens", type=int, default=48)
        parser.add_argument("--out", required=True, help="JSON file for the full result.")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--pool", default="crowd:6",
                            help="Simulated pool whose labels train the reward model.")
        parser.add_argument("--rm-prompts", type=int, default=100,
                            help="Prompts of the reward model's campaign.")
        parser.add_argument("--n-boot", type=int, default=300, help="Bootstrap resamples.")

    def handle(self, *args, **o) -> None:
        for name, lo in (("prompts", 2), ("samples", 2), ("max_new_tokens", 1),
                         ("rm_prompts", 5), ("n_boot", 20)):
            if o[name] < lo:
                raise CommandError(f"--{name.replace('_', '-')} must be >= {lo}")
        if not 0 < o["temperature"] <= 4:
            raise CommandError("--temperature must be in (0, 4]")
        out = Path(o["out"])
        if not out.parent.is_dir():
            raise CommandError(f"--out: no folder {out.parent}")
        from evaluation.simulation import parse_pool

        try:
            parse_pool(o["pool"])
        except ValueError as exc:
            raise CommandError(f"--pool: {exc}") from exc
        policy_path = self._policy(o["policy"])
        started = time.monotonic()
        timing: dict[str, float] = {}

        def stage(name: str, t0: float) -> None:
            timing[name] = round(time.monotonic() - t0, 3)
            self.stderr.write(f"{name}: {timing[name]:.1f} s")
            sys.stderr.flush()

        from django.conf import settings

        from evaluation.policy_pressure import (
            model_gap_curves,
            model_reference_pools,
            trained_reward_scorer,
        )
        from evaluation.worlds import get_world

        world = get_world(o["world"])
        t0 = time.monotonic()
        rows, campaign = _preference_rows(o["world"], o["pool"], o["rm_prompts"], o["seed"])
        stage("annotate", t0)
        t0 = time.monotonic()
        work = (Path(settings.GAPLAB_ARTIFACT_ROOT) / "gap_policy"
                / f"{campaign}-{int(time.time())}")
        scorer, rm_info = trained_reward_scorer(rows=rows, base=_reward_base(o["world"]),
                                                out_dir=work / "rm", seed=o["seed"])
        stage("reward_model", t0)
        t0 = time.monotonic()
        try:
            prompts, pools = model_reference_pools(
                world, policy_path=policy_path, tokenizer_path=o["tokenizer"],
                n_prompts=o["prompts"], k=o["samples"], temperature=o["temperature"],
                seed=o["seed"], max_new_tokens=o["max_new_tokens"])
        except (OSError, ValueError) as exc:
            raise CommandError(f"--policy: {exc}") from exc
        stage("sample", t0)
        t0 = time.monotonic()
        try:
            result = model_gap_curves(world, prompts=prompts, pools=pools, reward_scorer=scorer,
                                      seed=o["seed"], n_boot=o["n_boot"])
        except ValueError as exc:  # e.g. every reply scored alike: nothing to tilt by
            raise CommandError(f"pi0's pools cannot be traced: {exc}") from exc
        stage("curves", t0)
        timing["total"] = round(time.monotonic() - started, 3)
        config = {k: o[k] for k in ("world", "prompts", "samples", "temperature",
                                    "max_new_tokens", "seed", "pool", "rm_prompts", "n_boot")}
        config |= {"policy": policy_path, "campaign": campaign, "rows": len(rows)}
        full = {"config": config, "reward_model": rm_info, "timing": timing,
                **result.as_dict(),
                "examples": [{"prompt": p.turns[-1]["content"], "replies": pool[:3]}
                             for p, pool in zip(prompts[:5], pools[:5], strict=True)]}
        out.write_text(json.dumps(full, indent=1, allow_nan=False))
        for method, h in result.headline.items():
            self.stdout.write(f"{method}: gap slope {h['gap_slope']['value']:.3f} "
                              f"[{h['gap_slope']['lo']:.3f}, {h['gap_slope']['hi']:.3f}], "
                              f"gold at d={h['d_max']:.2f} {h['gold_at_max']:.3f}, "
                              f"peak {h['peak'] if h['peak'] == 'no peak' else h['d_star']}")
        ref = result.reference
        self.stdout.write(json.dumps({
            "policy": policy_path, "temperature": o["temperature"], "prompts": o["prompts"],
            "samples": o["samples"], "reference": {k: ref[k] for k in (
                "utility_mean", "parseable", "correct", "words", "corr_proxy_true")},
            "rm_eval_accuracy": rm_info.get("eval_accuracy"),
            **{m: {k: h[k] for k in ("gap_slope", "peak", "d_star", "d_max", "proxy_at_max",
                                     "gold_at_max", "gold_max")}
               for m, h in result.headline.items()},
            "timing": timing, "out": str(out),
        }, allow_nan=False, default=_json_default))

    def _policy(self, policy: str) -> str:
        if policy == SMOLLM2:
            from training.services.models import base_policy_import

            try:
                return base_policy_import().path
            except (ImportError, FileNotFoundError) as exc:
                raise CommandError(f"--policy {SMOLLM2}: {exc}") from exc
        if not Path(policy).is_dir():
            raise CommandError(f"--policy: no model folder at {policy!r}")
        return str(Path(policy).resolve())


def _json_default(value):
    return None


def _preference_rows(world_name: str, pool: str, n_prompts: int, seed: int
                     ) -> tuple[list[dict], str]:
    """The snapshot rows of a simulated campaign of the world (reused when one of this pool,
    size and seed exists), through the services a person's judgments go through."""
    from annotation.models import Campaign
    from annotation.services.snapshots import snapshot_create, snapshot_rows
    from evaluation.services import simulate_campaign, world_campaign_create

    slug = pool.replace(":", "").replace(",", "-")
    name = f"gap-policy-{world_name}-{slug}-p{n_prompts}-s{seed}"
    campaign = Campaign.objects.filter(name=name).first()
    if campaign is None:
        campaign = world_campaign_create(world_name=world_name, name=name, n_prompts=n_prompts,
                                         seed=seed, overlap=3, calibration_rate=0.1,
                                         accuracy_threshold=0.0,
                                         title=f"Reward model of gap_policy_curve ({pool})")
        Campaign.objects.filter(pk=campaign.pk).update(reshow_rate=0.0)
        campaign.refresh_from_db()
        simulate_campaign(campaign=campaign, pool=pool, seed=seed)
    return snapshot_rows(snapshot_create(campaign=campaign, method="majority")), name


def _reward_base(world_name: str):
    """The tiny untrained reward model of the world, as experiments build it (same name, so the
    same registered folders)."""
    from evaluation.corpus import world_corpus
    from training.services.models import tiny_models_build
    from training.services.runs import model_ref

    built = tiny_models_build(corpus=world_corpus(world_name, n_prompts=300, seed=0),
                              name=f"experiment-{world_name}-h64-l2", seed=0, hidden=64,
                              layers=2)
    return model_ref(built["reward"])
