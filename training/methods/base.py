"""What every training method shares: its config contract, the run context it gets, what it
returns.

A method is one module in ``training/methods/`` with a ``Config`` dataclass (every field has a
``help`` with its unit; ``min`` / ``max`` / ``choices`` in the metadata are checked at run
creation) and one ``run(ctx: RunContext) -> MethodResult``. Method modules import torch,
transformers and trl only inside functions: the web process imports the module to validate a
config and must stay light (``tests/test_layers.py``).

The context is plain data plus a ``Reporter`` (progress, metrics, log, checkpoint, cancel), so a
method can be called in a worker through ``training.services.runs.run_execute`` or directly in a
benchmark with ``Reporter`` replaced by ``NullReporter``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


class ConfigError(ValueError):
    """A config that does not validate; ``errors`` maps each field to its messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()))


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, list | tuple):
            return False
        args = typing.get_args(annotation)
        inner = args[0] if args else Any
        return all(_type_ok(v, inner) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    return True


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def config_build(cls: type, data: Mapping[str, Any] | None) -> Any:
    """An instance of the config dataclass ``cls`` from JSON-like ``data``.

    Unknown fields, wrong types and values outside a field's ``min`` / ``max`` / ``choices``
    raise ``ConfigError`` naming every offending field at once; ``__post_init__`` may raise
    ``ConfigError`` for checks that span fields.
    """
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    errors: dict[str, list[str]] = {}
    for name in data.keys() - fields.keys():
        errors[name] = [f"Unknown field for {cls.__module__.rsplit('.', 1)[-1]}; "
                        f"known: {', '.join(sorted(fields))}."]
    for name, f in fields.items():
        if name not in data:
            continue
        value, meta = data[name], f.metadata
        if isinstance(value, int) and not isinstance(value, bool) and hints[name] is float:
            value = data[name] = float(value)
        if not _type_ok(value, hints[name]):
            errors.setdefault(name, []).append(
                f"Expected {_type_name(hints[name])}, got {type(value).__name__}.")
            continue
        if isinstance(value, list) and typing.get_origin(hints[name]) is tuple:
            data[name] = tuple(value)
        if "choices" in meta and value not in meta["choices"]:
            errors.setdefault(name, []).append(
                f"Must be one of {', '.join(map(str, meta['choices']))}.")
        if isinstance(value, int | float) and not isinstance(value, bool):
            if "min" in meta and value < meta["min"]:
                errors.setdefault(name, []).append(f"Must be >= {meta['min']}.")
            if "max" in meta and value > meta["max"]:
                errors.setdefault(name, []).append(f"Must be <= {meta['max']}.")
    if errors:
        raise ConfigError(errors)
    return cls(**data)


def config_dump(config: Any) -> dict[str, Any]:
    """The config as JSON-ready data (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(config).items()}


def config_help(cls: type) -> list[dict[str, Any]]:
    """One entry per field: name, type, default, help, bounds (for forms and the API)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append({"name": f.name, "type": _type_name(hints[f.name]),
                    "default": list(default) if isinstance(default, tuple) else default,
                    **{k: v for k, v in f.metadata.items()}})
    return out


def opt(default: Any, help: str, **bounds: Any) -> Any:  # noqa: A002 - the metadata's name
    """A config field with its help text (unit included) and optional min / max / choices."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default),
                     metadata={"help": help, **bounds})
    return field(default=default, metadata={"help": help, **bounds})


# --- What a method gets and gives -------------------------------------------------------------


class Reporter(Protocol):
    """How a method talks to its run (``training.services.progress.RunReporter``)."""

    def progress(self, step: int, total: int) -> None: ...
    def metrics(self, step: int, values: Mapping[str, float]) -> None: ...
    def log(self, line: str) -> None: ...
    def checkpoint(self, path: str | Path) -> None: ...
    def cancelled(self) -> bool: ...


class NullReporter:
    """A reporter for direct calls (benchmarks, tests of a method alone): keeps what it hears."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []
        self.rows: list[tuple[int, dict[str, float]]] = []
        self.lines: list[str] = []
        self.checkpoints: list[str] = []

    def progress(self, step: int, total: int) -> None:
        self.steps.append((step, total))

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        self.rows.append((step, dict(values)))

    def log(self, line: str) -> None:
        self.lines.append(line)

    def checkpoint(self, path: str | Path) -> None:
        self.checkpoints.append(str(path))

    def cancelled(self) -> bool:
        return False


@dataclass(frozen=True)
class ModelRef:
    """A registered model as a method sees it: where it is and what it is."""

    id: int | None
    path: str
    kind: str
    name: str = ""
    tokenizer_path: str = ""  # "" = the tokenizer is in ``path``


# A reward function over texts: (prompts as role/content turn lists, completions) -> rewards.
RewardFunction = Callable[[list[list[dict[str, str]]], list[str]], list[float]]


@dataclass
class RunContext:
    config: Any
    output_dir: Path
    reporter: Reporter = field(default_factory=NullReporter)
    seed: int = 0
    run_id: int | None = None
    rows: list[dict[str, Any]] | None = None  # the snapshot's rows (annotation.services.snapshots)
    base_model: ModelRef | None = None
    reference_model: ModelRef | None = None  # None = the base model
    reward_models: list[ModelRef] = field(default_factory=list)
    campaign_id: int | None = None  # the campaign an AI judge labels
    resume_from: Path | None = None  # a checkpoint folder of an earlier attempt
    true_reward: RewardFunction | None = None  # a world's utility, when the snapshot has one
    # The label noise ε the quality layer measured on the snapshot's campaign (judgment-weighted
    # annotator error), or None: the default flip rate of noise-robust losses.
    noise_epsilon: float | None = None
    snapshot_id: int | None = None


@dataclass(frozen=True)
class ProducedModel:
    name: str
    kind: str  # training.models.ModelKind
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


# The final-result keys every policy method reports (``training.methods.common``), read by the
# sweep table and, later, the gap measurements: Monte Carlo KL to the reference (nats) with its
# standard error, and the mean proxy reward r̂ and true reward r* of the policy's samples.
RESULT_KL = "kl"
RESULT_KL_SE = "kl_se"
RESULT_REWARD_PROXY = "reward_proxy"
RESULT_REWARD_TRUE = "reward_true"
# Where no utility function exists: the policy's win rate over π₀ in an eval round judged by
# people or a simulated pool (``evaluation.eval_rounds``), ties counted half, with its 90%
# interval and judgment count under the ``_lo``, ``_hi`` and ``_n`` suffixes.
RESULT_REWARD_TRUE_WINRATE = "reward_true_winrate"


@dataclass
class MethodResult:
    metrics: dict[str, float] = field(default_factory=dict)
    models: list[ProducedModel] = field(default_factory=list)
    artifacts: list[Path] = field(default_factory=list)  # files, or folders (every file in them)
