"""The search index: full-text on PostgreSQL, a covering index on SQLite.

PostgreSQL: a GIN index over (user_id, search_vector) (btree_gin lets the user id into
it), so a search reads one mailbox's matches only, whatever the number of mailboxes.
Built CONCURRENTLY (outside a transaction) so that adding it to a big table does not
block the sync's writes.

SQLite has no full-text search: the search is LIKE on subject, sender and snippet, and
this index holds them beside (user, date, id), so a search walks the index in date
order without reading the message rows and their bodies (mailsync/search.py).

Neither is in the models' Meta: each exists on one database only.
"""

from django.db import migrations

INDEX = "message_search_idx"


def create_index(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    table = schema_editor.quote_name(apps.get_model("mailsync", "EmailMessage")._meta.db_table)
    if vendor == "postgresql":
        schema_editor.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON {table} "
            "USING gin (user_id, search_vector)"
        )
    elif vendor == "sqlite":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON {table} "
            "(user_id, internal_date DESC, id DESC, subject, sender, snippet)"
        )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
    elif schema_editor.connection.vendor == "sqlite":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("mailsync", "0011_mailbox_pages_and_run_counts")]

    operations = [migrations.RunPython(create_index, drop_index)]
