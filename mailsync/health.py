"""Health checks for load balancers and orchestrators, and the clusters' heartbeat.

Three checks, each one round trip with a short timeout: the database (SELECT 1), the
broker (PING to Redis; with the ORM broker the broker is the database), and a recent
cluster heartbeat (a qcluster finished a task lately; the incremental dispatcher
runs every minute, so a live cluster with nothing else to do still beats).
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterator
from functools import cache

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

log = logging.getLogger(__name__)

BROKER_TIMEOUT_S = 2.0
# The monitor process writes a heartbeat at most this often (one UPDATE).
BEAT_EVERY_S = 15.0

_last_beat = float("-inf")


class CheckFailed(Exception):
    """A check's own verdict (rather than an exception of the thing it checks)."""


# --- The checks ------------------------------------------------------------------------------
def check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


@cache
def _redis():
    import redis

    return redis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=BROKER_TIMEOUT_S,
        socket_timeout=BROKER_TIMEOUT_S,
    )


def check_broker() -> dict:
    if not settings.REDIS_URL:
        check_database()  # Django-Q2's ORM broker: the broker is the database
        return {"kind": "orm"}
    _redis().ping()
    return {"kind": "redis"}


def check_cluster() -> dict:
    ages = {f"{cluster}@{host}": round(age, 1) for cluster, host, age in heartbeat_ages()}
    limit = settings.HEALTH_HEARTBEAT_MAX_AGE_SECONDS
    if not ages:
        raise CheckFailed("no qcluster has ever reported")
    youngest = min(ages.values())
    if youngest > limit:
        raise CheckFailed(f"no qcluster finished a task in the last {limit} s")
    return {"heartbeat_age_seconds": ages}


CHECKS: dict[str, Callable[[], dict]] = {
    "database": check_database,
    "broker": check_broker,
    "cluster": check_cluster,
}


def run_checks(names: list[str] | None = None) -> tuple[bool, dict[str, dict]]:
    """Run the named checks (all by default): (all passed, a result per check)."""
    results: dict[str, dict] = {}
    for name in names or list(CHECKS):
        started = time.monotonic()
        try:
            result = {"ok": True, **CHECKS[name]()}
        except CheckFailed as exc:
            result = {"ok": False, "error": str(exc)}
        except Exception as exc:
            log.warning("health: the %s check failed: %r", name, exc)
            result = {"ok": False, "error": _short_error(exc)}
        result["ms"] = round((time.monotonic() - started) * 1000, 1)
        results[name] = result
    return all(r["ok"] for r in results.values()), results


def _short_error(exc: Exception) -> str:
    """The kind of failure, without host names or credentials (the body is public);
    the log has the details."""
    return f"{type(exc).__name__}" + (f": {exc}" if settings.DEBUG else "")


# --- The heartbeat ---------------------------------------------------------------------------
def heartbeat_ages() -> Iterator[tuple[str, str, float]]:
    from .models import ClusterHeartbeat

    now = timezone.now()
    for cluster, host, beat_at in ClusterHeartbeat.objects.values_list(
        "cluster", "host", "beat_at"
    ):
        yield cluster, host, (now - beat_at).total_seconds()


def beat(cluster: str | None = None) -> None:
    """Record that this host's cluster is alive (one upsert)."""
    from django_q.conf import Conf

    from .models import ClusterHeartbeat

    ClusterHeartbeat.objects.bulk_create(
        [
            ClusterHeartbeat(
                cluster=(cluster or Conf.CLUSTER_NAME)[:100],
                host=socket.gethostname()[:255],
                beat_at=timezone.now(),
            )
        ],
        update_conflicts=True,
        unique_fields=["cluster", "host"],
        update_fields=["beat_at"],
    )


def beat_after_task(sender, **kwargs) -> None:
    """Django-Q2's post_execute receiver (in the cluster's monitor process): a heartbeat
    every BEAT_EVERY_S at most. A failure is logged, never raised into the monitor."""
    global _last_beat
    now = time.monotonic()
    if now - _last_beat < BEAT_EVERY_S:
        return
    _last_beat = now
    try:
        beat()
    except DatabaseError:
        log.warning("health: cannot record the cluster heartbeat", exc_info=True)
