from __future__ import annotations

import os

import pytest
from django.test import Client

from tests.worker_support import broker  # noqa: F401 - a private redis-server for worker drills

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright beside live_server

PASSWORD = "pw-12345678"


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    # PBKDF2's 10^6 iterations cost ~0.3 s a user; tests need no slow hash.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Throttle and lockout counts live in the cache: each test starts with none."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _celery_eager(settings):
    """Most tests run tasks in-process; tests marked `worker` start a real worker instead."""
    settings.CELERY_TASK_ALWAYS_EAGER = True
    from config.celery import app

    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


@pytest.fixture
def not_eager():
    """Queued training runs publish their task after commit to the test broker instead of
    running eagerly in this process (the test plays the worker); the gpu queue is purged
    after."""
    from config.celery import app

    app.conf.task_always_eager = False
    yield
    with app.connection_for_write() as conn:
        conn.default_channel.queue_purge("gpu")


@pytest.fixture
def cast(db):
    """The fixed cast: one user per role, plus an outsider with no role."""
    from django.contrib.auth.models import User

    from annotation.services import Role, user_create_with_role

    users = {
        role.value: user_create_with_role(username=role.value, password=PASSWORD, role=role)
        for role in Role
    }
    users["outsider"] = User.objects.create_user(username="outsider", password=PASSWORD)
    return users


@pytest.fixture
def client_for(cast):
    def make(role: str | None) -> Client:
        client = Client()
        if role is not None:
            client.force_login(cast[role])
        return client

    return make


@pytest.fixture
def campaign(db):
    from tests.factories import CampaignFactory

    return CampaignFactory(overlap=3, calibration_rate=0.0)
