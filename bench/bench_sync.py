"""Benchmark: a full (initial) sync through a real `manage.py qcluster` against the emulator.

Starts the Gmail emulator as a subprocess with one generated mailbox, makes a fresh
database (a temporary SQLite file, or the PostgreSQL database named by --database-url,
dropped and re-created), migrates it, connects the mailbox as `manage.py connect_gmail`
does, starts a qcluster subprocess told the emulator's quota, starts the sync as
`manage.py sync_user --full` does, and follows it, sampling the RSS of the cluster's
processes every 0.5 s. Then it checks the mirror against the emulator's snapshot and
prints one JSON line; the exit status is 1 if the run failed or the mirror is not exact.

    .venv/bin/python bench/bench_sync.py [--messages 5000] [--latency-ms 100] ...
    make bench BENCH_ARGS="--messages 5000 --latency-ms 100"
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import psutil
from cpu_meter import CpuMeter
from cryptography.fernet import Fernet

if TYPE_CHECKING:
    from mailsync.models import SyncProgress

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EMAIL = "bench@example.com"
SAMPLE_S = 0.5
STOP_GRACE_S = 15.0
QUARTERS = (25, 50, 75, 100)
PROJECT_QUOTA_PER_MINUTE = 1_200_000  # Google's default, told to the emulator and the app
MB = 1024 * 1024


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--messages", type=int, default=5000, help="mailbox size")
    p.add_argument("--latency-ms", type=float, default=100.0, help="emulator latency per call")
    p.add_argument("--jitter-ms", type=float, default=0.0, help="uniform extra latency")
    p.add_argument("--quota-user-per-minute", type=int, default=15000, help="Gmail's user quota")
    p.add_argument("--workers", type=int, default=4, help="Q_WORKERS of the qcluster")
    p.add_argument(
        "--database-url",
        default="",
        help="postgres://USER@HOST:PORT/NAME: the database NAME (it must contain 'bench')\n"
        "is dropped, re-created and dropped again. Default: a temporary SQLite file.",
    )
    p.add_argument(
        "--redis-url",
        default="",
        help="redis://HOST:PORT/DB: production's set-up, Redis as the broker and for the quota\n"
        "state (the DB is flushed). Default: the embedded one (ORM broker, quota in the database).",
    )
    p.add_argument("--timeout-s", type=float, default=600.0, help="deadline of the sync")
    p.add_argument(
        "--unstable", action="store_true", help="the emulator with real Gmail's quirks (--unstable)"
    )
    p.add_argument("--batch-size", type=int, default=None, help="MAILSYNC_BATCH_SIZE")
    p.add_argument("--batches-in-flight", type=int, default=None, help="MAILSYNC_BATCHES_IN_FLIGHT")
    p.add_argument(
        "--debug", action="store_true", help="run the cluster with DEBUG=true (default false)"
    )
    return p.parse_args()


# --- Processes ---------------------------------------------------------------------------------
def start(cmd: list[str], env: dict[str, str], log: Path, **kw: Any) -> subprocess.Popen[str]:
    """A subprocess in its own process group (Ctrl-C reaches only us; we stop it)."""
    with log.open("ab") as out:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stderr=out,
            stdout=kw.pop("stdout", out),
            start_new_session=True,
            text=True,
            **kw,
        )


def stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM the group's leader, then SIGKILL the whole group after a grace period.

    Only the leader: qcluster's main process stops its sentinel, which stops the workers,
    in about a second; a SIGTERM to every process of the group at once hangs that
    shutdown until the SIGKILL.
    """
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=STOP_GRACE_S)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group too
    process.wait(timeout=STOP_GRACE_S)
    if process.stdout:
        process.stdout.close()


def start_emulator(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen[str], dict]:
    cmd = [sys.executable, "-m", "gmail_emulator", "--port", "0"]
    cmd += ["--mailbox", f"{EMAIL}:{args.messages}", "--latency-ms", str(args.latency_ms)]
    cmd += ["--jitter-ms", str(args.jitter_ms)]
    cmd += ["--quota-user-per-minute", str(args.quota_user_per_minute)]
    cmd += ["--quota-project-per-minute", str(PROJECT_QUOTA_PER_MINUTE)]
    if args.unstable:
        cmd += ["--unstable"]
    return launch_emulator(cmd, log)


def launch_emulator(cmd: list[str], log: Path) -> tuple[subprocess.Popen[str], dict]:
    """Start the emulator command and read its first stdout line (URL, client id and
    secret, tokens)."""
    process = start(cmd, dict(os.environ, PYTHONPATH=str(ROOT)), log, stdout=subprocess.PIPE)
    line = process.stdout.readline() if process.stdout else ""
    if not line:
        stop(process)
        raise RuntimeError(f"the emulator did not start:\n{tail(log)}")
    return process, json.loads(line)


def commit() -> str:
    """The commit measured (with '+' when the working tree has changes)."""
    git = ["git", "-C", str(ROOT)]
    try:
        head = subprocess.run(
            [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "-uno"], capture_output=True, text=True
        )
    except OSError:
        return ""
    return head.stdout.strip() + ("+" if dirty.stdout.strip() else "")


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""


# --- Database ------------------------------------------------------------------------------------
@contextlib.contextmanager
def fresh_database(url: str, workdir: Path) -> Iterator[tuple[str, str]]:
    """Yield (DATABASE_URL, kind) of an empty database; remove it afterwards."""
    if not url:
        yield f"sqlite:///{workdir / 'bench.sqlite3'}", "sqlite"
        return
    import psycopg
    from psycopg import sql

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if parts.scheme not in ("postgres", "postgresql") or "bench" not in name:
        raise SystemExit(f"--database-url must be postgres://.../NAME with 'bench' in NAME: {url}")
    admin_url = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))

    def execute(statement: str) -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(name)))

    execute("DROP DATABASE IF EXISTS {} WITH (FORCE)")
    execute("CREATE DATABASE {}")
    try:
        yield url, "postgresql"
    finally:
        from django.db import connections

        connections.close_all()
        execute("DROP DATABASE IF EXISTS {} WITH (FORCE)")


def app_env(args: argparse.Namespace, info: dict, database_url: str) -> dict[str, str]:
    """The environment of the app processes: settings come from it (config/settings.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILSYNC_", "Q_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url,
        # Without --redis-url, the embedded set-up: ORM broker, quota state in the database.
        REDIS_URL=args.redis_url,
        DEBUG="true" if args.debug else "false",
        SECRET_KEY="bench-only-secret-key",  # noqa: S106 (required when DEBUG is off)
        TOKEN_ENCRYPTION_KEYS=Fernet.generate_key().decode(),  # a throwaway key
        GMAIL_EMULATOR_URL=info["base_url"],
        GOOGLE_CLIENT_ID=info["client_id"],
        GOOGLE_CLIENT_SECRET=info["client_secret"],
        MAILSYNC_QUOTA_USER_PER_MINUTE=str(args.quota_user_per_minute),
        MAILSYNC_QUOTA_PROJECT_PER_MINUTE=str(PROJECT_QUOTA_PER_MINUTE),
        Q_WORKERS=str(args.workers),
        LOG_LEVEL="WARNING",
    )
    if args.batch_size:
        env["MAILSYNC_BATCH_SIZE"] = str(args.batch_size)
    if args.batches_in_flight:
        env["MAILSYNC_BATCHES_IN_FLIGHT"] = str(args.batches_in_flight)
    return env


# --- Following the run ------------------------------------------------------------------------------
def cluster_rss(cluster: subprocess.Popen[str]) -> tuple[float, float, int]:
    """(RSS of the whole qcluster tree, largest RSS of one child, number of children) in MB."""
    try:
        root = psutil.Process(cluster.pid)
        children = root.children(recursive=True)
        total = root.memory_info().rss
    except psutil.NoSuchProcess:
        return 0.0, 0.0, 0
    largest = 0
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            rss = child.memory_info().rss
            total += rss
            largest = max(largest, rss)
    return total / MB, largest / MB, len(children)


def wait_for_cluster(cluster: subprocess.Popen[str], workers: int, log: Path) -> None:
    """Until the sentinel, pusher, monitor and every worker are forked (they fork from a
    process with Django loaded, so they are ready at once)."""
    deadline = time.monotonic() + 60
    while cluster_rss(cluster)[2] < workers + 3:
        if cluster.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the qcluster did not start:\n{tail(log)}")
        time.sleep(0.2)
    time.sleep(1.0)


@dataclass
class Follow:
    status: str = "timeout"
    peak_total: float = 0.0
    peak_worker: float = 0.0
    rss_by_progress: dict[str, float | None] = field(default_factory=lambda: by_quarter())
    seconds_by_progress: dict[str, float | None] = field(default_factory=lambda: by_quarter())
    seconds_to_first_inbox_message: float | None = None
    seconds_to_whole_inbox: float | None = None


def by_quarter() -> dict[str, float | None]:
    return {f"{q}%": None for q in QUARTERS}


def follow(
    run: SyncProgress,
    cluster: subprocess.Popen[str],
    expected: int,
    timeout_s: float,
    inbox_size: int = 0,
    cpu: CpuMeter | None = None,
) -> Follow:
    """Poll the run until it is no longer active, sampling the cluster's memory.

    Progress is measured against the mailbox size: while the listing runs, the run's
    num_total is only the number of ids listed so far.
    """
    from django.utils import timezone

    result = Follow()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and cluster.poll() is None:
        run.refresh_from_db()
        total, worker, _ = cluster_rss(cluster)
        result.peak_total = max(result.peak_total, total)
        result.peak_worker = max(result.peak_worker, worker)
        completed = run.status == run.Status.COMPLETED
        done = 100 if completed else run.num_processed * 100 / max(run.num_total, expected)
        for key in (f"{q}%" for q in QUARTERS if done >= q):
            if result.rss_by_progress[key] is None:
                result.rss_by_progress[key] = round(total, 1)
                elapsed = (run.completed_at or timezone.now()) - run.started_at
                result.seconds_by_progress[key] = round(elapsed.total_seconds(), 1)
        note_inbox(run, result, inbox_size)
        if cpu is not None:
            cpu.sample()
        if not run.is_active:
            result.status = run.status
            break
        time.sleep(SAMPLE_S)
    else:
        if cluster.poll() is not None:
            result.status = "cluster exited"
    return result


def note_inbox(run: SyncProgress, result: Follow, inbox_size: int) -> None:
    """When the first INBOX message, then the whole INBOX, was in the mirror."""
    if result.seconds_to_whole_inbox is not None or not inbox_size:
        return
    from django.utils import timezone

    from mailsync.models import EmailMessage

    in_mirror = EmailMessage.objects.filter(
        user_id=run.user_id, internal_date__isnull=False, labels__gmail_id="INBOX"
    ).count()
    elapsed = round((timezone.now() - run.started_at).total_seconds(), 1)
    if in_mirror and result.seconds_to_first_inbox_message is None:
        result.seconds_to_first_inbox_message = elapsed
    if in_mirror >= inbox_size:
        result.seconds_to_whole_inbox = elapsed


def quota_optimum(snapshot: dict) -> int:
    """The fewest units that fetch this mailbox: per thread, threads.get (10) or a
    messages.get (5) per message, whichever is less."""
    sizes = Counter(message["threadId"] for message in snapshot["messages"].values())
    return sum(min(10, 5 * n) for n in sizes.values())


def mirror_difference(user: Any, snapshot: dict) -> str:
    """What differs between the database and the emulator ('' when the mirror is exact),
    compared as tests/gmail_fixtures.py's assert_exact_mirror does."""
    from tests.gmail_fixtures import local_mirror

    local = local_mirror(user)
    remote = {m: {**v, "labelIds": sorted(v["labelIds"])} for m, v in snapshot["messages"].items()}
    missing = sorted(remote.keys() - local["messages"].keys())
    extra = sorted(local["messages"].keys() - remote.keys())
    wrong = sorted(
        m for m in remote.keys() & local["messages"].keys() if remote[m] != local["messages"][m]
    )
    remote_labels = sorted((lb["id"], lb["name"], lb["type"]) for lb in snapshot["labels"])
    problems = [
        f"{len(missing)} missing, e.g. {missing[:3]}" if missing else "",
        f"{len(extra)} extra, e.g. {extra[:3]}" if extra else "",
        f"{len(wrong)} differ, e.g. {wrong[0]}: gmail {remote[wrong[0]]} "
        f"local {local['messages'][wrong[0]]}"
        if wrong
        else "",
        "labels differ" if local["labels"] != remote_labels else "",
    ]
    return "; ".join(p for p in problems if p)


def fetch_units(stats: dict) -> int:
    """Units Gmail charged for fetching messages (messages.get and threads.get)."""
    by_method = stats["units_by_method"]
    return by_method.get("gmail.users.messages.get", 0) + by_method.get(
        "gmail.users.threads.get", 0
    )


# --- Main -----------------------------------------------------------------------------------------
def bench(args: argparse.Namespace, stack: contextlib.ExitStack) -> tuple[dict, str]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    stack.callback(shutil.rmtree, workdir, ignore_errors=True)
    emulator, info = start_emulator(args, workdir / "emulator.log")
    stack.callback(stop, emulator)
    database_url, kind = stack.enter_context(fresh_database(args.database_url, workdir))
    env = app_env(args, info, database_url)
    if args.redis_url:
        import redis

        # Before this run writes anything there (connect_gmail caches through it too):
        # no task, quota or cache state left over from another run.
        redis.Redis.from_url(args.redis_url).flushdb()
    os.environ.clear()  # settings are read from the environment at django.setup(): this
    os.environ.update(env)  # process must see what the cluster sees

    import django
    from django.core.management import call_command

    django.setup()
    from django.contrib.auth import get_user_model

    from gmail_emulator.control import ControlClient
    from mailsync.models import SyncProgress

    tokens = info["mailboxes"][0]
    quiet = io.StringIO()
    call_command("migrate", verbosity=0, stdout=quiet)
    call_command(
        "connect_gmail",
        EMAIL,
        refresh_token=tokens["refresh_token"],
        access_token=tokens["access_token"],
        stdout=quiet,
    )
    measured = commit()  # before the cluster loads the code
    cluster_log = workdir / "qcluster.log"
    cluster = start([sys.executable, "manage.py", "qcluster"], env, cluster_log)
    stack.callback(stop, cluster)
    wait_for_cluster(cluster, args.workers, cluster_log)

    control = ControlClient(info["base_url"])
    snapshot = control.snapshot(EMAIL)
    inbox = sum(1 for m in snapshot["messages"].values() if "INBOX" in m["labelIds"])
    cpu = CpuMeter(cluster, emulator, redis_server=bool(args.redis_url))
    cpu.sample()  # the idle cluster's CPU so far is not the sync's
    call_command("sync_user", EMAIL, full=True, stdout=quiet)
    user = get_user_model().objects.get(email=EMAIL)
    run = SyncProgress.objects.get(user=user, sync_type=SyncProgress.SyncType.INITIAL)
    followed = follow(run, cluster, args.messages, args.timeout_s, inbox_size=inbox, cpu=cpu)

    stats = control.stats()
    difference = mirror_difference(user, control.snapshot(EMAIL))
    if followed.status != SyncProgress.Status.COMPLETED:
        difference = difference or "the run did not complete"
        print(f"run {followed.status}: {run.error_message}\n{tail(cluster_log)}", file=sys.stderr)
    seconds = ((run.completed_at or run.updated_at) - run.started_at).total_seconds()
    ceiling = args.quota_user_per_minute / 60 / 5
    mps = run.num_processed / seconds if seconds > 0 else 0.0
    done = max(run.num_processed, 1)
    units = stats["units"]
    units_per_second = units / seconds if seconds > 0 else 0.0
    fetching, optimum = fetch_units(stats), quota_optimum(snapshot)
    from django.conf import settings

    result = {
        "messages": run.num_processed,
        "seconds": round(seconds, 2),
        "messages_per_second": round(mps, 2),
        "quota_ceiling_messages_per_second": round(ceiling, 2),
        "ratio": round(mps / ceiling, 3),
        "units_spent": units,
        "units_per_second": round(units_per_second, 1),
        "ratio_of_budget": round(units_per_second / (args.quota_user_per_minute / 60), 3),
        "units_fetching": fetching,
        "units_per_message": round(fetching / max(run.num_processed, 1), 3),
        "messages_per_unit": round(run.num_processed / max(fetching, 1), 4),
        "optimum_units": optimum,
        "ratio_to_optimum": round(fetching / max(optimum, 1), 4),
        "threads_get": stats["by_method"].get("gmail.users.threads.get", 0),
        "inbox_messages": inbox,
        "seconds_to_first_inbox_message": followed.seconds_to_first_inbox_message,
        "seconds_to_whole_inbox": followed.seconds_to_whole_inbox,
        "unstable": args.unstable,
        "http_429": stats["by_status"].get("429", 0),
        "requests": stats["requests"],
        "duplicate_fetches": sum(n - 1 for n in stats["fetches"].values()),
        "latency_ms": args.latency_ms,
        "jitter_ms": args.jitter_ms,
        "quota_user_per_minute": args.quota_user_per_minute,
        "workers": args.workers,
        "batch_size": settings.MAILSYNC_BATCH_SIZE,
        "batches_in_flight": settings.MAILSYNC_BATCHES_IN_FLIGHT,
        "database": kind,
        "broker": "redis" if args.redis_url else "orm",
        "commit": measured,
        "status": followed.status,
        "cpu_ms_per_message_cluster": round(cpu.cluster_seconds() * 1000 / done, 3),
        "cpu_ms_per_message_emulator": round(cpu.emulator_seconds() * 1000 / done, 3),
        "cpu_ms_per_message_postgres": round(cpu.database_seconds() * 1000 / done, 3),
        "cpu_ms_per_message_redis": round(cpu.redis_seconds() * 1000 / done, 3),
        "peak_rss_mb_total": round(followed.peak_total, 1),
        "peak_rss_mb_worker": round(followed.peak_worker, 1),
        "exact_mirror": not difference,
        "rss_mb_samples_by_progress": followed.rss_by_progress,
        "seconds_by_progress": followed.seconds_by_progress,
    }
    return result, difference


def run_main(args: argparse.Namespace, bench_fn) -> int:
    """Run `bench_fn(args, stack)` -> (result, difference) with every subprocess stopped
    at the end, print the JSON line; exit status 1 when the mirror is not exact."""
    # A SIGTERM ends us like Ctrl-C does: the ExitStack still stops every subprocess.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        with contextlib.ExitStack() as stack:
            result, difference = bench_fn(args, stack)
    except KeyboardInterrupt:
        print("interrupted: everything was stopped", file=sys.stderr)
        return 130
    print(json.dumps(result), flush=True)
    if difference:
        print(f"mirror not exact: {difference}", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    return run_main(parse_args(), bench)


if __name__ == "__main__":
    sys.exit(main())
