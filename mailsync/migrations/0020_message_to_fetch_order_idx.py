"""The index of messages still to fetch covers the claim's whole order (user, listing
order, id): with only (user, listing order), a planner without fresh statistics sorted
every row still to fetch before taking 100 (issue 13). Built concurrently on
PostgreSQL, the new one before the old one goes."""

from django.db import migrations, models
from django.db.models import Q

TO_FETCH = Q(internal_date__isnull=True, unavailable_since__isnull=True)
OLD = models.Index(
    fields=["user", "listing_order"], condition=TO_FETCH, name="message_to_fetch_idx"
)
NEW = models.Index(
    fields=["user", "listing_order", "id"], condition=TO_FETCH, name="message_to_fetch_order_idx"
)


def _swap(schema_editor, model, add: models.Index, remove: models.Index) -> None:
    options = {"concurrently": True} if schema_editor.connection.vendor == "postgresql" else {}
    schema_editor.add_index(model, add, **options)
    schema_editor.remove_index(model, remove, **options)


def forwards(apps, schema_editor):
    _swap(schema_editor, apps.get_model("mailsync", "EmailMessage"), NEW, OLD)


def backwards(apps, schema_editor):
    _swap(schema_editor, apps.get_model("mailsync", "EmailMessage"), OLD, NEW)


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ("mailsync", "0019_run_end_history_id"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards, elidable=False)],
            state_operations=[
                migrations.RemoveIndex(model_name="emailmessage", name="message_to_fetch_idx"),
                migrations.AddIndex(model_name="emailmessage", index=NEW),
            ],
        ),
    ]
