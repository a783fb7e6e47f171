"""The watchdog runs every minute: it resumes runs when their retry time comes."""

from django.db import migrations


def update_schedules(apps, schema_editor):
    from mailsync.schedules import ensure_schedules

    ensure_schedules(apps.get_model("django_q", "Schedule"))


class Migration(migrations.Migration):
    dependencies = [("mailsync", "0004_fill_mailbox_counts")]

    operations = [migrations.RunPython(update_schedules, migrations.RunPython.noop)]
