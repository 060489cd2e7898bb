"""The training methods, one self-contained module each (``training.methods.base`` says what a
method module holds). Looked up by name here so the web process can validate a config without
importing any method's heavy libraries."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from training.methods.base import ConfigError, config_build, config_dump

METHODS = ("reward_model", "sft", "dpo", "rlhf", "best_of_n", "rest", "ai_judge")


def method_module(method: str) -> ModuleType:
    if method not in METHODS:
        raise ConfigError({"method": [f"Unknown method {method!r}; one of {', '.join(METHODS)}."]})
    return importlib.import_module(f"training.methods.{method}")


def method_config(method: str, data: dict[str, Any] | None) -> Any:
    """The method's validated config instance (raises ``ConfigError`` with field errors)."""
    return config_build(method_module(method).Config, data)


def method_config_clean(method: str, data: dict[str, Any] | None) -> dict[str, Any]:
    """The validated config as JSON, every default filled in (what a run stores)."""
    return config_dump(method_config(method, data))
