"""Label counters refreshed per label (counts_stale, counts_refreshed_at); the daily
push watch renewal schedule; an index on Django-Q2's task results by `stopped`, so the
clean-up deletes the oldest results chunk by chunk without scanning the table."""

from django.db import migrations, models


def update_schedules(apps, schema_editor):
    from mailsync.schedules import ensure_schedules

    ensure_schedules(apps.get_model("django_q", "Schedule"))


TASK_INDEX = "mailsync_q_task_stopped_idx"


def create_task_index(apps, schema_editor):
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(
        f"CREATE INDEX {concurrently}IF NOT EXISTS {TASK_INDEX} ON django_q_task (stopped)"
    )


def drop_task_index(apps, schema_editor):
    schema_editor.execute(f"DROP INDEX IF EXISTS {TASK_INDEX}")


class Migration(migrations.Migration):
    atomic = False  # CREATE INDEX CONCURRENTLY cannot run in a transaction

    dependencies = [
        ('mailsync', '0016_quota_tables_unlogged'),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.AddField(
            model_name='label',
            name='counts_refreshed_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='label',
            name='counts_stale',
            field=models.BooleanField(default=False),
        ),
        migrations.RunPython(update_schedules, migrations.RunPython.noop),
        migrations.RunPython(create_task_index, drop_task_index, elidable=False),
    ]
