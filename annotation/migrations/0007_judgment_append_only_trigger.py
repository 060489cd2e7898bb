"""Judgments are append-only in the database too (PostgreSQL): UPDATE and DELETE raise.

The model already refuses save() of an existing row and delete(); this closes the paths that
bypass it (QuerySet.update/delete, raw SQL, the admin). TRUNCATE (test flushes) is untouched.
SQLite has no such trigger here; the model-level guard is what it gets.
"""

from django.db import migrations

CREATE = """
CREATE OR REPLACE FUNCTION annotation_judgment_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'judgments are append-only: % refused on annotation_judgment id %',
        TG_OP, OLD.id USING ERRCODE = 'integrity_constraint_violation';
END;
$$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS annotation_judgment_append_only ON annotation_judgment;
CREATE TRIGGER annotation_judgment_append_only
    BEFORE UPDATE OR DELETE ON annotation_judgment
    FOR EACH ROW EXECUTE FUNCTION annotation_judgment_append_only();
"""
DROP = """
DROP TRIGGER IF EXISTS annotation_judgment_append_only ON annotation_judgment;
DROP FUNCTION IF EXISTS annotation_judgment_append_only();
"""


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE, params=None)


def backwards(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP, params=None)


class Migration(migrations.Migration):
    dependencies = [("annotation", "0006_jobs_outbox_keys")]
    operations = [migrations.RunPython(forwards, backwards)]
