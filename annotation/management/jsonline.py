"""The one JSON line that ends a management command's output (benchmarks and evaluations read
the last line), with floats rounded so the line stays readable."""

from __future__ import annotations

from typing import Any


def json_rounded(obj: Any, places: int = 4) -> Any:
    """``obj`` with every float rounded to ``places`` (dicts and lists walked)."""
    if isinstance(obj, float):
        return round(obj, places)
    if isinstance(obj, dict):
        return {k: json_rounded(v, places) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_rounded(v, places) for v in obj]
    return obj
