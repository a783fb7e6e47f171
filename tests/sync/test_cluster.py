"""The full sync through real qcluster subprocesses and the real broker."""

from __future__ import annotations

import pytest

from mailsync import sync
from mailsync.models import EmailMessage, SyncProgress
from tests.cluster import cluster_env, wait_for
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def finished(run: SyncProgress) -> bool:
    run.refresh_from_db()
    return not run.is_active


def test_full_sync_of_3000_messages_is_an_exact_mirror(connected_mailbox, emulator, clusters):
    user, _ = connected_mailbox(count=3000)
    cluster = clusters.start(cluster_env(emulator))
    run = sync.start_initial_sync(user)
    wait_for(lambda: finished(run), 120, "the initial sync", [cluster])
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert max(emulator.stats()["fetches"].values()) == 1


@pytest.mark.unstable_too
def test_killed_cluster_resumes_to_the_exact_mirror(connected_mailbox, emulator, clusters):
    user, _ = connected_mailbox(count=3000)
    env = cluster_env(emulator, MAILSYNC_TASK_MAX_SECONDS="10")
    first = clusters.start(env)
    run = sync.start_initial_sync(user)
    fetched = EmailMessage.objects.filter(user=user, internal_date__isnull=False)
    wait_for(lambda: fetched.count() >= 1200, 90, "half the mailbox", [first])
    first.kill()  # SIGKILL: tasks in flight and claims are left behind
    assert fetched.count() < 3000
    second = clusters.start(env)
    wait_for(lambda: finished(run), 180, "the resumed sync", [second])
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert max(emulator.stats()["fetches"].values()) <= 2


def test_two_clusters_fetch_every_message_once(connected_mailbox, emulator, clusters):
    user, _ = connected_mailbox(count=3000)
    env = cluster_env(emulator, MAILSYNC_BATCHES_IN_FLIGHT="6")
    a, b = clusters.start(env), clusters.start(env)
    run = sync.start_initial_sync(user)
    wait_for(lambda: finished(run), 120, "the initial sync", [a, b])
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    fetches = emulator.stats()["fetches"]
    assert len(fetches) == 3000
    assert set(fetches.values()) == {1}


def test_at_a_low_quota_the_sync_avoids_429_storms(connected_mailbox, emulator, clusters):
    emulator.config.quota_user_per_minute = 3000
    user, _ = connected_mailbox(count=250)
    cluster = clusters.start(cluster_env(emulator))
    run = sync.start_initial_sync(user)
    wait_for(lambda: finished(run), 150, "the initial sync", [cluster])
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    stats = emulator.stats()
    refused = stats["by_status"].get("429", 0)
    assert refused / stats["requests"] < 0.02, stats["by_status"]
