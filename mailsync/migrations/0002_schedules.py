"""Create the Django-Q2 schedules (idempotent: update_or_create by name)."""

from django.db import migrations


def create_schedules(apps, schema_editor):
    from mailsync.schedules import ensure_schedules

    ensure_schedules(apps.get_model("django_q", "Schedule"))


class Migration(migrations.Migration):
    dependencies = [
        ("mailsync", "0001_initial"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedules, migrations.RunPython.noop)]
