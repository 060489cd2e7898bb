"""Gaplab settings: one module, every value from the environment, defaults for the embedded demo.

Embedded default: SQLite in ``GAPLAB_DATA_DIR`` and kombu's filesystem broker (no server).
Production sets ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis) instead.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF

from config.env import envbool, envfloat, envint, envstr


def envrate(name: str, default: str) -> str | None:
    """A DRF throttle rate from the environment; "off" (or empty) disables that throttle."""
    value = envstr(name, default).strip()
    return None if value.lower() in {"", "off", "none", "0"} else value

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(envstr("GAPLAB_DATA_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = envbool("DEBUG", True)
SECRET_KEY = envstr("SECRET_KEY", "gaplab-insecure-dev-key" if DEBUG else "")
if not SECRET_KEY:
    raise RuntimeError("SECRET_KEY must be set when DEBUG is off")
ALLOWED_HOSTS = [h for h in envstr("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in envstr("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "template_partials",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "annotation",
    "training",
    "evaluation",
]

MIDDLEWARE = [
    # First: a request shed for overload (503 + Retry-After) costs no session, auth or query.
    "annotation.middleware_overload.OverloadGuardMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "annotation.middleware.BadUrlGuardMiddleware",  # 400, not a 500, for NUL etc. in URLs
    "django_permissions_policy.PermissionsPolicyMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    # The site's 404 page also with DEBUG on (the demo), never Django's list of URL patterns.
    "annotation.middleware.SiteNotFoundMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, as django-axes asks: it turns a lockout flagged during authenticate() into the
    # lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    }
]

# --- Database -------------------------------------------------------------------------------
# SQLite runs every atomic block as BEGIN IMMEDIATE: SQLite ignores SELECT ... FOR UPDATE, so
# claims are made correct by serialising writers instead (Django >= 5.1 "transaction_mode").
DATA_DIR.mkdir(parents=True, exist_ok=True)
DATABASES = {
    "default": dj_database_url.parse(
        envstr("DATABASE_URL", f"sqlite:///{DATA_DIR / 'gaplab.sqlite3'}"),
        conn_max_age=envint("GAPLAB_DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {"transaction_mode": "IMMEDIATE", "timeout": 30}
    # A file, not ":memory:", so that a real worker process can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test_gaplab.sqlite3")}
    DATABASES["default"]["CONN_MAX_AGE"] = 0
# --- Overload: load shedding (annotation/middleware_overload.py) ----------------------------
# At most this many requests run at once per process (0: no bound); one that waits longer than
# GAPLAB_IN_FLIGHT_WAIT_MS for a slot gets 503 with Retry-After. Measured on 2 cores with
# benchmarks/load_annotators.py (see benchmarks/README.md): it sheds only when gunicorn has more
# threads per worker than this bound.
GAPLAB_MAX_IN_FLIGHT = envint("GAPLAB_MAX_IN_FLIGHT", 4)
GAPLAB_IN_FLIGHT_WAIT_MS = envint("GAPLAB_IN_FLIGHT_WAIT_MS", 1000)
GAPLAB_OVERLOAD_RETRY_AFTER = envint("GAPLAB_OVERLOAD_RETRY_AFTER", 2)
# GAPLAB_DB_POOL_SIZE > 0 (PostgreSQL): each process shares a psycopg pool of that many
# connections instead of one persistent connection per thread, so many gunicorn threads do not
# mean many PostgreSQL backends; a request that waits GAPLAB_DB_POOL_TIMEOUT seconds for one
# gets 503 (the middleware above), not a 500.
GAPLAB_DB_POOL_SIZE = envint("GAPLAB_DB_POOL_SIZE", 0)
if GAPLAB_DB_POOL_SIZE > 0 and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"]["CONN_MAX_AGE"] = 0  # Django's pool requires it
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1, "max_size": GAPLAB_DB_POOL_SIZE,
        "timeout": envint("GAPLAB_DB_POOL_TIMEOUT", 5),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

# --- Login throttling (django-axes) ---------------------------------------------------------
# Failed logins are counted per username *and* client IP, in the database (shared by every
# gunicorn worker): a guesser is stopped on that account from that address, while the same
# person on another network, or another user behind the same NAT, can still log in. The site
# login and the admin login both authenticate through AxesStandaloneBackend, listed first.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("GAPLAB_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=envint("GAPLAB_LOGIN_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# 429 with Retry-After and templates/registration/locked_out.html.
AXES_LOCKOUT_CALLABLE = "annotation.views.annotate.login_locked_out"
# Behind a reverse proxy, the client address is the N-th from the right of X-Forwarded-For;
# without one (the default) only REMOTE_ADDR counts, since a client can forge the header.
GAPLAB_PROXY_COUNT = envint("GAPLAB_PROXY_COUNT", 0)
if GAPLAB_PROXY_COUNT:
    AXES_IPWARE_PROXY_COUNT = GAPLAB_PROXY_COUNT
    AXES_IPWARE_PROXY_ORDER = "right-most"
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["HTTP_X_FORWARDED_FOR", "REMOTE_ADDR"]
else:
    AXES_IPWARE_META_PRECEDENCE_ORDER = ["REMOTE_ADDR"]

# --- HTTPS (production switch) --------------------------------------------------------------
# GAPLAB_HTTPS=1 when the site is served over TLS: redirect http to https, send HSTS and keep
# the session and CSRF cookies off plain http. With DEBUG=0, SECRET_KEY and ALLOWED_HOSTS set,
# `manage.py check --deploy` is then clean. Off by default: the embedded demo is plain http.
GAPLAB_HTTPS = envbool("GAPLAB_HTTPS", False)
if GAPLAB_HTTPS:
    SECURE_SSL_REDIRECT = True
    # One year by default; start lower (e.g. 300) when first enabling, since browsers remember.
    SECURE_HSTS_SECONDS = envint("GAPLAB_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    # Only behind a proxy that sets X-Forwarded-Proto itself and strips the client's: otherwise
    # a client could claim https.
    if envbool("GAPLAB_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- Content-Security-Policy and Permissions-Policy -----------------------------------------
# Scripts and styles come only from this origin: no inline script or style, no CDN (htmx and
# Chart.js are vendored under static/). htmx's own indicator <style> is turned off in base.html
# (htmx-config) and its rules live in static/css/gaplab.css. The Swagger page loads its init
# script from a URL (SpectacularSwaggerSplitView, config/urls.py). data: images: Swagger UI's
# and the admin's CSS icons.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [NONE],
        "frame-ancestors": [NONE],
        "form-action": [SELF],
    },
}
# Powerful browser features no Gaplab page uses, denied to the page and to anything it embeds.
PERMISSIONS_POLICY: dict[str, list[str]] = {
    feature: []
    for feature in (
        "accelerometer", "autoplay", "browsing-topics", "camera", "display-capture",
        "encrypted-media", "geolocation", "gyroscope", "hid", "magnetometer", "microphone",
        "midi", "payment", "publickey-credentials-get", "screen-wake-lock", "serial", "usb",
        "xr-spatial-tracking",
    )
}

# --- Cache ----------------------------------------------------------------------------------
# API throttles count requests in the default cache, so production must share one cache across
# gunicorn workers and hosts: GAPLAB_CACHE_URL=redis://host:6379/1 (Django's RedisCache).
# Without it a per-process LocMem cache serves the embedded demo: each worker then counts
# alone, so the effective limits are the rates below times the number of worker processes.
GAPLAB_CACHE_URL = envstr("GAPLAB_CACHE_URL")
if GAPLAB_CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": GAPLAB_CACHE_URL,
            "KEY_PREFIX": envstr("GAPLAB_CACHE_KEY_PREFIX", "gaplab"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Separate from the data dir so an image can collect static files at build time (docker/).
STATIC_ROOT = Path(envstr("GAPLAB_STATIC_ROOT", str(DATA_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": envstr(
            "GAPLAB_STATICFILES_STORAGE",
            "django.contrib.staticfiles.storage.StaticFilesStorage",
        )
    },
}
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = DEBUG  # serve straight from static/ in development, no collectstatic
MEDIA_ROOT = DATA_DIR / "media"

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "annotation.schema.GaplabAutoSchema",
    "EXCEPTION_HANDLER": "annotation.apis.errors.exception_handler",
    # Rates are "N/second|minute|hour|day"; "off" disables one (e.g. for a capacity benchmark).
    # A throttled request gets 429 with Retry-After. Scoped rates apply to views that name a
    # throttle_scope.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
        "rest_framework.throttling.ScopedRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        # Per client IP, unauthenticated (the schema and docs; other endpoints answer 401 first).
        "anon": envrate("GAPLAB_THROTTLE_ANON", "120/minute"),
        # Per user. A person rating at full speed makes about 2 requests (submit, next) every
        # few seconds; 600/minute leaves 20x headroom for scripts and retries, and 200 such
        # users stay far below what one gunicorn serves.
        "user": envrate("GAPLAB_THROTTLE_USER", "600/minute"),
        # Per user: uploads parse whole files (up to GAPLAB_IMPORT_MAX_BYTES) in the request.
        "import": envrate("GAPLAB_THROTTLE_IMPORT", "30/hour"),
        # Exports are limited by the export service itself (GAPLAB_EXPORT_MAX_ACTIVE and
        # GAPLAB_EXPORT_PER_HOUR), so the admin action and the API share one limit.
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Gaplab API",
    "DESCRIPTION": "Pairwise preference collection, quality and export.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ExportFormatEnum": "annotation.models.PreferenceExport.Format",
        "ImportFormatEnum": ["jsonl", "csv", "dataset"],
    },
}

# --- Celery ---------------------------------------------------------------------------------
BROKER_DIR = DATA_DIR / "broker"
CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", "filesystem://")
CELERY_TASK_TIME_LIMIT = envint("GAPLAB_TASK_TIME_LIMIT", 3600)
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport: in == out, the folder must exist, poll often (default 1 s).
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),  # default: ./control in the cwd
        "store_processed": False,
        "polling_interval": 0.1,
    }
else:
    # Redis: an unacked (late-ack) task is redelivered after this many seconds, so it must
    # outlast the longest task (the hard time limit, plus a margin). A killed worker's job is
    # recovered sooner than that by the reaper (GAPLAB_JOB_STALE_SECONDS), not by redelivery.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": envint(
            "GAPLAB_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + 300
        )
    }
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
# Training tasks ("training.<name>") and experiments run on "gpu"; their jobs also name the
# queue at each publish (Job.job_queue, through the outbox).
CELERY_TASK_ROUTES = {"training.*": {"queue": "gpu"},
                      "evaluation.experiment_execute": {"queue": "gpu"}}
CELERY_TASK_ALWAYS_EAGER = envbool("GAPLAB_CELERY_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SOFT_TIME_LIMIT = envint("GAPLAB_TASK_SOFT_TIME_LIMIT", 3300)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A request publishes after commit; with the broker down it must fail fast and leave the
# message in the outbox (annotation/services/outbox.py), not hang the request.
CELERY_BROKER_CONNECTION_TIMEOUT = 2
CELERY_TASK_PUBLISH_RETRY = False

# --- Training (training/) -------------------------------------------------------------------
# Models and run outputs live under one root that every GPU worker shares (a network volume
# when workers run on several machines): models/<name>/ and runs/<run id>/.
GAPLAB_ARTIFACT_ROOT = Path(envstr("GAPLAB_ARTIFACT_ROOT", str(DATA_DIR / "artifacts"))).resolve()
# A run writes its progress, metrics and heartbeat, and checks for a cancel, every this many
# optimizer steps.
GAPLAB_RUN_REPORT_EVERY = envint("GAPLAB_RUN_REPORT_EVERY", 5)
# Checkpoints every this many steps (a resumed run restarts from the last one).
GAPLAB_RUN_CHECKPOINT_EVERY = envint("GAPLAB_RUN_CHECKPOINT_EVERY", 50)
# Processes (GPUs) one training run uses on this GPU worker, through `accelerate launch`
# (training/distributed.py): 1 = in the worker's own process; N > 1 = N data-parallel ranks,
# each with its share of every batch (effective batch = N x batch_size); "auto" = every visible
# GPU. Only methods that train (reward_model, sft, dpo, rlhf, rest) use them. Without a GPU,
# N > 1 needs GAPLAB_RUN_PROCESSES_CPU=1 (gloo ranks on the CPU: tests of the same path).
GAPLAB_RUN_PROCESSES = envstr("GAPLAB_RUN_PROCESSES", "1").strip().lower()
if GAPLAB_RUN_PROCESSES != "auto" and not (GAPLAB_RUN_PROCESSES.isdigit()
                                           and int(GAPLAB_RUN_PROCESSES) >= 1):
    raise ValueError(f"GAPLAB_RUN_PROCESSES must be 'auto' or a whole number >= 1, got "
                     f"{GAPLAB_RUN_PROCESSES!r}")
GAPLAB_RUN_PROCESSES_CPU = envbool("GAPLAB_RUN_PROCESSES_CPU", False)
# The AI judge's OpenAI-compatible backend, when configured (both needed).
GAPLAB_JUDGE_URL = envstr("GAPLAB_JUDGE_URL")
GAPLAB_JUDGE_KEY = envstr("GAPLAB_JUDGE_KEY")
GAPLAB_CODE_VERSION = envstr("GAPLAB_CODE_VERSION")

# --- Jobs: heartbeat, reaper, outbox relay (annotation/services/jobs.py) --------------------
GAPLAB_JOB_HEARTBEAT_SECONDS = envint("GAPLAB_JOB_HEARTBEAT_SECONDS", 10)
# A running job whose heartbeat is older than this lost its worker: re-queued or failed.
GAPLAB_JOB_STALE_SECONDS = envint("GAPLAB_JOB_STALE_SECONDS", 60)
GAPLAB_JOB_REAP_SECONDS = envint("GAPLAB_JOB_REAP_SECONDS", 15)
# A queued job not started after this long is dispatched again (its message may be lost).
GAPLAB_JOB_REDISPATCH_SECONDS = envint("GAPLAB_JOB_REDISPATCH_SECONDS", 600)
CELERY_BEAT_SCHEDULE = {
    "jobs-reap": {"task": "annotation.jobs_reap", "schedule": float(GAPLAB_JOB_REAP_SECONDS),
                  "options": {"expires": float(GAPLAB_JOB_REAP_SECONDS)}},
    "outbox-relay": {"task": "annotation.outbox_relay",
                     "schedule": float(envint("GAPLAB_OUTBOX_RELAY_SECONDS", 5)),
                     "options": {"expires": 30.0}},
    "housekeeping": {"task": "annotation.housekeeping", "schedule": 3600.0,
                     "options": {"expires": 3600.0}},
}
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- Gaplab ---------------------------------------------------------------------------------
GAPLAB_EXPORT_DIR = Path(envstr("GAPLAB_EXPORT_DIR", str(DATA_DIR / "exports")))
GAPLAB_IMPORT_MAX_BYTES = envint("GAPLAB_IMPORT_MAX_BYTES", 50 * 1024 * 1024)
GAPLAB_IMPORT_MAX_ROWS = envint("GAPLAB_IMPORT_MAX_ROWS", 200_000)
# Exports per requester: in flight at once, per hour; files are deleted after the retention.
GAPLAB_EXPORT_MAX_ACTIVE = envint("GAPLAB_EXPORT_MAX_ACTIVE", 3)
GAPLAB_EXPORT_PER_HOUR = envint("GAPLAB_EXPORT_PER_HOUR", 30)
GAPLAB_EXPORT_RETENTION_DAYS = envint("GAPLAB_EXPORT_RETENTION_DAYS", 14)
# The O(1) per-submit quality update (gold tally, pause check, re-shows, redundancy); off only
# to measure its cost (benchmarks/annotation_hot_path.py).
GAPLAB_QUALITY_ON_SUBMIT = envbool("GAPLAB_QUALITY_ON_SUBMIT", True)
# A campaign's full quality recompute and drift scan runs every this many of its judgments.
GAPLAB_QUALITY_RECOMPUTE_EVERY = envint("GAPLAB_QUALITY_RECOMPUTE_EVERY", 50)
# The speed flag (annotation.quality.speed_flag, checked at each recompute): a judgment faster
# than MIN_SECONDS plus both responses read at CHARS_PER_SECOND is implausible; a SPEED alert
# when at least SHARE of a run of WINDOW regular judgments is, never before MIN_JUDGMENTS.
GAPLAB_SPEED_MIN_SECONDS = envfloat("GAPLAB_SPEED_MIN_SECONDS", 1.0)
GAPLAB_SPEED_CHARS_PER_SECOND = envfloat("GAPLAB_SPEED_CHARS_PER_SECOND", 100.0)
GAPLAB_SPEED_WINDOW = envint("GAPLAB_SPEED_WINDOW", 20)
GAPLAB_SPEED_SHARE = envfloat("GAPLAB_SPEED_SHARE", 0.8)
GAPLAB_SPEED_MIN_JUDGMENTS = envint("GAPLAB_SPEED_MIN_JUDGMENTS", 20)
DATA_UPLOAD_MAX_MEMORY_SIZE = GAPLAB_IMPORT_MAX_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # A 403 is an expected answer: one WARNING line (path, user, status), no traceback.
    "filters": {"forbidden_without_traceback": {"()": "config.handlers.ForbiddenWithoutTraceback"}},
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django.request": {"filters": ["forbidden_without_traceback"]}},
    "root": {"handlers": ["console"], "level": envstr("GAPLAB_LOG_LEVEL", "WARNING")},
}

SENTRY_DSN = envstr("SENTRY_DSN")
