"""The architecture's rules, checked on the source: imports run one way, and the web process
stays light.

- evaluation -> training -> annotation: annotation imports neither training nor evaluation, and
  training does not import evaluation (DESIGN section 1). Every import counts, also one inside a
  function, since a lazy import is still a dependency.
- Importing the URL conf (what every web process does) loads no ML stack and no pandas or scipy:
  those load in workers and commands, where the work that needs them runs.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "annotation": {"training", "evaluation"},
    "training": {"evaluation"},
}
HEAVY = ("torch", "transformers", "trl", "pandas", "scipy", "crowdkit", "datasets", "sklearn")


def _imported_top_levels(path: Path) -> set[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add((node.module.split(".")[0], node.lineno))
    return found


@pytest.mark.parametrize("app", sorted(FORBIDDEN))
def test_imports_run_one_way(app):
    offences = []
    for path in sorted((ROOT / app).rglob("*.py")):
        for top, line in _imported_top_levels(path):
            if top in FORBIDDEN[app]:
                offences.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    assert not offences, "\n".join(offences)


def test_the_checker_sees_a_lazy_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from evaluation.gap import x\n    import training.tasks\n")
    assert {top for top, _ in _imported_top_levels(module)} == {"evaluation", "training"}


def test_the_url_conf_loads_no_heavy_library():
    """A fresh interpreter imports config.urls and resolves every pattern; nothing heavy loads."""
    code = (
        "import sys, django\n"
        "django.setup()\n"
        "from django.urls import get_resolver\n"
        "get_resolver().url_patterns\n"
        "import config.urls, annotation.admin\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert loaded == "", f"config.urls loads {loaded}"
