"""Self-healing through real qcluster processes: the watchdog and the schedules."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from mailsync import maintenance, sync
from mailsync.models import EmailMessage, SyncProgress
from mailsync.schedules import ensure_schedules
from tests.cluster import cluster_env, wait_for
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_watchdog_finishes_a_run_whose_tasks_were_lost(connected_mailbox, emulator, clusters):
    user, _ = connected_mailbox(count=1500)
    env = cluster_env(emulator)
    first = clusters.start(env)
    run = sync.start_initial_sync(user)
    fetched = EmailMessage.objects.filter(user=user, internal_date__isnull=False)
    wait_for(lambda: fetched.count() >= 300, 60, "some progress", [first])
    first.kill()
    OrmQ.objects.all().delete()  # what the Redis broker does to a dead worker's tasks
    second = clusters.start(env)
    run.refresh_from_db()
    assert run.is_active
    # Nothing is left to run it: it is stalled until the watchdog sees it.
    SyncProgress.objects.filter(pk=run.pk).update(updated_at=timezone.now() - dt.timedelta(hours=1))

    assert maintenance.resume_stalled_runs() == 1

    def finished() -> bool:
        run.refresh_from_db()
        return not run.is_active

    wait_for(finished, 120, "the resumed run", [second])
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))


def test_scheduled_incremental_syncs_bring_changes_without_a_command(
    connected_mailbox, emulator, clusters, settings
):
    # The cluster's interval: the first poll is due a minute after the initial sync.
    settings.MAILSYNC_INCREMENTAL_INTERVAL_MINUTES = 1
    user, _ = connected_mailbox(count=100)
    initial = sync.start_initial_sync(user)
    sync.run_inline(sync.resume_steps(initial))
    ensure_schedules(Schedule)  # a transactional test starts from a flushed database
    new_id = emulator.insert_message(user.email)
    clusters.start(cluster_env(emulator, MAILSYNC_INCREMENTAL_INTERVAL_MINUTES="1"))
    arrived = EmailMessage.objects.filter(user=user, gmail_id=new_id, internal_date__isnull=False)
    wait_for(arrived.exists, 150, "the new message to arrive by itself")
    assert SyncProgress.objects.filter(user=user, sync_type="incremental").exists()
    assert not SyncProgress.objects.filter(user=user, sync_type="health").exists()
