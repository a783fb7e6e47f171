"""Case-insensitive prefix and exact lookups on email and username (the console's user
search and autocomplete, the sync-run search by email) through an index on PostgreSQL:
UPPER(column) with text_pattern_ops serves both `UPPER(x) LIKE 'ABC%'` and `UPPER(x) = 'ABC'`.
Built CONCURRENTLY, so a live fleet keeps signing in meanwhile. SQLite scans (small)."""

from django.db import migrations

INDEXES = {
    "user_email_upper_idx": "email",
    "user_username_upper_idx": "username",
}


def create(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name, column in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} "
            f"ON accounts_user (UPPER({column}::text) text_pattern_ops)"
        )
    # Statistics of the new expressions, or the planner guesses and may walk the table.
    schema_editor.execute("ANALYZE accounts_user")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("accounts", "0005_user_needs_sign_in_index"),
    ]

    operations = [migrations.RunPython(create, drop, elidable=False)]
