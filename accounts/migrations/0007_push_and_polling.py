"""Gmail push state and the polling schedule on the user (mailsync/polling.py).

Users with a complete mirror get their first `next_sync_at` spread over the polling
interval (by id), so the first dispatcher passes after the upgrade are not one burst.
"""

import datetime as dt

from django.conf import settings
from django.db import migrations, models
from django.utils import timezone


def schedule_polls(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    eligible = User.objects.filter(
        is_active=True,
        initial_sync_completed=True,
        label_sync_completed=True,
        gmail_history_id__isnull=False,
        gmail_auth_error="",
    )
    interval = settings.MAILSYNC_INCREMENTAL_INTERVAL_MINUTES
    now = timezone.now()
    for minute in range(interval):
        eligible.extra(where=["id %% %s = %s"], params=[interval, minute]).update(
            next_sync_at=now + dt.timedelta(minutes=minute)
        )


class Migration(migrations.Migration):

    dependencies = [
        ('accounts', '0006_user_search_indexes'),
        ('auth', '0012_alter_user_first_name_max_length'),
    ]

    operations = [
        migrations.AddField(
            model_name='user',
            name='next_sync_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='user',
            name='push_error',
            field=models.TextField(blank=True, default='', editable=False),
        ),
        migrations.AddField(
            model_name='user',
            name='push_history_id',
            field=models.BigIntegerField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='user',
            name='push_state',
            field=models.CharField(blank=True, choices=[('', 'off'), ('on', 'on'), ('failed', 'failed')], default='', editable=False, help_text='Gmail push (users.watch): off, on, or failed (then the user is polled).', max_length=8),
        ),
        migrations.AddField(
            model_name='user',
            name='sync_claimed_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='user',
            name='watch_expires_at',
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name='user',
            name='watch_history_id',
            field=models.CharField(blank=True, default='', editable=False, max_length=32),
        ),
        migrations.AddIndex(
            model_name='user',
            index=models.Index(condition=models.Q(('next_sync_at__isnull', False)), fields=['next_sync_at'], name='user_next_sync_idx'),
        ),
        migrations.AddIndex(
            model_name='user',
            index=models.Index(condition=models.Q(('watch_expires_at__isnull', False)), fields=['watch_expires_at', 'id'], name='user_watch_expiry_idx'),
        ),
        migrations.RunPython(schedule_polls, migrations.RunPython.noop),
    ]
