"""What the app costs a training run: the same model, data and config trained through the app
and by a bare TRL script, alternating in one process (issue 8).

- **app**: ``run_create`` + ``run_execute`` (the Celery task's body: job start, heartbeat
  thread, snapshot read and hash check, the method module, ``ReporterCallback`` writing
  progress, metrics and the heartbeat every ``GAPLAB_RUN_REPORT_EVERY`` steps and reading the
  cancel flag, artifact hashing, model registration).
- **bare**: the same tokenized dataset, the same TRL config (``training_args``: seed, batch,
  steps, learning rate, checkpoint interval) and the plain TRL trainer (``RewardTrainer``,
  ``DPOTrainer`` with the same explicit reference), no callback and no database.

Throughput = optimizer steps / ``train_runtime`` (the trainer's own clock around its training
loop: the part the app can slow down with its callback; loading and saving are the same code in
both). ``rm_ratio`` and ``dpo_ratio`` = median app throughput / median bare throughput over the
rounds (target >= 0.95). The end-to-end wall time of each app run is printed beside it.

    .venv/bin/python benchmarks/training_overhead.py [--rounds 3]

Uses DATABASE_URL when set, else a throwaway SQLite file. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
if "GAPLAB_DATA_DIR" not in os.environ:
    os.environ["GAPLAB_DATA_DIR"] = tempfile.mkdtemp(prefix="gaplab-overhead-")

RM_CONFIG = {"max_steps": 120, "batch_size": 16, "eval_fraction": 0.0,
             "train_accuracy_pairs": 0, "use_weight": False}
DPO_CONFIG = {"max_steps": 40, "batch_size": 8, "kl_every": 0, "kl_prompts": 4,
              "kl_samples": 2, "max_new_tokens": 8}


def _setup():
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    from annotation.models import Campaign
    from annotation.services.snapshots import snapshot_create
    from evaluation.corpus import world_corpus
    from evaluation.services import simulate_campaign, world_campaign_create
    from training.services.models import tiny_models_build

    name = f"overhead-{os.getpid()}"
    campaign = world_campaign_create(world_name="arithmetic", name=name, n_prompts=80, seed=0,
                                     overlap=3, calibration_rate=0.1, accuracy_threshold=0.0)
    Campaign.objects.filter(pk=campaign.pk).update(reshow_rate=0.0)
    simulate_campaign(campaign=campaign, pool="expert:3", seed=0)
    snapshot = snapshot_create(campaign=campaign, method="majority")
    tiny = tiny_models_build(corpus=world_corpus("arithmetic", n_prompts=300, seed=0),
                             name=f"overhead-{os.getpid()}", seed=0)
    return snapshot, tiny


def _app(method: str, config: dict, **inputs) -> tuple[float, float]:
    """(steps per second of the training loop, end-to-end seconds) of one run through the app."""
    from training.models import RunMetric, TrainingRun
    from training.services.runs import run_create, run_execute

    run = run_create(method=method, config=config, **inputs)
    started = time.perf_counter()
    run_execute(run_id=run.pk)
    wall = time.perf_counter() - started
    run.refresh_from_db()
    if run.status != TrainingRun.Status.SUCCEEDED:
        raise SystemExit(f"{method} run failed: {run.error[-3000:]}")
    runtime = RunMetric.objects.filter(run=run, name="train_runtime").latest("step").value
    return run.step / runtime, wall


def _bare_ctx(method: str, config: dict, **refs):
    from training.methods import method_config
    from training.methods.base import RunContext

    return RunContext(config=method_config(method, config),
                      output_dir=Path(tempfile.mkdtemp(prefix=f"bare-{method}-")), **refs)


def _bare_rm(snapshot, tiny) -> float:
    """Plain TRL RewardTrainer on the method's own tokenized pairs; steps per second."""
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from annotation.services.snapshots import snapshot_rows
    from training.methods.common import training_args
    from training.methods.reward_model import pairs_from_rows, tokenized_dataset
    from training.modeling import reward_load
    from training.services.runs import model_ref

    ctx = _bare_ctx("reward_model", RM_CONFIG)
    cfg = ctx.config
    model, tokenizer = reward_load(model_ref(tiny["reward"]))
    dataset = tokenized_dataset(tokenizer, pairs_from_rows(snapshot_rows(snapshot)),
                                max_length=cfg.max_length, use_margin=False, use_weight=False)
    dataset = dataset.filter(lambda row: row["length"] <= cfg.max_length)
    args = RewardConfig(**training_args(
        ctx, output_dir=ctx.output_dir, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, max_length=cfg.max_length, disable_dropout=True,
        lr_scheduler_type="linear"))
    trainer = RewardTrainer(model=model, args=args, train_dataset=dataset,
                            processing_class=tokenizer,
                            data_collator=DataCollatorForPreference(
                                pad_token_id=tokenizer.pad_token_id))
    out = trainer.train()
    return trainer.state.global_step / out.metrics["train_runtime"]


def _bare_dpo(snapshot, pi0) -> float:
    """Plain TRL DPOTrainer with an explicit reference; steps per second."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    from annotation.services.snapshots import snapshot_rows
    from training.methods.common import training_args
    from training.modeling import policy_load
    from training.services.runs import model_ref

    ctx = _bare_ctx("dpo", DPO_CONFIG)
    cfg = ctx.config
    model, tokenizer = policy_load(model_ref(pi0))
    reference, _ = policy_load(model_ref(pi0))
    reference.eval()
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
             for r in snapshot_rows(snapshot)]
    args = DPOConfig(**training_args(
        ctx, output_dir=ctx.output_dir, max_steps=cfg.max_steps, batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate, max_length=cfg.max_length, loss_type=[cfg.loss_type],
        beta=cfg.beta, label_smoothing=0.0))
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, processing_class=tokenizer,
                         train_dataset=datasets.Dataset.from_list(pairs))
    out = trainer.train()
    return trainer.state.global_step / out.metrics["train_runtime"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    snapshot, tiny = _setup()
    from training.models import RegisteredModel
    from training.services.runs import run_create, run_execute

    sft = run_create(method="sft", snapshot=snapshot, base_model=tiny["policy"],
                     config={"max_steps": 60})
    run_execute(run_id=sft.pk)
    pi0 = RegisteredModel.objects.get(produced_by=sft)
    results: dict[str, dict[str, list[float]]] = {}
    for r in range(rounds):
        # Alternate which goes first, so a machine that slows down mid-run hurts both alike.
        order = ("app", "bare") if r % 2 == 0 else ("bare", "app")
        for method in ("reward_model", "dpo"):
            rec = results.setdefault(method, {"app": [], "bare": [], "app_wall": []})
            for side in order:
                if side == "app":
                    inputs = ({"snapshot": snapshot, "base_model": tiny["reward"]}
                              if method == "reward_model" else
                              {"snapshot": snapshot, "base_model": pi0, "reference_model": pi0})
                    sps, wall = _app(method, RM_CONFIG if method == "reward_model"
                                     else DPO_CONFIG, **inputs)
                    rec["app"].append(sps)
                    rec["app_wall"].append(wall)
                else:
                    rec["bare"].append(_bare_rm(snapshot, tiny) if method == "reward_model"
                                       else _bare_dpo(snapshot, pi0))
                print(f"round {r} {method:12s} {side}: {rec[side][-1]:.2f} steps/s", flush=True)
    summary = {"rounds": rounds, "load_avg_1m": round(os.getloadavg()[0], 2)}
    for method, key in (("reward_model", "rm"), ("dpo", "dpo")):
        rec = results[method]
        app, bare = statistics.median(rec["app"]), statistics.median(rec["bare"])
        summary[f"{key}_ratio"] = round(app / bare, 3)
        summary[f"{key}_app_steps_per_s"] = round(app, 2)
        summary[f"{key}_bare_steps_per_s"] = round(bare, 2)
        summary[f"{key}_app_wall_s"] = round(statistics.median(rec["app_wall"]), 2)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
