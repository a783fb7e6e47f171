"""A whole cluster killed (SIGKILL) on the Redis broker, then started again: the work
its workers held resumes within a minute, not when their leases run out."""

from __future__ import annotations

import time

import pytest
import redis

from mailsync.models import EmailMessage, SyncProgress
from tests.cluster import cluster_env, redis_test_url, wait_for
from tests.cluster import sync_user_process as run_sync_user
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REDIS_URL = redis_test_url(2)


@pytest.fixture
def clean_redis():
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield
    client.flushdb()


def test_work_resumes_within_a_minute_of_a_whole_cluster_restart(
    connected_mailbox, emulator, clusters, clean_redis, schedules
):
    emulator.config.latency_ms = 30  # a sync long enough to be killed halfway
    user, _ = connected_mailbox(count=3000)
    # Production settings: leases of 135 s, the watchdog's stall limit of 300 s.
    env = cluster_env(emulator, REDIS_URL=REDIS_URL, MAILSYNC_TASK_MAX_SECONDS="120")
    first = clusters.start(env)
    run_sync_user(env, user.email, "--full")  # enqueued on Redis, as production does
    run = SyncProgress.objects.get(user=user)
    fetched = EmailMessage.objects.filter(user=user, internal_date__isnull=False)
    wait_for(lambda: fetched.count() >= 600, 120, "some progress", [first])
    first.kill()  # SIGKILL the whole process group: every task in flight is lost
    time.sleep(4)  # its cluster stats expire (3 s)
    before = fetched.count()
    assert before < 3000

    restarted = time.monotonic()
    second = clusters.start(env)
    wait_for(lambda: fetched.count() > before + 100, 60, "work to resume", [second])
    resumed_after = time.monotonic() - restarted
    assert resumed_after < 60

    def finished() -> bool:
        run.refresh_from_db()
        return not run.is_active

    wait_for(finished, 240, "the resumed sync", [second])
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert max(emulator.stats()["fetches"].values()) <= 2
