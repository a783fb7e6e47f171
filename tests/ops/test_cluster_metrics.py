"""Acceptance: after a sync through a real qcluster, /metrics has the Gmail calls the
emulator saw, /health/ sees the cluster's heartbeat, and the log has one line per event
and none per task."""

from __future__ import annotations

import pytest

from mailsync import sync
from mailsync.models import SyncProgress
from tests.cluster import cluster_env, wait_for
from tests.ops.conftest import total

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_metrics_after_a_sync_through_a_real_cluster_match_the_emulator(
    connected_mailbox, emulator, clusters, scrape, client, settings, tmp_path
):
    # A metrics directory of this test's own: what it holds is the cluster's alone.
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)
    user, _ = connected_mailbox(count=600)
    emulator.reset_stats()
    cluster = clusters.start(
        cluster_env(emulator, PROMETHEUS_MULTIPROC_DIR=str(tmp_path), LOG_LEVEL="INFO")
    )
    run = sync.start_initial_sync(user)

    def finished() -> bool:
        run.refresh_from_db()
        return not run.is_active

    wait_for(finished, 120, "the initial sync", [cluster])
    assert run.status == SyncProgress.Status.COMPLETED, run.error_message
    stats = emulator.stats()
    gmail_methods = {m: n for m, n in stats["by_method"].items() if m.startswith("gmail.")}
    assert gmail_methods["gmail.users.threads.get"] > 0  # threads fetched whole, and
    assert gmail_methods["gmail.users.messages.get"] > 0  # messages alone

    def assert_metrics_match() -> None:
        samples = scrape()
        for emulator_method, count in gmail_methods.items():
            method = emulator_method.removeprefix("gmail.")
            assert total(samples, "mailsync_gmail_requests_total", method=method) == count, method
        for status, count in stats["by_status"].items():
            assert total(samples, "mailsync_gmail_requests_total", status=status) <= count
        assert total(samples, "mailsync_messages_fetched_total") == 600
        for emulator_method, units in stats["units_by_method"].items():
            method = emulator_method.removeprefix("gmail.")
            assert total(samples, "mailsync_gmail_quota_units_total", method=method) == units
        assert total(samples, "mailsync_sync_runs_total", type="initial", status="completed") == 1
        assert total(samples, "mailsync_tasks_total", stage="fetch_batch", result="done") > 0
        assert total(samples, "mailsync_tasks_total", result="error") == 0
        assert total(samples, "mailsync_cluster_heartbeat_age_seconds") < 60

    assert_metrics_match()  # workers alive: their own files
    health = client.get("/health/")
    assert health.status_code == 200, health.json()

    cluster.stop()  # workers gone: their files are merged into the archive, nothing lost
    assert_metrics_match()
    assert {p.name for p in tmp_path.glob("*.db")} >= {"counter_archive.db"}

    # One line per event with the ids; Django-Q2's per-task lines are gone at INFO.
    log = cluster.output()
    assert f"user {user.pk} run {run.pk}: initial sync completed" in log
    assert "Processed '" not in log
    assert "processing" not in log
