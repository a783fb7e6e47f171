"""PostgreSQL: the console's subject search goes through the search index (the subject is
the search vector's weight A, mailsync/search.py), so the GIN index over
`to_tsvector('simple', subject)` goes. It cost every write of a message row a
`to_tsvector` and GIN entries: a quarter to a third of the CPU of storing a batch
(issue 13). Dropped CONCURRENTLY, so a live mirror keeps syncing meanwhile."""

from django.db import migrations

SUBJECT_FTS_INDEX = "message_subject_fts_idx"


def drop_subject_fts_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {SUBJECT_FTS_INDEX}")


def add_subject_fts_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from django.contrib.postgres.indexes import GinIndex
    from django.contrib.postgres.search import SearchVector

    index = GinIndex(SearchVector("subject", config="simple"), name=SUBJECT_FTS_INDEX)
    schema_editor.add_index(apps.get_model("mailsync", "EmailMessage"), index, concurrently=True)


class Migration(migrations.Migration):
    atomic = False  # DROP INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("mailsync", "0021_counts_share"),
    ]

    operations = [
        migrations.RunPython(drop_subject_fts_index, add_subject_fts_index, elidable=False),
    ]
