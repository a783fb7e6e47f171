"""Prometheus metrics: what the fleet is doing, for /metrics and the Grafana dashboard.

Every process (web workers, qcluster workers) records into prometheus-client's
multiprocess files in PROMETHEUS_MULTIPROC_DIR (set in config/settings.py before this
module is imported); /metrics adds up the files of every process of this machine, and
reads the broker's queue depth and the clusters' heartbeats when it is scraped.

The recording functions below are the only interface the rest of the code uses: one
line at the place where the thing happens, e.g. `metrics.messages_fetched(len(stored))`.
They never raise and cost a few microseconds (an mmap write).
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
from collections import defaultdict
from collections.abc import Iterator

from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST

# --- Definitions (names end in _total / _seconds as exposed) -------------------------------
GMAIL_REQUESTS = Counter(
    "mailsync_gmail_requests",
    "Gmail API requests by method and HTTP status (each part of a batch counts once; "
    "status 'network' = no answer).",
    ["method", "status"],
)
QUOTA_UNITS = Counter(
    "mailsync_gmail_quota_units",
    "Gmail quota units spent (reserved from the budget and sent), by method.",
    ["method"],
)
RATE_LIMITED = Counter(
    "mailsync_gmail_rate_limited",
    "Requests Gmail refused as too many (429, or 403 rate limit), by method.",
    ["method"],
)
QUOTA_WAIT = Counter(
    "mailsync_quota_wait_seconds",
    "Seconds callers slept waiting for the shared quota budget before sending.",
)
MESSAGES_FETCHED = Counter("mailsync_messages_fetched", "Messages fetched from Gmail and stored.")
MESSAGES_UNAVAILABLE = Counter(
    "mailsync_messages_unavailable",
    "Messages given up on: Gmail would not return them after every attempt.",
)
SYNC_RUNS = Counter(
    "mailsync_sync_runs",
    "Sync runs by type (initial, incremental, labels, health) and status (started, "
    "completed, failed).",
    ["type", "status"],
)
SYNC_LAG = Histogram(
    "mailsync_sync_lag_seconds",
    "When a mailbox is brought up to date: seconds since its previous successful sync.",
    buckets=(60, 180, 300, 420, 600, 900, 1800, 3600, 7200, 21600, 86400),
)
TASKS = Counter(
    "mailsync_tasks",
    "Sync tasks run by the workers, by stage and result (done, error).",
    ["stage", "result"],
)
PUSH_DELIVERIES = Counter(
    "mailsync_push_deliveries",
    "Gmail push notifications received, by result (accepted, refused).",
    ["result"],
)


def _declare_known_series() -> None:
    """Every series we know of exists from the start (at 0), so that dashboards and
    alerts see the metric before its first event, and rate() sees the first one."""
    from .models import SyncProgress
    from .quota import COSTS

    for method in COSTS:
        GMAIL_REQUESTS.labels(method, "200")
        QUOTA_UNITS.labels(method)
        RATE_LIMITED.labels(method)
    for sync_type in SyncProgress.SyncType.values:
        for status in ("started", "completed", "failed"):
            SYNC_RUNS.labels(sync_type, status)
    for result in ("accepted", "refused"):
        PUSH_DELIVERIES.labels(result)


_declare_known_series()


# --- Recording: the interface for the rest of the code -------------------------------------
def gmail_call(method: str, status: int | str, units: int = 0, rate_limited: bool = False) -> None:
    """One Gmail request (or one part of a batch) answered with `status`; `units` of quota
    were spent on it; `rate_limited` when Gmail said too many requests."""
    GMAIL_REQUESTS.labels(method, str(status)).inc()
    if units:
        QUOTA_UNITS.labels(method).inc(units)
    if rate_limited:
        RATE_LIMITED.labels(method).inc()


def quota_wait(seconds: float) -> None:
    """A caller slept `seconds` for its quota reservation to come due."""
    if seconds > 0:
        QUOTA_WAIT.inc(seconds)


def messages_fetched(n: int) -> None:
    if n > 0:
        MESSAGES_FETCHED.inc(n)


def messages_unavailable(n: int) -> None:
    if n > 0:
        MESSAGES_UNAVAILABLE.inc(n)


def run_started(sync_type: str) -> None:
    SYNC_RUNS.labels(str(sync_type), "started").inc()


def run_finished(sync_type: str, status: str) -> None:
    """A run ended; `status` is "completed" or "failed"."""
    SYNC_RUNS.labels(str(sync_type), str(status)).inc()


def sync_lag(seconds: float) -> None:
    """A mailbox was brought up to date `seconds` after its previous successful sync."""
    SYNC_LAG.observe(max(0.0, seconds))


def task_ran(stage: str, ok: bool) -> None:
    TASKS.labels(stage, "done" if ok else "error").inc()


def push_delivery(accepted: bool) -> None:
    PUSH_DELIVERIES.labels("accepted" if accepted else "refused").inc()


# --- Exposition ---------------------------------------------------------------------------------
def exposition() -> bytes:
    """The text format of every metric of this machine's processes, plus the broker's
    queue depth and the clusters' heartbeats, read now."""
    path = settings.PROMETHEUS_MULTIPROC_DIR
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    registry.register(LiveCollector())
    compact_dead_processes(path)
    with _lock(path, fcntl.LOCK_SH):  # never read while files are being merged
        return _generate_latest(registry)


class LiveCollector:
    """Figures read at scrape time rather than recorded: queue depth per cluster queue
    (an O(1) LLEN on Redis, a count of the queued rows with the ORM broker) and the age
    of each cluster's last heartbeat."""

    def collect(self):
        depth = GaugeMetricFamily(
            "mailsync_queue_depth", "Tasks waiting in the broker, by queue.", labels=["queue"]
        )
        for queue, size in _queue_sizes():
            depth.add_metric([queue], size)
        yield depth
        age = GaugeMetricFamily(
            "mailsync_cluster_heartbeat_age_seconds",
            "Seconds since each qcluster (cluster@host) last finished a task.",
            labels=["cluster", "host"],
        )
        from .health import heartbeat_ages

        try:
            for cluster, host, seconds in heartbeat_ages():
                age.add_metric([cluster, host], seconds)
        except Exception:  # the database is down: /health/ says so; the scrape goes on
            log.warning("metrics: cannot read cluster heartbeats", exc_info=True)
        yield age


def _queue_sizes() -> Iterator[tuple[str, int]]:
    from django_q.brokers import get_broker

    queues = [settings.Q_CLUSTER["name"], *settings.Q_CLUSTER.get("ALT_CLUSTERS", {})]
    for queue in dict.fromkeys(queues):
        try:
            yield queue, get_broker(queue).queue_size()
        except Exception:  # broker down: no figure rather than a failed scrape
            log.warning("metrics: cannot read the size of queue %s", queue, exc_info=True)


# --- Files of processes that are gone ---------------------------------------------------------
# Qcluster recycles its workers (every 500 tasks) and each process writes its own
# files, so a busy machine would gather thousands: the files of dead processes are
# added into one archive file per type, under an exclusive lock, before each scrape.
_MERGED_TYPES = ("counter", "histogram")  # sums; this project records no gauges


@contextlib.contextmanager
def _lock(path: str, mode: int) -> Iterator[None]:
    with open(os.path.join(path, ".lock"), "a") as handle:
        fcntl.flock(handle, mode)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_is_gone(filename: str) -> bool:
    pid = os.path.basename(filename)[:-3].rsplit("_", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def compact_dead_processes(path: str) -> int:
    """Add the values of processes that are gone into `<type>_archive.db` and delete
    their files. Returns how many files were merged."""
    merged = 0
    with _lock(path, fcntl.LOCK_EX):
        for kind in _MERGED_TYPES:
            dead = [f for f in glob.glob(os.path.join(path, f"{kind}_*.db")) if _pid_is_gone(f)]
            if not dead:
                continue
            archive = os.path.join(path, f"{kind}_archive.db")
            totals: dict[str, float] = defaultdict(float)
            for filename in [archive, *dead] if os.path.exists(archive) else dead:
                for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(filename):
                    totals[key] += value
            partial = archive + ".partial"  # not *.db: the collector never reads it
            with contextlib.suppress(FileNotFoundError):
                os.remove(partial)
            out = MmapedDict(partial)
            for key, value in totals.items():
                out.write_value(key, value, 0.0)
            out.close()
            os.replace(partial, archive)
            for filename in dead:
                os.remove(filename)
            merged += len(dead)
    return merged
