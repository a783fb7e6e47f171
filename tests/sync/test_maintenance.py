"""Schedules, the dispatcher, the health check and the clean-up."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.management import call_command
from django.utils import timezone
from django_q.models import Schedule, Success

from mailsync import maintenance, sync
from mailsync.models import EmailMessage, Label, MessageLabel, SyncProgress
from mailsync.schedules import SCHEDULES
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = pytest.mark.django_db


def run(progress: SyncProgress) -> SyncProgress:
    sync.run_inline(sync.resume_steps(progress))
    progress.refresh_from_db()
    return progress


@pytest.mark.django_db(transaction=True)
def test_schedules_exist_once_however_often_migrate_runs():
    for _ in range(2):
        call_command("migrate", "mailsync", "0001", verbosity=0)
        call_command("migrate", "mailsync", verbosity=0)
    for name, func, *_ in SCHEDULES:
        assert Schedule.objects.filter(name=name).count() == 1
        assert Schedule.objects.get(name=name).func == func


@pytest.mark.unstable_too
def test_health_check_repairs_drift(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=300)
    assert run(sync.start_initial_sync(user)).status == "completed"
    messages = EmailMessage.objects.filter(user=user).order_by("gmail_id")
    deleted_id = messages[0].gmail_id
    messages[0].delete()  # a row lost
    EmailMessage.objects.create(  # a row Gmail does not have
        user=user, gmail_id="ffffffffffffffff", internal_date=timezone.now()
    )
    wrong = messages[5]
    starred = Label.objects.get(user=user, gmail_id="STARRED")
    had_starred = MessageLabel.objects.filter(message=wrong, label=starred).exists()
    if had_starred:
        MessageLabel.objects.filter(message=wrong, label=starred).delete()
    else:
        MessageLabel.objects.create(message=wrong, label=starred)  # a wrong label
    emulator.reset_stats()

    check = run(sync.start_health_check(user))

    assert check.status == "completed", check.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert (check.num_added, check.num_deleted, check.num_relabelled) == (1, 1, 1)
    # Only the lost message was downloaded again.
    assert set(emulator.stats()["fetches"]) == {deleted_id}


def test_clean_up_keeps_recent_and_latest_runs(user_factory, settings):
    settings.MAILSYNC_KEEP_FINISHED_RUNS_DAYS = 30
    user = user_factory()
    old = timezone.now() - dt.timedelta(days=40)
    finished = [
        SyncProgress.objects.create(user=user, sync_type="incremental", status="completed")
        for _ in range(3)
    ]
    SyncProgress.objects.filter(pk__in=[r.pk for r in finished]).update(started_at=old)
    active = SyncProgress.objects.create(user=user, sync_type="initial", status="in_progress")
    SyncProgress.objects.filter(pk=active.pk).update(started_at=old)
    Success.objects.create(
        id="a" * 32, name="old", func="x", started=old, stopped=old, success=True
    )

    removed = maintenance.clean_up()

    remaining = set(SyncProgress.objects.values_list("pk", flat=True))
    assert remaining == {finished[-1].pk, active.pk}
    assert removed == {"runs": 2, "successes": 1, "failures": 0}
