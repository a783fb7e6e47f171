"""Schedule the resumption of data deletions whose task was lost (idempotent)."""

from django.db import migrations
from django.utils import timezone

NAME = "accounts: resume data deletions"


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    fields = {
        "func": "accounts.tasks.resume_data_deletions",
        "schedule_type": "I",
        "minutes": 10,
        "repeats": -1,
    }
    Schedule.objects.update_or_create(
        name=NAME, defaults=fields, create_defaults={**fields, "next_run": timezone.now()}
    )


def delete_schedule(apps, schema_editor):
    apps.get_model("django_q", "Schedule").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_encrypt_stored_tokens"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
