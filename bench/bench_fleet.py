"""Benchmark: a small fleet through two qclusters on Redis and PostgreSQL.

Starts the Gmail emulator with --mailboxes generated mailboxes, a fresh PostgreSQL
database and a Redis database (the production set-up: Redis broker, shared quota state
in Redis), connects every mailbox, starts --clusters qcluster processes (and, with
--push, a web server that receives the emulator's push deliveries), runs every initial
sync to its end, then makes --changes changes (new mail, label changes, deletions)
spread over --change-seconds across the mailboxes and waits until the mirrors have them
all. Prints one JSON line:

    .venv/bin/python bench/bench_fleet.py --database-url postgres://postgres@127.0.0.1:5432/fleet_bench \\
        --redis-url redis://127.0.0.1:6379/12 [--mailboxes 200] [--messages 50] [--push]

Figures: tasks/s (the workers' `mailsync_tasks_total`), incremental syncs/s (history.list
calls), p50/p95 sync lag (from a new message's arrival in Gmail to its row in the
mirror), exact mirrors, duplicate fetches, database bytes. The database named in the URL
(it must contain `bench`) is dropped and re-created; the Redis database is flushed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import shutil
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_sync import (
    PROJECT_QUOTA_PER_MINUTE,
    commit,
    fresh_database,
    launch_emulator,
    mirror_difference,
    run_main,
    start,
    stop,
    tail,
    wait_for_cluster,
)
from cryptography.fernet import Fernet

POLL_S = 0.25


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database-url", required=True, help="postgres://.../NAME ('bench' in NAME)")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/12")
    p.add_argument("--mailboxes", type=int, default=200)
    p.add_argument("--messages", type=int, default=50, help="messages per mailbox")
    p.add_argument("--clusters", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="workers per cluster")
    p.add_argument("--latency-ms", type=int, default=20)
    p.add_argument("--changes", type=int, default=200, help="changes after the first syncs")
    p.add_argument("--change-seconds", type=float, default=60.0)
    p.add_argument("--poll-minutes", type=int, default=1, help="incremental polling interval")
    p.add_argument("--push", action="store_true", help="Gmail push through a web server")
    p.add_argument("--timeout-s", type=float, default=900.0)
    return p.parse_args()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_emulator(args: argparse.Namespace, log: Path, push_url: str) -> tuple:
    cmd = [sys.executable, "-m", "gmail_emulator", "--port", "0"]
    for i in range(args.mailboxes):
        cmd += ["--mailbox", f"fleet{i:05d}@example.com:{args.messages}"]
    cmd += ["--latency-ms", str(args.latency_ms), "--empty-history-page-rate", "0"]
    cmd += ["--quota-project-per-minute", str(PROJECT_QUOTA_PER_MINUTE)]
    if push_url:
        cmd += ["--push-url", push_url]
    return launch_emulator(cmd, log)


def app_env(
    args: argparse.Namespace, info: dict, database_url: str, metrics_dir: Path, push_url: str
) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILSYNC_", "Q_", "GMAIL_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url,
        REDIS_URL=args.redis_url,
        DEBUG="false",
        SECRET_KEY="bench-only-secret-key",  # noqa: S106 (required when DEBUG is off)
        TOKEN_ENCRYPTION_KEYS=Fernet.generate_key().decode(),  # a throwaway key
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_SSL_REDIRECT="false",
        GMAIL_EMULATOR_URL=info["base_url"],
        GOOGLE_CLIENT_ID=info["client_id"],
        GOOGLE_CLIENT_SECRET=info["client_secret"],
        MAILSYNC_QUOTA_PROJECT_PER_MINUTE=str(PROJECT_QUOTA_PER_MINUTE),
        MAILSYNC_INCREMENTAL_INTERVAL_MINUTES=str(args.poll_minutes),
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
        Q_WORKERS=str(args.workers),
        LOG_LEVEL="WARNING",
    )
    if push_url:
        env.update(push_settings(push_url))
    return env


def push_settings(push_url: str) -> dict[str, str]:
    """The app's push settings for the emulator's Pub/Sub (docs/emulator.md): its tokens'
    audience is the push URL, their email its default service account."""
    return {
        "GMAIL_PUSH_TOPIC": "projects/bench/topics/gmail",
        "GMAIL_PUSH_AUDIENCE": push_url,
        "GMAIL_PUSH_SERVICE_ACCOUNT": "gmail-push@emulator.iam.gserviceaccount.com",
    }


def metric_total(metrics_dir: Path, name: str, **labels: str) -> float:
    """The sum of a counter over this machine's processes, from their Prometheus files."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir))
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def tasks_run(metrics_dir: Path) -> float:
    """Sync tasks the workers finished."""
    return metric_total(metrics_dir, "mailsync_tasks_total")


def tree_cpu(processes: list) -> dict[int, float]:
    """CPU seconds (user + system) of every process of these process trees, by pid."""
    import psutil

    seen: dict[int, float] = {}
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(process.pid)
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = p.cpu_times()
                    seen[p.pid] = times.user + times.system
    return seen


def wait(predicate, timeout_s: float, what: str, logs: list[Path]) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise RuntimeError(f"timed out waiting for {what}\n" + "".join(tail(p) for p in logs))
        time.sleep(POLL_S)
    return time.monotonic() - started


def make_changes(
    control, emails: list[str], args: argparse.Namespace, arrivals: dict[str, float], check
) -> None:
    """Changes spread evenly over --change-seconds: 60 % new mail, 25 % label changes,
    15 % deletions. Each new message's id goes into `arrivals` with its arrival time;
    `check` looks for arrived mail while we wait for the next change."""
    rng = random.Random(7)
    gap = args.change_seconds / max(args.changes, 1)
    started = time.monotonic()
    for n in range(args.changes):
        email = rng.choice(emails)
        roll = rng.random()
        if roll < 0.6:
            arrivals[control.insert_message(email)] = time.monotonic()
        else:
            ids = list(control.snapshot(email)["messages"])
            if ids and roll < 0.85:
                control.modify_message(email, rng.choice(ids), add=["STARRED"])
            elif ids:
                control.delete_message(email, rng.choice(ids))
        next_change = started + (n + 1) * gap
        while time.monotonic() < next_change:
            check()
            time.sleep(max(0.0, min(POLL_S, next_change - time.monotonic())))


def bench(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[dict, str]:
    import redis

    workdir = Path(tempfile.mkdtemp(prefix="bench-fleet-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    web_port = free_port()
    push_url = f"http://127.0.0.1:{web_port}/gmail/push/" if args.push else ""
    emulator, info = start_emulator(args, workdir / "emulator.log", push_url)
    stack.callback(stop, emulator)
    redis.Redis.from_url(args.redis_url).flushdb()
    database_url, _ = stack.enter_context(fresh_database(args.database_url, workdir))
    env = app_env(args, info, database_url, metrics_dir, push_url)
    os.environ.clear()
    os.environ.update(env)

    import django
    from django.core.management import call_command

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection

    from gmail_emulator.control import ControlClient
    from mailsync import sync
    from mailsync.models import EmailMessage, SyncProgress

    quiet = io.StringIO()
    call_command("migrate", verbosity=0, stdout=quiet)
    for box in info["mailboxes"]:
        call_command(
            "connect_gmail",
            box["email"],
            refresh_token=box["refresh_token"],
            access_token=box["access_token"],
            stdout=quiet,
        )
    measured = commit()
    logs = []
    clusters = []
    for n in range(args.clusters):
        log = workdir / f"qcluster-{n}.log"
        logs.append(log)
        cluster = start([sys.executable, "manage.py", "qcluster"], env, log)
        clusters.append(cluster)
        stack.callback(stop, cluster)
        wait_for_cluster(cluster, args.workers, log)
    if args.push:
        log = workdir / "web.log"
        logs.append(log)
        web = start(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{web_port}"],
            env,
            log,
        )
        stack.callback(stop, web)

    users = list(get_user_model().objects.filter(email__startswith="fleet"))
    emails = [user.email for user in users]
    started = time.monotonic()
    tasks_before = tasks_run(metrics_dir)
    for user in users:
        sync.start_initial_sync(user)
    initial = SyncProgress.objects.filter(sync_type=SyncProgress.SyncType.INITIAL)

    def all_initial_done() -> bool:
        if initial.filter(status=SyncProgress.Status.FAILED).exists():
            raise RuntimeError(initial.filter(status="failed").first().error_message)
        return not initial.filter(status__in=SyncProgress.ACTIVE_STATUSES).exists()

    initial_s = wait(all_initial_done, args.timeout_s, "the initial syncs", logs)
    initial_tasks = tasks_run(metrics_dir) - tasks_before
    if args.push:  # a watch follows each first sync: changes are pushed once it is on
        watching = get_user_model().objects.filter(email__startswith="fleet", push_state="on")
        wait(lambda: watching.count() == len(users), 120, "the push watches", logs)

    control = ControlClient(info["base_url"])
    initial_stats = control.stats()
    control.reset_stats()
    tasks_before = tasks_run(metrics_dir)
    cpu_before = tree_cpu(clusters)
    changes_started = time.monotonic()
    arrivals: dict[str, float] = {}
    lags: dict[str, float] = {}

    def arrived() -> bool:
        pending = [m for m in arrivals if m not in lags]
        now = time.monotonic()
        for gmail_id in EmailMessage.objects.filter(
            gmail_id__in=pending, internal_date__isnull=False
        ).values_list("gmail_id", flat=True):
            lags[gmail_id] = now - arrivals[gmail_id]
        return len(lags) == len(arrivals)

    make_changes(control, emails, args, arrivals, arrived)
    wait(arrived, args.timeout_s, "the new mail", logs)

    def exact() -> list[str]:
        return [e for e in emails if mirror_difference(by_email[e], control.snapshot(e))]

    by_email = {user.email: user for user in users}
    # Label changes and deletions arrive with the next incremental of their mailbox.
    deadline = time.monotonic() + 120 + args.poll_minutes * 60
    while (inexact := exact()) and time.monotonic() < deadline:
        time.sleep(2)
    change_s = time.monotonic() - changes_started
    change_tasks = tasks_run(metrics_dir) - tasks_before
    cpu_after = tree_cpu(clusters)
    change_cpu = sum(cpu - cpu_before.get(pid, 0.0) for pid, cpu in cpu_after.items())
    stats = control.stats()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        db_bytes = cursor.fetchone()[0]
    ordered = sorted(lags.values())
    result = {
        "mailboxes": len(users),
        "messages_per_mailbox": args.messages,
        "clusters": args.clusters,
        "workers_per_cluster": args.workers,
        "push": args.push,
        "poll_minutes": args.poll_minutes,
        "initial_seconds": round(initial_s, 1),
        "initial_tasks_per_second": round(initial_tasks / initial_s, 1),
        "changes": args.changes,
        "new_messages": len(arrivals),
        "change_phase_seconds": round(change_s, 1),
        "change_tasks_per_second": round(change_tasks / change_s, 2),
        "change_tasks": change_tasks,
        "worker_cpu_ms_per_change_task": round(change_cpu * 1000 / max(change_tasks, 1), 1),
        "incremental_syncs_per_second": round(
            stats["by_method"].get("gmail.users.history.list", 0) / change_s, 2
        ),
        "sync_lag_p50_s": round(statistics.median(ordered), 2) if ordered else None,
        "sync_lag_p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 2) if ordered else None,
        "push_deliveries_accepted": metric_total(
            metrics_dir, "mailsync_push_deliveries_total", result="accepted"
        ),
        "push_deliveries_refused": metric_total(
            metrics_dir, "mailsync_push_deliveries_total", result="refused"
        ),
        "exact_mirrors": len(users) - len(inexact),
        "duplicate_fetches": sum(
            n - 1 for s in (initial_stats, stats) for n in s["fetches"].values()
        ),
        "database_bytes": db_bytes,
        "database_bytes_per_message": round(db_bytes / max(EmailMessage.objects.count(), 1)),
        "wall_seconds": round(time.monotonic() - started, 1),
        "commit": measured,
    }
    difference = f"{len(inexact)} mirrors differ, e.g. {inexact[:3]}" if inexact else ""
    return result, difference


def main() -> int:
    return run_main(parse_args(), bench)


if __name__ == "__main__":
    sys.exit(main())
