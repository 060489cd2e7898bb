"""The reward_model method called directly (``run(RunContext)``), its weighted loss and margin,
and ``manage.py rm_eval``. Through-the-worker runs are tested with the other run tests."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from training.methods import method_config
from training.methods import reward_model as rm
from training.methods.base import ConfigError, ModelRef, NullReporter, RunContext, config_build

WORLD_SEED = 3


def world_rows(n_prompts: int, *, seed: int = WORLD_SEED, per_prompt: int = 2) -> list[dict]:
    """Snapshot-shaped rows of the arithmetic world, as a clean expert labels them: a reply with
    the correct answer chosen over one with a wrong answer (candidate replies of every style)."""
    from evaluation.worlds import get_world

    world = get_world("arithmetic")
    rng = random.Random(seed)
    rows = []
    for prompt in world.generate_prompts(n_prompts, seed, categories=(
            "addition", "subtraction", "multiplication", "word_problem", "wrong_belief")):
        replies = world.candidate_responses(prompt, rng)
        features = [world.features(prompt, r) for r in replies]
        good = [r for r, f in zip(replies, features, strict=True) if f["correct"]]
        bad = [r for r, f in zip(replies, features, strict=True)
               if f["has_answer"] and not f["correct"]]
        for _ in range(per_prompt):
            rows.append({"prompt": prompt.turns,
                         "chosen": [{"role": "assistant", "content": rng.choice(good)}],
                         "rejected": [{"role": "assistant", "content": rng.choice(bad)}],
                         "margin": 1.0, "weight": 1.0, "category": prompt.category})
    return rows


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
    """One reward model trained on 150 world prompts (2 pairs each, a quarter of the prompts
    held out), shared by the tests that read it."""
    rows = world_rows(150)
    config = config_build(rm.Config, {"learning_rate": 2e-3, "epochs": 4.0,
                                      "eval_fraction": 0.25, "train_accuracy_pairs": 64})
    reporter = NullReporter()
    out = tmp_path_factory.mktemp("rm_run")
    ctx = RunContext(config=config, output_dir=out, reporter=reporter, seed=0, rows=rows,
                     base_model=tiny_models.reward_ref)
    result = rm.run(ctx)
    return {"rows": rows, "config": config, "reporter": reporter, "result": result, "out": out}


def test_tiny_reward_model_learns_the_correct_answer_on_held_out_prompts(trained, tiny_models):
    """A clean expert's pairs teach the tiny reward model to prefer correct answers on prompts
    it never saw (held-out pair accuracy > 0.8); the loss was logged and fell, a checkpoint was
    recorded, and the saved model (its own folder and tokenizer) reproduces the accuracy."""
    from training.modeling import reward_load

    result, reporter = trained["result"], trained["reporter"]
    metrics = result.metrics
    assert metrics["eval_pairs"] > 50 and metrics["dropped_pairs"] == 0
    assert metrics["eval_accuracy"] > 0.8
    losses = [values["loss"] for _, values in reporter.rows if "loss" in values]
    assert len(losses) >= 3 and losses[-1] < losses[0]
    assert reporter.checkpoints and Path(reporter.checkpoints[-1]).is_dir()

    [produced] = result.models
    assert produced.kind == "reward" and produced.path == trained["out"] / "model"
    assert produced.meta["architecture"] == "LlamaForSequenceClassification"
    assert produced.meta["eval_accuracy"] == metrics["eval_accuracy"]
    _, held_out = rm.split_pairs(rm.pairs_from_rows(trained["rows"]), eval_fraction=0.25, seed=0)
    model, tokenizer = reward_load(ModelRef(id=None, path=str(produced.path), kind="reward"))
    assert rm.pair_accuracy(model, tokenizer, held_out)["accuracy"] == metrics["eval_accuracy"]
    base, _ = reward_load(tiny_models.reward_ref)
    assert rm.pair_accuracy(base, tokenizer, held_out)["accuracy"] < metrics["eval_accuracy"]


def test_the_held_out_split_keeps_each_prompts_pairs_together():
    """No prompt has pairs on both sides of the split, and the same seed gives the same split."""
    pairs = rm.pairs_from_rows(world_rows(40, per_prompt=3))
    train, held = rm.split_pairs(pairs, eval_fraction=0.25, seed=1)
    key = lambda p: json.dumps(p["prompt"])  # noqa: E731
    assert {key(p) for p in train}.isdisjoint(key(p) for p in held)
    assert len(train) + len(held) == len(pairs) and len({key(p) for p in held}) == 10
    assert rm.split_pairs(pairs, eval_fraction=0.25, seed=1) == (train, held)


# --- The loss: weights and margins -------------------------------------------------------------


def _trainer(tiny_models, tmp_path, pairs, **config):
    from training.modeling import reward_load

    model, tokenizer = reward_load(tiny_models.reward_ref, device="cpu")
    ctx = RunContext(config=config_build(rm.Config, {"group_by_length": False, **config}),
                     output_dir=tmp_path, seed=0)
    trainer, dropped = rm.trainer_build(ctx, model=model, tokenizer=tokenizer,
                                        train_pairs=pairs, output_dir=tmp_path / "ck")
    return trainer, dropped


def _batch(trainer, indices):
    return trainer.data_collator([trainer.train_dataset[i] for i in indices])


def _rewards(trainer, batch):
    """(r_chosen, r_rejected) per pair of a collated batch, as the model scores them."""
    import torch

    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"],
                               attention_mask=batch["attention_mask"]).logits.squeeze(-1)
    return torch.chunk(logits, 2)


def test_a_pair_of_weight_zero_contributes_nothing_to_loss_or_gradient(tiny_models, tmp_path):
    """With use_weight, the batch loss is mean_i(w_i * -log σ(r_c - r_r)): a pair of weight 0
    alone gives loss 0 and no gradient, and in a batch its term vanishes; without use_weight
    the same pairs give the plain Bradley-Terry mean."""
    import torch

    pairs = rm.pairs_from_rows(world_rows(2, per_prompt=1))
    pairs[0]["weight"], pairs[1]["weight"] = 0.0, 0.7
    trainer, _ = _trainer(tiny_models, tmp_path, pairs, use_weight=True)
    trainer.model.train()

    alone = _batch(trainer, [0])
    assert alone["weight"].tolist() == [0.0]
    loss = trainer.compute_loss(trainer.model, dict(alone))
    loss.backward()
    assert loss.item() == 0.0
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert grads and all(float(g.abs().max()) == 0.0 for g in grads)
    trainer.model.zero_grad()

    both = _batch(trainer, [0, 1])
    chosen, rejected = _rewards(trainer, both)
    per_pair = -torch.nn.functional.logsigmoid(chosen - rejected)
    loss = trainer.compute_loss(trainer.model, dict(both)).item()
    assert loss == pytest.approx(float(0.7 * per_pair[1]) / 2, rel=1e-5)

    plain, _ = _trainer(tiny_models, tmp_path / "plain", pairs, use_weight=False)
    batch = _batch(plain, [0, 1])
    assert "weight" not in batch
    assert plain.compute_loss(plain.model, dict(batch)).item() == pytest.approx(
        float(per_pair.mean()), rel=1e-5)


def test_use_margin_passes_the_rows_margin_into_the_sigmoid(tiny_models, tmp_path):
    """With use_margin the collated batch carries each row's margin and the loss is
    -log σ(r_c - r_r - margin); without it there is no margin column."""
    import torch

    pairs = rm.pairs_from_rows(world_rows(2, per_prompt=1))
    pairs[0]["margin"], pairs[1]["margin"] = 0.0, 2.5
    trainer, _ = _trainer(tiny_models, tmp_path, pairs, use_margin=True, use_weight=False)
    batch = _batch(trainer, [0, 1])
    assert batch["margin"].tolist() == [0.0, 2.5]
    chosen, rejected = _rewards(trainer, batch)
    expected = -torch.nn.functional.logsigmoid(chosen - rejected - torch.tensor([0.0, 2.5]))
    assert trainer.compute_loss(trainer.model, dict(batch)).item() == pytest.approx(
        float(expected.mean()), rel=1e-5)

    without, _ = _trainer(tiny_models, tmp_path / "without", pairs, use_weight=False)
    assert "margin" not in _batch(without, [0, 1])


def test_pairs_longer_than_max_length_are_dropped_and_counted(tiny_models, tmp_path):
    """A chat model's pairs over max_length tokens are left out of training and counted."""
    from training.modeling import tokenizer_load

    pairs = rm.pairs_from_rows(world_rows(6, per_prompt=1))
    longest = max(rm.tokenized_dataset(tokenizer_load(tiny_models.reward_ref), pairs,
                                       max_length=512, use_margin=False,
                                       use_weight=False)["length"])
    pairs[2]["chosen"] = " ".join(["padding words"] * 100)
    trainer, dropped = _trainer(tiny_models, tmp_path, pairs, max_length=longest)
    assert dropped == 1 and len(trainer.train_dataset) == len(pairs) - 1


# --- Config ------------------------------------------------------------------------------------


def test_a_bad_config_names_every_bad_field():
    """Wrong types, out-of-range values and unknown fields are each named."""
    with pytest.raises(ConfigError) as caught:
        method_config("reward_model", {"learning_rate": -1, "batch_size": 0,
                                       "eval_fraction": 2.0, "use_margin": "yes",
                                       "max_length": 1.5, "epochs": 0, "bogus": 1})
    assert set(caught.value.errors) == {"learning_rate", "batch_size", "eval_fraction",
                                        "use_margin", "max_length", "epochs", "bogus"}
    assert rm.REQUIRES == {"snapshot", "base_model"} and rm.BASE_KINDS == {"reward"}


# --- rm_eval -----------------------------------------------------------------------------------


def _last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_rm_eval_prints_accuracy_n_and_categories_as_its_last_line(trained, db, tmp_path,
                                                                   tiny_registered):
    """On the run's held-out pairs (TRL conversational, with categories) rm_eval reproduces the
    run's held-out accuracy, with one subset per category whose sizes add up to n."""
    from io import StringIO

    from training.services.runs import model_register

    produced = trained["result"].models[0]
    model = model_register(name="rm", kind="reward", path=produced.path,
                           tokenizer=tiny_registered["tokenizer"])
    held_ids = {json.dumps(p["prompt"]) for p in rm.split_pairs(
        rm.pairs_from_rows(trained["rows"]), eval_fraction=0.25, seed=0)[1]}
    held_rows = [r for r in trained["rows"] if json.dumps(r["prompt"]) in held_ids]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in held_rows))

    out = StringIO()
    call_command("rm_eval", model=model.pk, pairs=str(path), stdout=out)
    summary = _last_json(out.getvalue())
    assert summary["n"] == len(held_rows)
    assert summary["accuracy"] == round(trained["result"].metrics["eval_accuracy"], 4)
    categories = summary["by_category"]
    assert set(categories) == {r["category"] for r in held_rows}
    assert sum(c["n"] for c in categories.values()) == summary["n"]
    assert math.isclose(sum(c["accuracy"] * c["n"] for c in categories.values()) / summary["n"],
                        summary["accuracy"], abs_tol=1e-3)
    assert "by_source" not in summary


def test_rm_eval_reads_hh_pairs_and_groups_sources(db, tmp_path, tiny_registered):
    """HH-format lines (Human/Assistant transcript prompts) are read; sources group without
    their #L anchors; --limit takes the first pairs."""
    from io import StringIO

    lines = [{"prompt": f"\n\nHuman: What is {i} plus 1?\n\nAssistant:",
              "chosen": f"{i + 1}.", "rejected": f"{i + 2}.",
              "source": f"repo@abc:{'a' if i < 3 else 'b'}.jsonl#L{i}"} for i in range(5)]
    path = tmp_path / "hh.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    out = StringIO()
    call_command("rm_eval", model=tiny_registered["reward"].pk, pairs=str(path), limit=4,
                 stdout=out)
    summary = _last_json(out.getvalue())
    from training.methods.reward_model import pair_accuracy
    from training.modeling import reward_load
    from training.services.rm_eval import pairs_load
    from training.services.runs import model_ref

    model, tokenizer = reward_load(model_ref(tiny_registered["reward"]))
    direct = pair_accuracy(model, tokenizer, pairs_load(path=path, limit=4))
    assert summary["n"] == 4 and summary["accuracy"] == round(direct["accuracy"], 4)
    assert {k: v["n"] for k, v in summary["by_source"].items()} == {
        "repo@abc:a.jsonl": 3, "repo@abc:b.jsonl": 1}


def test_rm_eval_refuses_a_bad_model_or_file_with_a_clear_error(db, tmp_path, tiny_registered):
    """Unknown ids, non-reward models, missing files and malformed lines are CommandErrors."""
    good = tmp_path / "ok.jsonl"
    good.write_text(json.dumps({"prompt": "Hi", "chosen": "a", "rejected": "b"}) + "\n")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Hi", "chosen": "a", "rejected": "b"}) + "\n"
                   + json.dumps({"prompt": "Hi", "chosen": "a"}) + "\n")
    reward = tiny_registered["reward"].pk
    cases = [
        ({"model": 999_999, "pairs": str(good)}, "No registered model #999999"),
        ({"model": tiny_registered["policy"].pk, "pairs": str(good)}, "not a reward model"),
        ({"model": reward, "pairs": str(tmp_path / "none.jsonl")}, "does not exist"),
        ({"model": reward, "pairs": str(bad)}, "line 2: missing 'rejected'"),
    ]
    for kwargs, message in cases:
        with pytest.raises(CommandError, match=message):
            call_command("rm_eval", **kwargs)
