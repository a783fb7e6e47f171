"""The database drops every connection while a sync runs and an operator follows it."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from mailsync import sync
from mailsync.models import SyncProgress
from tests.cluster import cluster_env, wait_for
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="an embedded SQLite file has no server to lose"
    ),
]


def drop_other_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def test_sync_user_wait_survives_a_database_blip(connected_mailbox, emulator, clusters, command):
    emulator.config.latency_ms = 20
    user, _ = connected_mailbox(count=100)
    assert sync.run_until_finished(sync.start_initial_sync(user)).status == "completed"
    for _ in range(400):
        emulator.insert_message(user.email)
    # Every Gmail call takes 3 s while the database blips, so the run is in flight through
    # all three blips however fast the machine: it needs at least three rounds of calls.
    emulator.config.latency_ms = 3000
    env = cluster_env(emulator)
    cluster = clusters.start(env)
    follower = command(env, "sync_user", user.email, "--incremental", "--wait")
    wait_for(
        lambda: SyncProgress.objects.filter(user=user, sync_type="incremental").exists(),
        60,
        "the run to start",
        [cluster],
    )
    dropped = []
    for _ in range(3):
        dropped.append(drop_other_connections())
        time.sleep(1)
    emulator.config.latency_ms = 20
    # The follower holds its connection from the start of the run, so the first blip cuts
    # it; later blips may find it between its reconnects and the workers between tasks.
    assert dropped[0] > 0, dropped

    try:
        code = follower.wait(timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{cluster.output()}") from None
    assert code == 0, follower.stdout[-2000:] + follower.stderr[-2000:]
    assert "Database unreachable" in follower.stderr
    assert "completed: 400 added" in follower.stdout
    assert_exact_mirror(user, emulator.snapshot(user.email))
