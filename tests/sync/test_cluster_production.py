"""The production shape: Redis as broker and quota store, priority work on its own cluster."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis

from mailsync.models import SyncProgress
from tests.cluster import ROOT, cluster_env, redis_test_url, wait_for
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REDIS_URL = redis_test_url()


@pytest.fixture
def clean_redis():
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield
    client.flushdb()


def test_redis_broker_with_a_priority_cluster(connected_mailbox, emulator, clusters, clean_redis):
    user, _ = connected_mailbox(count=1000)
    env = cluster_env(emulator, REDIS_URL=REDIS_URL, MAILSYNC_PRIORITY_CLUSTER="priority")
    bulk = clusters.start(env)
    subprocess.run(
        [sys.executable, "manage.py", "sync_user", user.email, "--full"],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )
    run = SyncProgress.objects.get(user=user)
    time.sleep(4)
    run.refresh_from_db()
    # The first stage is priority work: the bulk cluster leaves it alone.
    assert run.status == "pending"
    urgent = clusters.start({**env, "Q_CLUSTER_NAME": "priority"})

    def finished() -> bool:
        run.refresh_from_db()
        return not run.is_active

    wait_for(finished, 120, "the sync on Redis", [bulk, urgent])
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert set(emulator.stats()["fetches"].values()) == {1}
    # The quota budget lived in Redis, where every worker saw it.
    assert redis.Redis.from_url(REDIS_URL).exists(f"mailsync:quota:user:{user.pk}")
