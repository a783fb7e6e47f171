"""Quota and concurrency limits through real qcluster processes and the emulator."""

from __future__ import annotations

import pytest
import redis

from mailsync import quota
from mailsync.models import EmailMessage, SyncProgress
from tests.cluster import cluster_env, redis_test_url, sync_user_process, wait_for
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def start_sync(user, env: dict[str, str]) -> SyncProgress:
    """As an operator does (`sync_user --full`), with the clusters' settings and broker."""
    result = sync_user_process(env, user.email, "--full")
    assert result.returncode == 0, result.stdout + result.stderr
    return SyncProgress.objects.get(user=user, sync_type=SyncProgress.SyncType.INITIAL)


def finished(run: SyncProgress) -> bool:
    run.refresh_from_db()
    return not run.is_active


def assert_fetched_once_each(user, emulator) -> None:
    """Exact, and every message fetched (successfully) once: a refused part was sent
    again until Gmail took it, and nothing was left failing."""
    assert_exact_mirror(user, emulator.snapshot(user.email))
    fetches = emulator.stats()["fetches"]
    assert len(fetches) == EmailMessage.objects.filter(user=user).count()
    assert set(fetches.values()) == {1}
    assert not EmailMessage.objects.filter(user=user, fetch_failures__gt=0).exists()


def test_a_429_storm_ends_exact_with_every_refused_part_retried(
    connected_mailbox, emulator, clusters, settings
):
    """Gmail allows half of what the app was told: the app learns it from the 429s."""
    settings.MAILSYNC_QUOTA_WINDOW_SECONDS = 10
    settings.MAILSYNC_QUOTA_USER_PER_MINUTE = 2000
    emulator.config.quota_window_s = 10
    emulator.config.quota_user_per_minute = 1000  # units per 10 s window
    user, _ = connected_mailbox(count=400)
    env = cluster_env(
        emulator,
        MAILSYNC_QUOTA_WINDOW_SECONDS="10",
        MAILSYNC_QUOTA_USER_PER_MINUTE="2000",
        MAILSYNC_TASK_MAX_SECONDS="60",
    )
    cluster = clusters.start(env)
    run = start_sync(user, env)
    wait_for(lambda: finished(run), 180, "the sync through the 429 storm", [cluster])
    assert run.status == "completed", run.error_message
    refused = emulator.stats()["by_status"].get("429", 0)
    assert refused >= 10  # a storm, not a stray 429
    assert_fetched_once_each(user, emulator)
    # The pace came down from the ceiling, and stayed down.
    assert quota.pace(user.pk) < 0.75 * quota.user_ceiling()


@pytest.mark.parametrize("store", ["database", "redis"])
def test_two_clusters_keep_within_the_users_concurrency_limit(
    store, request, connected_mailbox, emulator, clusters
):
    emulator.config.concurrent_requests_per_user = 10
    emulator.config.latency_ms = 30  # a batch's parts overlap in the emulator
    user, _ = connected_mailbox(count=600)
    overrides = {
        "MAILSYNC_CONCURRENT_REQUESTS_PER_USER": "10",
        "MAILSYNC_BATCH_SIZE": "10",
        "MAILSYNC_BATCHES_IN_FLIGHT": "6",
    }
    if store == "redis":
        redis_db = redis.Redis.from_url(redis_test_url())
        redis_db.flushdb()
        request.addfinalizer(redis_db.flushdb)
        overrides["REDIS_URL"] = redis_test_url()
    env = cluster_env(emulator, **overrides)
    a, b = clusters.start(env), clusters.start(env)
    run = start_sync(user, env)
    wait_for(lambda: finished(run), 150, "the sync of two clusters", [a, b])
    assert run.status == "completed", run.error_message
    assert emulator.stats()["by_status"].get("429", 0) == 0
    assert_fetched_once_each(user, emulator)
