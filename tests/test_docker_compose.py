"""docker/compose.yml and docker/Dockerfile against the code they run (no Docker engine needed).

Checked: the compose schema (check-jsonschema's vendored compose-spec), depends_on references
and conditions, that every environment variable given to the app containers is one the settings
read (the set is derived from config/*.py, not listed here) with a value the settings accept,
that the Celery workers consume exactly the queues config/celery.py defines (``gpu`` only on the
solo-pool GPU worker), that ``-A config`` and gunicorn's ``config.wsgi`` resolve, and that the
Dockerfile installs the pinned torch before the project.
"""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import dj_database_url
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER_DIR = ROOT / "docker"
COMPOSE_PATH = DOCKER_DIR / "compose.yml"
DOCKERFILE_PATH = DOCKER_DIR / "Dockerfile"
ENV_HELPERS = {"envstr", "envbool", "envint", "envfloat"}


# --- helpers --------------------------------------------------------------------------------


def _compose() -> dict:
    return yaml.safe_load(COMPOSE_PATH.read_text(encoding="utf-8"))


def _services() -> dict[str, dict]:
    return _compose()["services"]


def _app_services() -> dict[str, dict]:
    """Services that run the project's image (built from docker/Dockerfile)."""
    return {name: svc for name, svc in _services().items() if "build" in svc}


_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _interpolate(value: str) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} with no variables set."""

    def repl(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        op, arg = m.group(2), m.group(3)
        if op and op.endswith("-"):
            return arg
        if op and op.endswith("?"):
            return f"required-{m.group(1).lower()}"
        return ""

    return _INTERPOLATION.sub(repl, value)


def _environment(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: _interpolate("" if v is None else str(v)) for k, v in env.items()}


def _command(svc: dict) -> list[str]:
    cmd = svc.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def _option_values(argv: list[str], short: str | None, long: str) -> list[str]:
    """Values of an option in -Q x / -Qx / --queues x / --queues=x forms."""
    values = []
    for i, arg in enumerate(argv):
        if arg in {short, long} and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(long + "="):
            values.append(arg.split("=", 1)[1])
        elif short and arg.startswith(short) and len(arg) > len(short) and not arg.startswith("--"):
            values.append(arg[len(short):])
    return values


def _settings_env_names() -> dict[str, str]:
    """NAME -> helper for every envstr/envbool/envint/envfloat("NAME", ...) call in config/,
    plus names read straight from os.environ there (DJANGO_SETTINGS_MODULE)."""
    names: dict[str, str] = {}
    for path in sorted((ROOT / "config").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            func = node.func
            if isinstance(func, ast.Name) and func.id in ENV_HELPERS:
                names[first.value] = func.id
            elif (
                isinstance(func, ast.Attribute)
                and func.attr in {"get", "setdefault", "getenv"}
                and ast.unparse(func.value) in {"os.environ", "os"}
            ):
                names.setdefault(first.value, "envstr")
    return names


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE_PATH.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _expand(text: str, variables: dict[str, str]) -> str:
    def repl(m: re.Match) -> str:
        return variables.get(m.group(1) or m.group(2), m.group(0))

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, text)


def _torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "dependencies"
    ]
    pins = [d.replace(" ", "") for d in deps if re.match(r"torch\b", d)]
    assert len(pins) == 1, pins
    return pins[0]


# --- schema and cross-references ------------------------------------------------------------


def test_compose_file_matches_the_compose_spec_schema():
    pytest.importorskip("check_jsonschema")
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(COMPOSE_PATH)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_expected_services_are_defined():
    assert {"postgres", "redis", "web", "worker", "gpu-worker"} <= set(_services())
    assert _services()["postgres"]["image"].split(":")[1].startswith("16")
    assert _services()["redis"]["image"].split(":")[1].startswith("7")


def test_depends_on_names_existing_services_with_valid_conditions():
    services = _services()
    graph: dict[str, set[str]] = {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        graph[name] = set(deps)
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep!r}"
            assert dep != name
            condition = (spec or {}).get("condition", "service_started")
            assert condition in {
                "service_started", "service_healthy", "service_completed_successfully"
            }
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck to wait for"
            if condition == "service_completed_successfully":
                # A one-shot job: restarting it forever would never "complete".
                assert services[dep].get("restart", "no") in {"no", "on-failure"}

    def visit(node: str, path: tuple[str, ...]) -> None:
        assert node not in path, f"depends_on cycle: {' -> '.join((*path, node))}"
        for dep in graph[node]:
            visit(dep, (*path, node))

    for name in graph:
        visit(name, ())


def test_app_services_wait_for_database_broker_and_migrations():
    services = _services()
    for name in ("web", "worker", "gpu-worker"):
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        migrate = [d for d in deps if "migrate" in _command(services[d])]
        assert migrate or "migrate" in " ".join(_command(services[name])), (
            f"{name}: nothing runs migrations before it starts"
        )
        for dep in migrate:
            assert deps[dep]["condition"] == "service_completed_successfully"
    for name in ("postgres", "redis", "web", "worker", "gpu-worker"):
        assert "healthcheck" in services[name], name


def test_the_settings_names_are_derived_from_the_source():
    names = _settings_env_names()
    # A sanity check of the parser, not the list: these are read in config/settings.py today.
    assert {"DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG"} <= set(names)
    assert names["DEBUG"] == "envbool"


def test_app_environment_names_are_read_by_the_settings(monkeypatch):
    from config import env as env_helpers

    names = _settings_env_names()
    apps = _app_services()
    assert {"web", "worker", "gpu-worker"} <= set(apps)
    for service, svc in apps.items():
        env = _environment(svc)
        unknown = {
            n for n in env
            if n not in names and not (n.endswith("_FILE") and n.removesuffix("_FILE") in names)
        }
        assert not unknown, f"{service}: the settings never read {sorted(unknown)}"
        for name in ("DATABASE_URL", "CELERY_BROKER_URL", "SECRET_KEY", "DEBUG",
                     "GAPLAB_DATA_DIR"):
            assert name in env or f"{name}_FILE" in env, f"{service}: {name} is not set"
        # Each value is one the settings' helper accepts (envbool raises on a bad boolean).
        with monkeypatch.context() as m:
            for name, value in env.items():
                m.setenv(name, value)
            for name in env.keys() & names.keys():
                helper = getattr(env_helpers, names[name])
                helper(name) if names[name] == "envstr" else helper(name, 0)
            assert env_helpers.envbool("DEBUG", True) is False, f"{service} runs with DEBUG on"


def test_database_and_broker_urls_point_at_the_compose_services():
    services = _services()
    postgres_env = _environment(services["postgres"])
    for service, svc in _app_services().items():
        env = _environment(svc)
        db = dj_database_url.parse(env["DATABASE_URL"])
        assert db["ENGINE"] == "django.db.backends.postgresql", service
        assert db["HOST"] in services and services[db["HOST"]]["image"].startswith("postgres")
        assert db["NAME"] == postgres_env["POSTGRES_DB"]
        assert db["USER"] == postgres_env["POSTGRES_USER"]
        assert db["PASSWORD"] == postgres_env["POSTGRES_PASSWORD"]
        broker = env["CELERY_BROKER_URL"]
        assert broker.startswith("redis://"), service
        host = re.match(r"redis://(?:[^@/]*@)?([^:/]+)", broker).group(1)
        assert host in services and services[host]["image"].startswith("redis")


# --- commands -------------------------------------------------------------------------------


def _celery_workers() -> dict[str, list[str]]:
    return {
        name: argv for name, svc in _services().items()
        if (argv := _command(svc))[:1] == ["celery"] and "worker" in argv
    }


def test_worker_queues_are_exactly_the_celery_queues():
    from django.conf import settings

    from config.celery import app

    defined = {q.name for q in app.conf.task_queues}
    assert defined, "config/celery.py defines no task_queues"
    workers = _celery_workers()
    assert {"worker", "gpu-worker"} <= set(workers)
    consumed: dict[str, set[str]] = {}
    for name, argv in workers.items():
        values = _option_values(argv, "-Q", "--queues")
        assert values, f"{name}: no -Q, it would consume only the default queue"
        queues = {q for v in values for q in v.split(",") if q}
        assert queues <= defined, f"{name} consumes undefined queues {queues - defined}"
        consumed[name] = queues
    assert set().union(*consumed.values()) == defined, "some queue has no worker"
    assert [n for n, q in consumed.items() if "gpu" in q] == ["gpu-worker"]
    assert consumed["gpu-worker"] == {"gpu"}
    # Where the settings send tasks must be a queue that some worker consumes.
    routed = {r["queue"] for r in settings.CELERY_TASK_ROUTES.values()}
    assert routed | {settings.CELERY_TASK_DEFAULT_QUEUE} <= defined


def test_gpu_worker_uses_one_solo_process_and_a_gpu():
    svc = _services()["gpu-worker"]
    argv = _command(svc)
    assert _option_values(argv, "-P", "--pool") == ["solo"]
    assert _option_values(argv, "-c", "--concurrency") in ([], ["1"])
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    args = svc["build"].get("args", {})
    assert args.get("TORCH_INDEX_URL", "").rstrip("/") != "https://download.pytorch.org/whl/cpu"


def test_celery_app_named_by_every_celery_command_is_importable():
    from celery import Celery
    from celery.app.utils import find_app

    commands = [_command(svc) for svc in _services().values()]
    commands += [
        shlex.split(test[1]) if test[0] == "CMD-SHELL" else test[1:]
        for svc in _services().values()
        if isinstance(test := (svc.get("healthcheck") or {}).get("test"), list)
    ]
    targets = {
        value for argv in commands if argv[:1] == ["celery"]
        for value in _option_values(argv, "-A", "--app")
    }
    assert targets == {"config"}
    for target in targets:
        assert isinstance(find_app(target), Celery)


def test_gunicorn_target_exists_and_binds_the_published_port():
    svc = _services()["web"]
    argv = _command(svc)
    assert argv[0] == "gunicorn"
    ident = r"[A-Za-z_]\w*"
    # Positional arguments only: an option's value (``--worker-class gthread``) is not a target.
    positional = [a for prev, a in zip(argv, argv[1:], strict=False) if not prev.startswith("-")]
    targets = [a for a in positional if re.fullmatch(rf"{ident}(\.{ident})*(:{ident})?", a)]
    assert len(targets) == 1, argv
    module, _, attr = targets[0].partition(":")
    assert module == "config.wsgi"
    assert callable(getattr(importlib.import_module(module), attr or "application"))
    (bind,) = _option_values(argv, "-b", "--bind")
    port = bind.rsplit(":", 1)[1]
    assert any(str(p).split(":")[-1] == port for p in svc["ports"])
    assert f":{port}/" in " ".join(svc["healthcheck"]["test"])


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_installs_pinned_torch_before_the_project():
    pin = _torch_pin()
    assert pin == "torch==2.13.0"
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    args = {}
    for word, rest in instructions:
        if word == "ARG" and "=" in rest:
            key, value = rest.split("=", 1)
            args[key] = value.strip('"')
    runs = [(i, _expand(rest, args)) for i, (word, rest) in enumerate(instructions)
            if word == "RUN"]
    torch_runs = [i for i, cmd in runs if "pip install" in cmd and re.search(r"\btorch==", cmd)]
    project_arg = r"(?:-e\s+)?(?:\.|/app)(?:\[[\w,]+\])?"
    project_runs = [
        i for i, cmd in runs if re.search(rf"pip install (?:[^&;]*\s)?{project_arg}(?:\s|$)", cmd)
    ]
    assert torch_runs and project_runs, runs
    assert torch_runs[0] < project_runs[0], "torch must be installed before the project"
    torch_cmd = dict(runs)[torch_runs[0]]
    assert re.search(rf"[\"']?{re.escape(pin)}[\"']?(\s|$)", torch_cmd), torch_cmd
    # The project install must not upgrade torch away from the pinned build.
    assert "--upgrade" not in dict(runs)[project_runs[0]].split()
    # The GPU worker overrides only the index/spec build args; the spec keeps the pinned version.
    gpu_args = _services()["gpu-worker"]["build"].get("args", {})
    assert set(gpu_args) <= set(args)
    assert gpu_args.get("TORCH_SPEC", pin).startswith(pin)


def test_dockerfile_collects_static_files_and_drops_root():
    instructions = _dockerfile_instructions()
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert "collectstatic" in runs
    users = [rest for word, rest in instructions if word == "USER"]
    assert users and users[-1] not in {"root", "0"}
    last_user = max(i for i, (word, _) in enumerate(instructions) if word == "USER")
    assert all(word != "RUN" for word, _ in instructions[last_user:])
    # The names the Dockerfile sets for the app are settings names too.
    names = _settings_env_names()
    env_names = {
        m.group(1) for word, rest in instructions if word == "ENV"
        for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)=", rest)
    }
    app_names = {n for n in env_names if n.startswith(("GAPLAB_", "DJANGO_"))}
    assert app_names <= set(names), app_names - set(names)


def test_build_context_is_the_repository_root():
    for name, svc in _app_services().items():
        build = svc["build"]
        context = (DOCKER_DIR / build["context"]).resolve()
        assert context == ROOT, name
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE_PATH
    for word, rest in _dockerfile_instructions():
        if word == "COPY" and not rest.startswith("--from"):
            sources = [s for s in rest.split()[:-1] if not s.startswith("--")]
            for source in sources:
                assert source == "." or (ROOT / source).exists(), source


def test_exactly_one_beat_runs_the_reaper_and_the_relay():
    """Jobs are reaped and the outbox relayed only if some process runs Celery beat."""
    from django.conf import settings

    from config.celery import app

    beats = [name for name, svc in _services().items()
             if (argv := _command(svc))[:1] == ["celery"]
             and ("beat" in argv or "-B" in argv or "--beat" in argv)]
    assert beats == ["beat"]
    deps = _services()["beat"]["depends_on"]
    assert deps["redis"]["condition"] == "service_healthy"
    app.loader.import_default_modules()
    scheduled = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert {"annotation.jobs_reap", "annotation.outbox_relay"} <= scheduled
    assert scheduled <= set(app.tasks)
