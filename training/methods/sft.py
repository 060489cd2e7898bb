"""Placeholder: being written (issue 8)."""

from __future__ import annotations

from dataclasses import dataclass

from training.methods.base import MethodResult, RunContext

REQUIRES: frozenset[str] = frozenset()


@dataclass
class Config:
    pass


def run(ctx: RunContext) -> MethodResult:
    raise NotImplementedError("sft is not built yet")
