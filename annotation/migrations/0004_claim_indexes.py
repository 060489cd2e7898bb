"""Indexes for the claim path (benchmarks/annotation_hot_path.py).

``comparison_open_idx`` leads with ``kind``, but the claim filters ``kind IN ('regular',
'eval')`` and orders by ``-priority, id``: PostgreSQL cannot read that order from the index, so
every claim sorted all open comparisons of the campaign (about 100 ms at 100,000 open items).
``comparison_claim_idx`` holds exactly the claimable rows in claim order, so the claim reads the
first row that is not locked and not seen. ``comparison_calibration_idx`` does the same for the
calibration queries, which otherwise scan every comparison of the campaign.

Created with CONCURRENTLY on PostgreSQL (no write lock on a live table), hence non-atomic. They
are database-only (no ``Meta.indexes`` entry), so ``makemigrations`` sees no change; to move them
into the model, wrap AddIndex in SeparateDatabaseAndState.
"""

from django.db import migrations

INDEXES = {
    "comparison_claim_idx": (
        'ON "annotation_comparison" ("campaign_id", "priority" DESC, "id") '
        "WHERE (NOT \"is_full\" AND \"kind\" IN ('regular', 'eval'))"
    ),
    "comparison_calibration_idx": (
        'ON "annotation_comparison" ("campaign_id", "for_annotator_id", "id") '
        "WHERE \"kind\" = 'calibration'"
    ),
}


def create(apps, schema_editor):
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    for name, definition in INDEXES.items():
        schema_editor.execute(f'CREATE INDEX {concurrently}IF NOT EXISTS "{name}" {definition}')


def drop(apps, schema_editor):
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    for name in INDEXES:
        schema_editor.execute(f'DROP INDEX {concurrently}IF EXISTS "{name}"')


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("annotation", "0003_campaign_reshow_redundancy"),
    ]

    operations = [
        migrations.RunPython(create, drop, elidable=False),
    ]
