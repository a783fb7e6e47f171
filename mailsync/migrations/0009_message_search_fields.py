"""Indexed lookups for the console: a message by id, thread or sender address, and
full-text search on subjects (PostgreSQL). On PostgreSQL the indexes are built
CONCURRENTLY, so a live mirror with millions of messages keeps syncing meanwhile."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class AddIndexWithoutLocking(AddIndexConcurrently):
    """CREATE INDEX CONCURRENTLY on PostgreSQL; a plain CREATE INDEX elsewhere."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_forwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_forwards(
            self, app_label, schema_editor, from_state, to_state
        )

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            return super().database_backwards(app_label, schema_editor, from_state, to_state)
        return migrations.AddIndex.database_backwards(
            self, app_label, schema_editor, from_state, to_state
        )


SUBJECT_FTS_INDEX = "message_subject_fts_idx"


def add_subject_fts_index(apps, schema_editor):
    """GIN over to_tsvector('simple', subject): the expression mailsync.admin searches
    with ('simple': subjects come in every language, so no stemming)."""
    if schema_editor.connection.vendor != "postgresql":
        return
    from django.contrib.postgres.indexes import GinIndex
    from django.contrib.postgres.search import SearchVector

    index = GinIndex(SearchVector("subject", config="simple"), name=SUBJECT_FTS_INDEX)
    schema_editor.add_index(apps.get_model("mailsync", "EmailMessage"), index, concurrently=True)
    # Statistics of the new expression, or the planner guesses (a sample, not the table).
    schema_editor.execute("ANALYZE mailsync_emailmessage")


def drop_subject_fts_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {SUBJECT_FTS_INDEX}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("mailsync", "0008_cluster_heartbeat"),
    ]

    operations = [
        migrations.AddField(
            model_name="emailmessage",
            name="sender_address",
            field=models.CharField(blank=True, default="", max_length=320),
        ),
        AddIndexWithoutLocking(
            model_name="emailmessage",
            index=models.Index(fields=["gmail_id"], name="message_gmail_id_idx"),
        ),
        AddIndexWithoutLocking(
            model_name="emailmessage",
            index=models.Index(fields=["thread_id"], name="message_thread_id_idx"),
        ),
        AddIndexWithoutLocking(
            model_name="emailmessage",
            index=models.Index(fields=["sender_address"], name="message_sender_idx"),
        ),
        migrations.RunPython(add_subject_fts_index, drop_subject_fts_index, elidable=False),
    ]
