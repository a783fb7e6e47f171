"""/health/: each check, and a real server whose database or broker is down."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from django.utils import timezone

from mailsync import health
from mailsync.models import ClusterHeartbeat
from tests.browser.conftest import free_port
from tests.cluster import ROOT, database_url, redis_test_url


def _beat(seconds_ago: float) -> None:
    ClusterHeartbeat.objects.update_or_create(
        cluster="mailsync",
        host="worker-1",
        defaults={"beat_at": timezone.now() - dt.timedelta(seconds=seconds_ago)},
    )


@pytest.mark.django_db
def test_healthy_when_database_broker_and_a_recent_heartbeat_answer(client):
    _beat(20)

    response = client.get("/health/")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "broker": True,
        "cluster": True,
    }
    assert body["checks"]["cluster"]["heartbeat_age_seconds"]["mailsync@worker-1"] >= 20


@pytest.mark.django_db
def test_a_stale_or_missing_heartbeat_fails_the_cluster_check_only(client, settings):
    settings.HEALTH_HEARTBEAT_MAX_AGE_SECONDS = 180
    missing = client.get("/health/")
    _beat(600)
    stale = client.get("/health/")

    for response in (missing, stale):
        assert response.status_code == 503
        checks = response.json()["checks"]
        assert checks["database"]["ok"]
        assert checks["broker"]["ok"]
        assert not checks["cluster"]["ok"]
    assert "ever" in missing.json()["checks"]["cluster"]["error"]
    assert "180 s" in stale.json()["checks"]["cluster"]["error"]

    # A web node's load balancer asks only for what the web node needs.
    subset = client.get("/health/", {"only": "database,broker"})
    assert subset.status_code == 200
    assert set(subset.json()["checks"]) == {"database", "broker"}
    assert client.get("/health/", {"only": "database,nonsense"}).status_code == 400


@pytest.mark.django_db
def test_the_heartbeat_is_one_row_per_cluster_and_host():
    health.beat("mailsync")
    health.beat("mailsync")
    health.beat("priority")

    assert ClusterHeartbeat.objects.count() == 2
    ages = {cluster: age for cluster, _host, age in health.heartbeat_ages()}
    assert set(ages) == {"mailsync", "priority"}
    assert all(0 <= age < 5 for age in ages.values())


# --- A real server whose database or broker is down ----------------------------------------
def _get_text(url: str, token: str = "") -> tuple[int, str] | None:
    """(status, body) of GET `url`; None when nothing answers."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return None


def _get(url: str) -> tuple[int, dict] | None:
    answer = _get_text(url)
    return None if answer is None else (answer[0], json.loads(answer[1]))


# A plain WSGI server (as gunicorn would be): runserver refuses to start without its
# database (it checks migrations), and a node whose database fails later must still answer.
SERVE = """
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server
from config.wsgi import application
WSGIRequestHandler.log_message = lambda *args: None
make_server("127.0.0.1", int(sys.argv[1]), application).serve_forever()
"""


def _health_of_a_server(env_overrides: dict[str, str], tmp_path: Path, query: str = ""):
    """Start a WSGI server with these settings and GET /health/ once it answers."""
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DEBUG": "true",
        "LOG_LEVEL": "WARNING",
        "ALLOWED_HOSTS": "127.0.0.1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics"),
        **env_overrides,
    }
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while (answer := _get(f"http://127.0.0.1:{port}/health/{query}")) is None:
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not answer"
            time.sleep(0.2)
        return answer
    finally:
        server.kill()
        server.wait(timeout=10)
        log.close()


def _closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_server_whose_broker_is_down_is_unhealthy(tmp_path):
    status, body = _health_of_a_server(
        {"DATABASE_URL": database_url(), "REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0"},
        tmp_path,
    )

    assert status == 503
    assert body["checks"]["database"]["ok"]
    assert not body["checks"]["broker"]["ok"]
    assert "ConnectionError" in body["checks"]["broker"]["error"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_server_whose_database_is_down_is_unhealthy(tmp_path):
    status, body = _health_of_a_server(
        {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{_closed_port()}/mailsync"}, tmp_path
    )

    assert status == 503
    assert body["status"] == "fail"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": False,
        "broker": False,  # the ORM broker is the database
        "cluster": False,
    }
    assert "OperationalError" in body["checks"]["database"]["error"]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_server_with_redis_and_its_database_up_is_healthy(tmp_path):
    _beat(5)

    status, body = _health_of_a_server(
        {"DATABASE_URL": database_url(), "REDIS_URL": redis_test_url()}, tmp_path
    )

    assert status == 200, body
    assert body["checks"]["broker"] == {
        "ok": True,
        "kind": "redis",
        "ms": body["checks"]["broker"]["ms"],
    }
