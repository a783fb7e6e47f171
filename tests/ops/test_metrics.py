"""/metrics: who may read it, what a sync records, and the files of dead processes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mailsync import metrics, sync
from mailsync.models import EmailMessage, SyncProgress
from mailsync.sync.runs import create_run
from tests.cluster import ROOT
from tests.ops.conftest import parse_metrics, total

pytestmark = pytest.mark.django_db

EVERY_METRIC = (
    "mailsync_gmail_requests_total",
    "mailsync_gmail_quota_units_total",
    "mailsync_gmail_rate_limited_total",
    "mailsync_quota_wait_seconds_total",
    "mailsync_messages_fetched_total",
    "mailsync_messages_unavailable_total",
    "mailsync_sync_runs_total",
    "mailsync_sync_lag_seconds_bucket",
    "mailsync_push_deliveries_total",
    "mailsync_queue_depth",
)


def test_every_metric_is_exposed_before_anything_happened(scrape):
    names = {name for name, _ in scrape()}

    assert set(EVERY_METRIC) <= names
    samples = scrape()
    assert ("mailsync_queue_depth", (("queue", "mailsync"),)) in samples
    assert ("mailsync_push_deliveries_total", (("result", "refused"),)) in samples


# --- Who may read it ------------------------------------------------------------------------
@pytest.fixture
def production(settings):
    settings.DEBUG = False
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_NETWORKS = []
    return settings


def test_closed_in_production_until_configured(client, production):
    response = client.get("/metrics")

    assert response.status_code == 403
    assert b"METRICS_TOKEN" in response.content


def test_bearer_token(client, production):
    production.METRICS_TOKEN = "s3cret-token"

    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert ok.status_code == 200
    assert b"mailsync_gmail_requests_total" in ok.content


def test_allowed_networks_and_both_rules(client, production):
    import ipaddress

    production.METRICS_ALLOWED_NETWORKS = [ipaddress.ip_network("10.1.0.0/16")]

    assert client.get("/metrics", REMOTE_ADDR="10.2.0.5").status_code == 403
    assert client.get("/metrics", REMOTE_ADDR="10.1.7.9").status_code == 200

    production.METRICS_TOKEN = "s3cret-token"  # with both, both must pass
    assert client.get("/metrics", REMOTE_ADDR="10.1.7.9").status_code == 401
    both = client.get("/metrics", REMOTE_ADDR="10.1.7.9", HTTP_AUTHORIZATION="Bearer s3cret-token")
    assert both.status_code == 200
    wrong_network = client.get(
        "/metrics", REMOTE_ADDR="10.2.0.5", HTTP_AUTHORIZATION="Bearer s3cret-token"
    )
    assert wrong_network.status_code == 403


# --- What a sync records (in this process) ------------------------------------------------------
def test_an_inline_sync_counts_what_the_emulator_saw(connected_mailbox, emulator, scrape):
    user, _ = connected_mailbox(count=120)
    emulator.reset_stats()
    before = scrape()

    # The run is created without a queued task: only this process works on it.
    run, _ = create_run(user, SyncProgress.SyncType.INITIAL)
    sync.run_inline([sync.Step("begin_initial_sync", user.pk, (run.pk,))])

    after = scrape()
    assert SyncProgress.objects.get(user=user).status == "completed"
    stats = emulator.stats()

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    methods = (
        "users.getProfile",
        "users.labels.list",
        "users.messages.list",
        "users.messages.get",
        "users.threads.get",
    )
    for method in methods:
        # Calls that got no answer ("network") may never have reached the emulator.
        answered = delta("mailsync_gmail_requests_total", method=method) - delta(
            "mailsync_gmail_requests_total", method=method, status="network"
        )
        assert answered == stats["by_method"].get(f"gmail.{method}", 0), method
        assert delta("mailsync_gmail_quota_units_total", method=method) == stats[
            "units_by_method"
        ].get(f"gmail.{method}", 0), method
    assert delta("mailsync_messages_fetched_total") == 120
    assert not EmailMessage.objects.filter(user=user, sender_address="").exists()
    assert delta("mailsync_sync_runs_total", type="initial", status="started") == 1
    assert delta("mailsync_sync_runs_total", type="initial", status="completed") == 1


def test_sync_lag_is_observed_when_a_mailbox_is_brought_up_to_date(
    connected_mailbox, emulator, scrape
):
    import datetime as dt

    from django.utils import timezone

    user, _ = connected_mailbox(count=10)
    # The run is created without a queued task: only this process works on it.
    run, _ = create_run(user, SyncProgress.SyncType.INITIAL)
    sync.run_inline([sync.Step("begin_initial_sync", user.pk, (run.pk,))])
    user.refresh_from_db()
    # As if the last sync had been 7 minutes ago.
    type(user).objects.filter(pk=user.pk).update(
        last_full_sync_at=timezone.now() - dt.timedelta(minutes=7)
    )
    before = scrape()

    sync.run_inline(sync.resume_steps(sync.start_incremental_sync(user)))

    after = scrape()
    lag_sum = total(after, "mailsync_sync_lag_seconds_sum") - total(
        before, "mailsync_sync_lag_seconds_sum"
    )
    assert (
        total(after, "mailsync_sync_lag_seconds_count")
        - total(before, "mailsync_sync_lag_seconds_count")
        == 1
    )
    assert 7 * 60 - 5 < lag_sum < 7 * 60 + 60
    le_600 = ("mailsync_sync_lag_seconds_bucket", (("le", "600.0"),))
    le_420 = ("mailsync_sync_lag_seconds_bucket", (("le", "420.0"),))
    assert after[le_600] - before[le_600] == 1
    assert after[le_420] - before[le_420] == 0


# --- Files of processes that are gone -------------------------------------------------------------
RECORD_IN_A_CHILD = """
import django
django.setup()
from mailsync import metrics
metrics.messages_fetched(7)
metrics.gmail_call("users.messages.get", 429, 5, rate_limited=True)
metrics.sync_lag(250)
"""


def test_files_of_dead_processes_are_merged_and_nothing_is_lost(tmp_path, settings):
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DEBUG": "true"}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    for _ in range(3):  # three workers that record and exit
        subprocess.run(
            [sys.executable, "-c", RECORD_IN_A_CHILD], cwd=ROOT, env=env, check=True, timeout=60
        )
    assert len(list(tmp_path.glob("counter_*.db"))) == 3

    samples = parse_metrics(metrics.exposition().decode())

    assert sorted(p.name for p in tmp_path.glob("*.db")) == [
        "counter_archive.db",
        "histogram_archive.db",
    ]
    assert total(samples, "mailsync_messages_fetched_total") == 21
    assert total(samples, "mailsync_gmail_rate_limited_total", method="users.messages.get") == 3
    assert total(samples, "mailsync_gmail_requests_total", status="429") == 3
    assert total(samples, "mailsync_sync_lag_seconds_count") == 3
    assert samples[("mailsync_sync_lag_seconds_bucket", (("le", "300.0"),))] == 3

    # Merging again (another scrape) adds nothing twice.
    again = parse_metrics(metrics.exposition().decode())
    assert total(again, "mailsync_messages_fetched_total") == 21


def test_a_workers_only_machine_serves_its_metrics(tmp_path):
    from tests.browser.conftest import free_port
    from tests.ops.test_health import _get_text

    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DEBUG": "false",
        "SECRET_KEY": "test-only",
        "TOKEN_ENCRYPTION_KEYS": "Zk3rr5bqvYF2xSkhVYvUS3d7GyQj1n7d2wIbJgS0bV8=",
        "GOOGLE_CLIENT_ID": "x",
        "GOOGLE_CLIENT_SECRET": "y",
        "METRICS_TOKEN": "worker-token",
    }
    subprocess.run(
        [sys.executable, "-c", RECORD_IN_A_CHILD], cwd=ROOT, env=env, check=True, timeout=60
    )
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "manage.py", "metrics_server", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert b"Serving metrics" in server.stdout.readline()
        url = f"http://127.0.0.1:{port}/metrics"
        assert _get_text(url)[0] == 401
        status, text = _get_text(url, token="worker-token")
    finally:
        server.kill()
        server.wait(timeout=10)

    assert status == 200
    assert total(parse_metrics(text), "mailsync_messages_fetched_total") == 7
