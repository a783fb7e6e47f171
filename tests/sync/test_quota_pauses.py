"""Quota trouble never loses work and never spins the queue."""

from __future__ import annotations

import pytest

from mailsync import quota, sync
from mailsync.models import EmailMessage, SyncProgress
from tests.gmail_fixtures import assert_exact_mirror, list_everything

pytestmark = pytest.mark.django_db


def test_daily_limit_pauses_the_run_visibly_and_loses_nothing(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=120)
    run = sync.start_initial_sync(user)
    run, steps = list_everything(user, run)  # listed: 120 unfetched rows
    emulator.set_daily_limit_exceeded(user.email, True)
    fetches = [step for step in steps if step.stage == "fetch_batch"]
    follow_up = [s for step in fetches for s in sync.run_step(step)]

    assert follow_up == []  # nothing re-enqueued to spin against the limit
    run.refresh_from_db()
    assert run.status == "in_progress"
    assert "daily quota" in run.error_message
    assert run.retry_at is not None  # the watchdog resumes it then
    unfetched = EmailMessage.objects.filter(user=user, internal_date__isnull=True)
    assert unfetched.count() == 120
    assert not unfetched.filter(claimed_until__isnull=False).exists()

    # The quota resets; the watchdog (here: resume_steps) carries the run on.
    emulator.set_daily_limit_exceeded(user.email, False)
    quota.reset()
    SyncProgress.objects.filter(pk=run.pk).update(retry_at=None)
    run = sync.run_until_finished(run)
    assert run.status == "completed"
    assert_exact_mirror(user, emulator.snapshot(user.email))


def test_a_long_retry_after_is_left_to_the_watchdog(connected_mailbox, settings):
    user, _ = connected_mailbox(count=10)
    run = sync.start_initial_sync(user)
    quota.penalize(user.pk, retry_after=10 * settings.MAILSYNC_TASK_MAX_SECONDS)
    assert sync.run_step(sync.resume_steps(run)[0]) == []
    run.refresh_from_db()
    assert run.error_message.startswith("Paused for")
    assert run.is_active
    assert run.retry_at is not None
