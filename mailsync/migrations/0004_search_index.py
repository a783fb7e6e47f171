"""The full-text search index, on PostgreSQL only.

A GIN index over (user_id, search_vector) (btree_gin lets the user id into it), so a
search reads one mailbox's matches only, whatever the number of mailboxes. Other
databases have no full-text search: nothing to do there. Built CONCURRENTLY (outside a
transaction) so that adding it to a big table does not block the sync's writes.
"""

from django.db import migrations

INDEX = "message_search_idx"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    table = schema_editor.quote_name(apps.get_model("mailsync", "EmailMessage")._meta.db_table)
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS btree_gin")
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {INDEX} ON {table} "
        "USING gin (user_id, search_vector)"
    )


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("mailsync", "0003_mailbox_pages_and_run_counts")]

    operations = [migrations.RunPython(create_index, drop_index)]
