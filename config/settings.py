"""Gaplab settings: one module, every value from the environment, defaults for the embedded demo.

Embedded default: SQLite in ``GAPLAB_DATA_DIR`` and kombu's filesystem broker (no server).
Production sets ``DATABASE_URL`` (PostgreSQL) and ``CELERY_BROKER_URL`` (Redis) instead.
"""

from __future__ import annotations

from pathlib import Path

import dj_database_url

from config.env import envbool, envint, envstr

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
    "annotation",
    "training",
    "evaluation",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
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
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

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
    "EXCEPTION_HANDLER": "annotation.apis_errors.exception_handler",
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
    # Redis: redelivery of late-acked tasks after this many seconds; must outlast the longest task.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": envint("GAPLAB_VISIBILITY_TIMEOUT", 7200)
    }
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {"training.tasks.*": {"queue": "gpu"}}
CELERY_TASK_ALWAYS_EAGER = envbool("GAPLAB_CELERY_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SOFT_TIME_LIMIT = envint("GAPLAB_TASK_SOFT_TIME_LIMIT", 3300)
CELERY_TASK_TIME_LIMIT = envint("GAPLAB_TASK_TIME_LIMIT", 3600)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Gaplab ---------------------------------------------------------------------------------
GAPLAB_EXPORT_DIR = Path(envstr("GAPLAB_EXPORT_DIR", str(DATA_DIR / "exports")))
GAPLAB_MODEL_DIR = Path(envstr("GAPLAB_MODEL_DIR", str(DATA_DIR / "models")))
GAPLAB_IMPORT_MAX_BYTES = envint("GAPLAB_IMPORT_MAX_BYTES", 50 * 1024 * 1024)
GAPLAB_IMPORT_MAX_ROWS = envint("GAPLAB_IMPORT_MAX_ROWS", 200_000)
# The O(1) per-submit quality update (gold tally, pause check, re-shows, redundancy); off only
# to measure its cost (benchmarks/annotation_hot_path.py).
GAPLAB_QUALITY_ON_SUBMIT = envbool("GAPLAB_QUALITY_ON_SUBMIT", True)
DATA_UPLOAD_MAX_MEMORY_SIZE = GAPLAB_IMPORT_MAX_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": envstr("GAPLAB_LOG_LEVEL", "WARNING")},
}

SENTRY_DSN = envstr("SENTRY_DSN")
