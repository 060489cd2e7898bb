"""Small helpers that read settings from the environment (healthchecks' style).

Each helper also honours ``NAME_FILE`` (Docker secrets): the value is read from that file.
"""

from __future__ import annotations

import os


def envstr(name: str, default: str = "") -> str:
    file_path = os.environ.get(f"{name}_FILE")
    if file_path:
        with open(file_path, encoding="utf-8") as fh:
            return fh.read().strip()
    return os.environ.get(name, default)


def envbool(name: str, default: bool) -> bool:
    value = envstr(name, "1" if default else "0").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def envint(name: str, default: int) -> int:
    return int(envstr(name, str(default)))


def envfloat(name: str, default: float) -> float:
    return float(envstr(name, str(default)))
