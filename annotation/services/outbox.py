"""The transactional outbox: every task is enqueued as a row in the caller's transaction.

A request that commits has its task's message in the database even while the broker is down.
Right after commit the message is published; if the broker refuses, it stays unsent and the
relay (``outbox_relay``, on Celery beat) publishes it once the broker is back. Publishing is
at-least-once (a crash between publish and marking the row sent publishes it again), so every
task behind the outbox is idempotent: it checks its job row before doing anything.

Written here rather than taken from a library: the Celery outbox packages on PyPI are
unmaintained or tied to another broker abstraction, and the mechanism is ~60 lines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from annotation.models import OutboxMessage

log = logging.getLogger(__name__)
RELAY_BATCH = 200


def outbox_enqueue(*, task: str, args: list, queue: str = "") -> OutboxMessage:
    """Write the message in the current transaction; publish it after commit.

    Outside a transaction (autocommit) it is published at once.
    """
    message = OutboxMessage.objects.create(task=task, args=list(args), queue=queue)
    transaction.on_commit(lambda: outbox_publish(message_ids=[message.pk]))
    return message


def _broker_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError

    return (OperationalError, ConnectionError, OSError, TimeoutError)


def _publish_one(message: OutboxMessage) -> None:
    from config.celery import app

    if message.task not in app.tasks:  # tasks modules are autodiscovered lazily
        app.loader.import_default_modules()
    task = app.tasks[message.task]
    options = {"retry": False}
    if message.queue:
        options["queue"] = message.queue
    # apply_async, not send_task: in eager mode (tests, GAPLAB_CELERY_EAGER) it runs in-process.
    task.apply_async(args=message.args, **options)


def outbox_publish(*, message_ids: Iterable[int]) -> int:
    """Publish these unsent messages; return how many went out. Broker errors are kept, not
    raised: the message stays unsent and the relay retries it."""
    sent = 0
    for message in OutboxMessage.objects.filter(pk__in=list(message_ids), sent_at__isnull=True):
        try:
            _publish_one(message)
        except _broker_errors() as exc:
            log.warning("outbox: %s #%s not published (%s); the relay will retry",
                        message.task, message.pk, exc)
            OutboxMessage.objects.filter(pk=message.pk).update(
                attempts=message.attempts + 1, last_error=f"{type(exc).__name__}: {exc}"[:500]
            )
            break  # the broker is down: the rest would fail the same way, slowly
        OutboxMessage.objects.filter(pk=message.pk).update(
            sent_at=timezone.now(), attempts=message.attempts + 1
        )
        sent += 1
    return sent


def outbox_relay(*, limit: int = RELAY_BATCH) -> int:
    """Publish unsent messages, oldest first; safe to run concurrently (SKIP LOCKED)."""
    with transaction.atomic():
        ids = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(sent_at__isnull=True).order_by("id").values_list("id", flat=True)[:limit]
        )
        return outbox_publish(message_ids=ids)


def outbox_purge(*, older_than_days: int = 7) -> int:
    """Delete sent messages older than this; unsent ones are kept whatever their age."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    deleted, _ = OutboxMessage.objects.filter(sent_at__lt=cutoff).delete()
    return deleted
