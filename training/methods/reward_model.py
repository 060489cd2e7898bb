"""Reward model: a Bradley-Terry pairwise reward model trained on a snapshot (DESIGN section 6).

Method (Ouyang et al. 2022, InstructGPT, section 3.5; Bradley & Terry 1952): a sequence
classifier with one output r(x, y) is trained on snapshot rows (prompt x, chosen y_c, rejected
y_r) to minimise

    loss_i = -w_i · log σ(r(x, y_c) - r(x, y_r) - m_i)   (+ c · (r_c + r_r)², optional)

with TRL's ``RewardTrainer``. ``m_i`` is the row's ``margin`` (Touvron et al. 2023, Llama 2,
section 3.2.2; TRL's ``margin`` column) when ``use_margin`` is on, ``w_i`` the row's ``weight``
(``annotation.aggregation``: 2·confidence - 1, the factor by which symmetric label noise
shrinks the logistic loss's signal, Natarajan et al. 2013) when ``use_weight`` is on, and ``c``
the centering coefficient of Eisenstein et al. 2023 (TRL's ``center_rewards_coefficient``).
TRL has no per-example weight, so ``_weighted_trainer`` overrides ``compute_loss``; the batch
loss is the mean of the weighted per-pair losses (not divided by the weights' sum), an unbiased
estimate of the weighted risk E[w·loss], so a batch of low-confidence pairs moves the model less
and a pair of weight 0 not at all.

What the model reads is ``training.modeling.reward_texts``, the same function
``modeling.reward_score`` uses when the trained model is later scored (best-of-n, RLHF, the gap
measurements), so training and scoring see identical tokens:

- a model whose tokenizer has a chat template (the tiny Llama reward model) reads the whole
  conversation with the reply as its last turn, as TRL renders conversational pairs. Pairs
  longer than ``max_length`` tokens are dropped (TRL's rule; the count is reported as
  ``dropped_pairs``);
- an encoder without one (all-MiniLM-L6-v2) reads the text pair ([CLS] prompt [SEP] reply
  [SEP]), the prompt flattened to ``role: content`` lines, with its segment ids. Long pairs are
  cut from the left to ``max_length`` tokens, which keeps the end of the conversation and the
  reply (ML-STACK: the last part of an HH prompt plus the reply is what carries the signal); the
  saved tokenizer records that length and side, so ``reward_score`` cuts the same way.

Held-out split: a seeded ``eval_fraction`` of the distinct prompts (not of the rows: two
comparisons of one prompt share text, and splitting them would leak it). After training, pair
accuracy (r_c > r_r; a tie counts one half) is computed with ``modeling.reward_score`` on the
held-out pairs and on up to ``train_accuracy_pairs`` training pairs.

Light at import (the web imports this module to validate configs): torch, transformers, trl and
``training.modeling`` are imported inside functions.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.methods.base import (
    MethodResult,
    ProducedModel,
    RunContext,
    opt,
)
from training.methods.common import TrainerFields, with_report_artifacts

REQUIRES: frozenset[str] = frozenset({"snapshot", "base_model"})
BASE_KINDS: frozenset[str] = frozenset({"reward"})

Turns = list[dict[str, str]]


@dataclass
class Config(TrainerFields):
    """Settings of a reward-model run; stored as JSON on ``TrainingRun.config``."""

    learning_rate: float = opt(1e-4, "Peak AdamW learning rate (linear decay to 0). 1e-4 to 1e-3 "
                                     "for a tiny model built from scratch, about 2e-5 to 5e-5 "
                                     "for a pretrained encoder.", min=1e-8, max=1e-1)
    epochs: float = opt(3.0, "Passes over the training pairs (used when max_steps is 0).",
                        min=0.01, max=1000.0)
    max_steps: int = opt(0, "Optimizer steps; 0 = as many as `epochs` passes take.",
                         min=0, max=1_000_000)
    batch_size: int = opt(16, "Pairs per optimizer step.", min=1, max=4096)
    max_length: int = opt(256, "Longest input in tokens (prompt + reply). Chat models: longer "
                               "pairs are dropped (counted in dropped_pairs). Encoders: cut "
                               "from the left to this length.", min=8, max=8192)
    eval_fraction: float = opt(0.1, "Share of the snapshot's distinct prompts held out for the "
                                    "accuracy (seeded split; 0 = none held out).",
                               min=0.0, max=0.9)
    use_margin: bool = opt(False, "Subtract each row's `margin` (log-odds of the aggregate's "
                                  "confidence, reward units) inside the sigmoid, as TRL does "
                                  "with a margin column.")
    use_weight: bool = opt(True, "Multiply each pair's loss by its row `weight` (2*confidence "
                                 "- 1, in [0, 1]; 0 = the pair teaches nothing).")
    center_rewards_coefficient: float = opt(0.0, "Coefficient of the mean squared sum of the "
                                                 "pair's rewards added to the loss, which keeps "
                                                 "rewards near 0 (0 = off).", min=0.0, max=10.0)
    weight_decay: float = opt(0.0, "AdamW decoupled weight decay (per step, times the LR).",
                              min=0.0, max=1.0)
    warmup_ratio: float = opt(0.0, "Share of the steps spent warming the LR up linearly from "
                                   "0 (passed as transformers' fractional warmup_steps).",
                              min=0.0, max=0.5)
    group_by_length: bool = opt(True, "Batch pairs of similar token length together (shuffled "
                                      "groups of 50 batches; less padding, about twice as fast "
                                      "on text of mixed length).")
    train_accuracy_pairs: int = opt(512, "Training pairs (a seeded subset) scored for the "
                                         "final train accuracy; 0 = none.",
                                    min=0, max=1_000_000)


# --- Data -------------------------------------------------------------------------------------


def _reply(message: Any) -> str:
    """A reply's text from a snapshot side: a list of messages (its last one) or a string."""
    if isinstance(message, str):
        return message
    if isinstance(message, dict):
        return str(message.get("content", ""))
    if not message:
        return ""
    return str(message[-1].get("content", ""))


def pairs_from_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Plain pairs ``{prompt: turns, chosen: str, rejected: str, margin, weight, category}`` from
    snapshot rows (TRL conversational: chosen / rejected are lists with one assistant message)."""
    out = []
    for row in rows:
        out.append({"prompt": list(row["prompt"]), "chosen": _reply(row["chosen"]),
                     "rejected": _reply(row["rejected"]),
                     "margin": float(row.get("margin") or 0.0),
                     "weight": float(row["weight"]) if row.get("weight") is not None else 1.0,
                     "category": row.get("category") or ""})
    return out


def split_pairs(pairs: Sequence[dict[str, Any]], *, eval_fraction: float, seed: int
                ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held out): a seeded share of the distinct prompts goes to held out, all of a
    prompt's pairs together. At least one prompt stays on each side when there are two or more
    (with ``eval_fraction`` > 0)."""
    keys = list(dict.fromkeys(json.dumps(p["prompt"], sort_keys=True) for p in pairs))
    random.Random(seed).shuffle(keys)
    n_eval = round(len(keys) * eval_fraction)
    if eval_fraction > 0 and len(keys) >= 2:
        n_eval = min(max(n_eval, 1), len(keys) - 1)
    held = set(keys[:n_eval])
    train, held_out = [], []
    for pair in pairs:
        (held_out if json.dumps(pair["prompt"], sort_keys=True) in held else train).append(pair)
    return train, held_out


def _encode(tokenizer: Any, prompt: Turns, reply: str, *, max_length: int) -> dict[str, list]:
    """Token ids (and segment ids for a text pair) of one (prompt, reply), built the way
    ``modeling.reward_score`` builds them."""
    from training.modeling import is_chat, reward_texts

    text, pair = reward_texts(tokenizer, prompt, reply)
    if is_chat(tokenizer):
        # No truncation: TRL drops pairs over max_length, and a cut chat text would lose the
        # final end token where a decoder reward model reads its score.
        enc = tokenizer(text, add_special_tokens=False)
    else:
        enc = tokenizer(text, pair or "", truncation="longest_first", max_length=max_length)
    out = {"ids": list(enc["input_ids"])}
    if "token_type_ids" in enc:
        out["types"] = list(enc["token_type_ids"])
    return out


def tokenized_dataset(tokenizer: Any, pairs: Sequence[dict[str, Any]], *, max_length: int,
                      use_margin: bool, use_weight: bool) -> Any:
    """A ``datasets.Dataset`` with TRL's processed columns ``chosen_ids`` / ``rejected_ids``
    (TRL then skips its own tokenization, and still filters by ``max_length``), the segment
    ids of encoders, ``length`` (tokens of the longer side, for ``group_by_length``), and
    ``margin`` / ``weight`` when they are used."""
    from datasets import Dataset

    columns: dict[str, list] = {"chosen_ids": [], "rejected_ids": [], "length": []}
    for pair in pairs:
        chosen = _encode(tokenizer, pair["prompt"], pair["chosen"], max_length=max_length)
        rejected = _encode(tokenizer, pair["prompt"], pair["rejected"], max_length=max_length)
        columns["chosen_ids"].append(chosen["ids"])
        columns["rejected_ids"].append(rejected["ids"])
        columns["length"].append(max(len(chosen["ids"]), len(rejected["ids"])))
        if "types" in chosen:
            columns.setdefault("chosen_type_ids", []).append(chosen["types"])
            columns.setdefault("rejected_type_ids", []).append(rejected["types"])
    if use_margin:
        columns["margin"] = [float(p["margin"]) for p in pairs]
    if use_weight:
        columns["weight"] = [float(p["weight"]) for p in pairs]
    return Dataset.from_dict(columns)


# --- Accuracy ---------------------------------------------------------------------------------


def pair_accuracy(model: Any, tokenizer: Any, pairs: Sequence[dict[str, Any]], *,
                  batch_size: int = 64) -> dict[str, Any]:
    """Pairwise accuracy of a reward model on ``pairs`` ({prompt: turns, chosen: str, rejected:
    str, ...}): ``accuracy`` (r_c > r_r counts 1, a tie one half), ``n``, ``ties`` and ``wins``
    per pair (1, 0.5 or 0, in order), scored with ``modeling.reward_score``."""
    from training.modeling import reward_score

    if not pairs:
        return {"accuracy": math.nan, "n": 0, "ties": 0, "wins": []}
    # Scored longest first in batches of similar length (less padding), then put back in order.
    order = sorted(range(len(pairs)), key=lambda i: -len(json.dumps(pairs[i]["prompt"])) - max(
        len(pairs[i]["chosen"]), len(pairs[i]["rejected"])))
    prompts = [pairs[i]["prompt"] for i in order]
    scored_c = reward_score(model, tokenizer, prompts, [pairs[i]["chosen"] for i in order],
                            batch_size=batch_size)
    scored_r = reward_score(model, tokenizer, prompts, [pairs[i]["rejected"] for i in order],
                            batch_size=batch_size)
    chosen, rejected = [0.0] * len(pairs), [0.0] * len(pairs)
    for i, c, r in zip(order, scored_c, scored_r, strict=True):
        chosen[i], rejected[i] = c, r
    wins = [1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected,
                                                                         strict=True)]
    return {"accuracy": sum(wins) / len(wins), "n": len(wins),
            "ties": sum(1 for w in wins if w == 0.5), "wins": wins}


# --- Trainer ----------------------------------------------------------------------------------


def _weighted_trainer() -> type:
    """``RewardTrainer`` with per-pair weights and encoder segment ids.

    TRL's ``compute_loss`` averages ``-log σ(r_c - r_r - margin)`` over the batch with no
    per-example weight, and its collator passes only ids, mask and margin. This subclass: the
    collator also stacks ``weight`` and the segment ids (``token_type_ids``, which a BERT-style
    text pair needs, and which ``reward_score`` passes at scoring time); ``compute_loss``
    multiplies each pair's loss by its weight before the batch mean and logs the metrics TRL
    logs (``accuracy``, ``margin``, ``min_reward`` / ``mean_reward`` / ``max_reward``).
    """
    import torch
    from torch import nn
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference
    from trl.trainer.utils import pad

    class Collator(DataCollatorForPreference):
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            out = super().torch_call(examples)
            if "weight" in examples[0]:
                out["weight"] = torch.tensor([e["weight"] for e in examples], dtype=torch.float)
            if "chosen_type_ids" in examples[0]:
                types = [torch.tensor(e["chosen_type_ids"]) for e in examples] + [
                    torch.tensor(e["rejected_type_ids"]) for e in examples]
                out["token_type_ids"] = pad(types, padding_value=0, padding_side="right",
                                            pad_to_multiple_of=self.pad_to_multiple_of)
            return out

    class WeightedRewardTrainer(RewardTrainer):
        collator_class = Collator

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:
                self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "weight",
                                           "chosen_type_ids", "rejected_type_ids", "length"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            margin = inputs.pop("margin", None)
            weight = inputs.pop("weight", None)
            model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask",
                                                   "token_type_ids") if k in inputs}
            if getattr(self.model.config, "use_cache", None) is not None:  # unwrapped (DDP)
                model_inputs["use_cache"] = False  # decoders: no KV cache while training
            outputs = model(**model_inputs)
            rewards_chosen, rewards_rejected = torch.chunk(outputs.logits.squeeze(-1), 2)
            diff = rewards_chosen - rewards_rejected
            if margin is not None:
                diff = diff - margin
            per_pair = -nn.functional.logsigmoid(diff)
            if weight is not None:
                per_pair = per_pair * weight
            loss = per_pair.mean()
            if self.args.center_rewards_coefficient:
                loss = loss + self.args.center_rewards_coefficient * torch.mean(
                    (rewards_chosen + rewards_rejected) ** 2)
            with torch.no_grad():
                metrics = self._metrics[mode]
                metrics["min_reward"].append(outputs.logits.min().item())
                metrics["mean_reward"].append(outputs.logits.mean().item())
                metrics["max_reward"].append(outputs.logits.max().item())
                metrics["accuracy"].append((rewards_chosen > rewards_rejected).float()
                                           .mean().item())
                metrics["margin"].append((rewards_chosen - rewards_rejected).mean().item())
            return (loss, outputs) if return_outputs else loss

    return WeightedRewardTrainer


# --- Run --------------------------------------------------------------------------------------


def trainer_build(ctx: RunContext, *, model: Any, tokenizer: Any,
                  train_pairs: Sequence[dict[str, Any]], output_dir: Path) -> tuple[Any, int]:
    """(the weighted ``RewardTrainer``, number of pairs dropped for exceeding ``max_length``).

    The run's seed, checkpoints every ``GAPLAB_RUN_CHECKPOINT_EVERY`` steps under
    ``output_dir``, the reporter's callback. Over-long pairs are dropped here, before the
    trainer (TRL would drop them too), so the step count of ``epochs`` counts only kept pairs.
    """
    from trl import RewardConfig

    from training.methods.common import lora_config, trainer_callbacks, training_args

    config: Config = ctx.config
    dataset = tokenized_dataset(tokenizer, train_pairs, max_length=config.max_length,
                                use_margin=config.use_margin, use_weight=config.use_weight)
    dataset = dataset.filter(lambda row: row["length"] <= config.max_length)
    dropped = len(train_pairs) - len(dataset)
    if len(dataset) == 0:
        raise ValueError(f"Every training pair is longer than max_length={config.max_length} "
                         f"tokens.")
    steps = config.max_steps or max(1, math.ceil(len(dataset) / config.batch_size
                                                 * config.epochs))
    args = RewardConfig(**training_args(
        ctx, output_dir=output_dir, max_steps=steps, batch_size=config.batch_size,
        learning_rate=config.learning_rate, max_length=config.max_length,
        center_rewards_coefficient=config.center_rewards_coefficient or None,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_ratio,
        lr_scheduler_type="linear", disable_dropout=True,
        train_sampling_strategy="group_by_length" if config.group_by_length else "random"))
    trainer_cls = _weighted_trainer()
    trainer = trainer_cls(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
        data_collator=trainer_cls.collator_class(pad_token_id=tokenizer.pad_token_id),
        peft_config=lora_config(config, task_type="SEQ_CLS"),
        callbacks=trainer_callbacks(ctx))
    return trainer, dropped


@with_report_artifacts
def run(ctx: RunContext) -> MethodResult:
    """Train the base reward model on the snapshot's pairs; save it and measure its accuracy."""
    from transformers import set_seed

    from training.methods.common import lora_merged, lora_meta, resume_checkpoint
    from training.modeling import device_choice, is_chat, model_save, reward_load

    config: Config = ctx.config
    if ctx.base_model is None:
        raise ValueError("reward_model needs a base model (a reward model or an encoder).")
    pairs = pairs_from_rows(ctx.rows or [])
    if not pairs:
        raise ValueError("The snapshot has no pairs.")
    train_pairs, held_out = split_pairs(pairs, eval_fraction=config.eval_fraction, seed=ctx.seed)
    if config.use_weight and not any(p["weight"] > 0 for p in train_pairs):
        raise ValueError("Every training pair has weight 0: nothing to learn "
                         "(set use_weight to false to ignore the weights).")

    set_seed(ctx.seed)
    model, tokenizer = reward_load(ctx.base_model, device=device_choice().device)
    chat = is_chat(tokenizer)
    if not chat:
        # The saved tokenizer carries the reading length and side, so reward_score cuts long
        # pairs exactly as training did (see the module docstring).
        tokenizer.truncation_side = "left"
        tokenizer.model_max_length = config.max_length
    checkpoints = Path(ctx.output_dir) / "checkpoints"
    trainer, dropped = trainer_build(ctx, model=model, tokenizer=tokenizer,
                                     train_pairs=train_pairs, output_dir=checkpoints)
    if dropped:
        ctx.reporter.log(f"{dropped} of {len(train_pairs)} training pairs are longer than "
                         f"max_length={config.max_length} tokens and were dropped")
    train_output = trainer.train(resume_from_checkpoint=resume_checkpoint(ctx, checkpoints))
    trained = trainer.model

    metrics: dict[str, float] = {
        "train_pairs": float(len(train_pairs)), "eval_pairs": float(len(held_out)),
        "dropped_pairs": float(dropped), "steps": float(trainer.state.global_step),
        "train_loss": float(train_output.training_loss),
    }
    if held_out:
        acc = pair_accuracy(trained, tokenizer, held_out)
        metrics |= {"eval_accuracy": acc["accuracy"], "eval_ties": float(acc["ties"])}
        by_category: dict[str, list[float]] = {}
        for pair, win in zip(held_out, acc["wins"], strict=True):
            by_category.setdefault(pair["category"] or "", []).append(win)
        if len(by_category) > 1:
            metrics |= {f"eval_accuracy/{c}": sum(w) / len(w)
                        for c, w in sorted(by_category.items()) if c}
    if config.train_accuracy_pairs and train_pairs:
        subset = list(train_pairs)
        random.Random(ctx.seed + 1).shuffle(subset)
        acc = pair_accuracy(trained, tokenizer, subset[:config.train_accuracy_pairs])
        metrics["train_accuracy"] = acc["accuracy"]
    ctx.reporter.metrics(trainer.state.global_step,
                         {k: v for k, v in metrics.items() if math.isfinite(v)})

    model_dir = Path(ctx.output_dir) / "model"
    lora = lora_meta(config, trained)
    meta = model_save(lora_merged(trained), tokenizer, model_dir)
    meta |= {"base_model": ctx.base_model.id, "reads": "chat" if chat else "text_pair",
             "max_length": config.max_length, **lora,
             **{k: metrics[k] for k in ("eval_accuracy", "train_accuracy") if k in metrics}}
    name = f"reward model of run {ctx.run_id}" if ctx.run_id else "reward model"
    return MethodResult(metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
                        models=[ProducedModel(name=name, kind="reward", path=model_dir,
                                              meta=meta)])
