"""Gmail fails, as a whole or for one message, while real clusters sync: the mirror
ends exact (or lists what Gmail could not serve) with no command after the fault."""

from __future__ import annotations

import pytest

from mailsync import counters, sync
from mailsync.models import EmailMessage, SyncProgress
from tests.chaos.conftest import MESSAGE_GET, sleep_while
from tests.cluster import cluster_env, wait_for
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

OUTAGE_S = 20


def test_an_outage_mid_incremental_ends_in_the_exact_mirror_by_itself(
    connected_mailbox, emulator, clusters, command, schedules
):
    user, _ = connected_mailbox(count=200)
    assert sync.run_until_finished(sync.start_initial_sync(user)).status == "completed"
    for _ in range(300):
        emulator.insert_message(user.email)
    env = cluster_env(emulator, MAILSYNC_OUTAGE_RETRY_SECONDS="1", MAILSYNC_RETRY_BACKOFF_SECONDS="0.2")
    cluster = clusters.start(env)
    emulator.script_fault(MESSAGE_GET, count=10**9, status=503, reason="backendError")

    follower = command(env, "sync_user", user.email, "--incremental", "--wait")

    def retrying() -> bool:
        run = SyncProgress.objects.filter(user=user, sync_type="incremental").first()
        return bool(run and run.error_message.startswith("Retrying: Gmail answers 503"))

    wait_for(retrying, 60, "the run to say it is retrying", [cluster])
    run = SyncProgress.objects.get(user=user, sync_type="incremental")
    unfetched = EmailMessage.objects.filter(user=user, internal_date__isnull=True)
    # While Gmail fails: active, visible, nothing used up, the command still following.
    sleep_while(
        lambda: SyncProgress.objects.get(pk=run.pk).is_active and follower.running, OUTAGE_S
    )
    assert unfetched.count() == 300
    assert not unfetched.exclude(fetch_failures=0).exists()

    emulator.clear_faults()  # no command is run after this
    assert follower.wait(timeout=180) == 0, follower.stdout[-2000:] + follower.stderr[-2000:]
    assert "completed: 300 added, 0 deleted, 0 relabelled" in follower.stdout
    run.refresh_from_db()
    assert run.status == "completed"
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert counters.read(user.pk) == counters.recount(user.pk)


def test_a_poison_message_does_not_block_a_new_mailbox(
    connected_mailbox, emulator, clusters, command, schedules
):
    user, _ = connected_mailbox(count=300)
    messages = emulator.snapshot(user.email)["messages"]
    poison = sorted(messages)[100]
    # Gmail fails it alone, and its thread with it.
    emulator.script_fault(
        rf"/(messages/{poison}|threads/{messages[poison]['threadId']})$",
        count=10**9,
        status=500,
        reason="backendError",
    )
    env = cluster_env(
        emulator, MAILSYNC_MESSAGE_RETRY_SECONDS="1", MAILSYNC_RETRY_BACKOFF_SECONDS="0.2"
    )
    cluster = clusters.start(env)

    first = command(env, "sync_user", user.email, "--full", "--wait")
    assert first.wait(timeout=180) == 0, first.stdout[-2000:] + first.stderr[-2000:]
    assert "1 message(s) Gmail could not serve" in first.stdout
    row = EmailMessage.objects.get(user=user, gmail_id=poison)
    assert row.unavailable_since is not None
    assert "500" in row.last_fetch_error

    # Incremental syncs proceed.
    new_id = emulator.insert_message(user.email)
    incremental = command(env, "sync_user", user.email, "--incremental", "--wait")
    assert incremental.wait(timeout=120) == 0, incremental.stderr[-2000:]
    assert EmailMessage.objects.filter(gmail_id=new_id, internal_date__isnull=False).exists()

    # Gmail serves it again: the health check brings it, and nothing else is missing.
    emulator.clear_faults()
    check = command(env, "sync_user", user.email, "--health-check", "--wait")
    assert check.wait(timeout=180) == 0, check.stderr[-2000:]
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert counters.read(user.pk).unavailable == 0
    assert cluster.process.poll() is None
