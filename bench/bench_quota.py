"""Benchmark: reservations per second of the shared quota store, 1, 4 and 8 processes.

Each mode runs real processes against a real store: `database` on the PostgreSQL
database named by --database-url (dropped, re-created, migrated, dropped again; the
name must contain 'bench'), `redis` on --redis-url (only the mailsync:quota: keys are
touched). Every process calls `quota.reserve` as the Gmail client does, for users of
its own (1,000 each) and, one call in ten, for one of 50 users every process shares;
it makes --calls-per-user calls in a row for a user (the calls of one task) before it
picks the next. The budgets are set far above the load (10^9 units a minute), so
every reservation is granted at once: the figure is what the store costs, not a quota.

Prints one JSON line: reservations/s per mode and process count, and the share of
reservations that needed a store round trip (the rest were spent from local leases).

    .venv/bin/python bench/bench_quota.py --database-url postgres://postgres@127.0.0.1:5432/quota_bench \\
        --redis-url redis://127.0.0.1:6379/9 [--seconds 5] [--calls-per-user 8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

OWN_USERS = 1000
SHARED_USERS = 50
SHARED_SHARE = 0.1
UNITS = (1, 5, 5, 5, 10)  # labels.get, messages.get/list, threads.get
BUDGET = 10**9  # units per minute, user and project: nothing waits
PROCESS_COUNTS = (1, 4, 8)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--database-url", help="postgres://.../NAME, NAME with 'bench' (required)")
    p.add_argument("--redis-url", help="redis://HOST:PORT/DB (required)")
    p.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    p.add_argument("--calls-per-user", type=int, default=8, help="calls in a row for one user")
    p.add_argument("--worker", nargs=2, metavar=("INDEX", "SECONDS"), help=argparse.SUPPRESS)
    return p.parse_args()


def env_for(database_url: str, redis_url: str, calls_per_user: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAILSYNC_", "Q_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        MAILSYNC_QUOTA_USER_PER_MINUTE=str(BUDGET),
        MAILSYNC_QUOTA_PROJECT_PER_MINUTE=str(BUDGET),
        BENCH_CALLS_PER_USER=str(calls_per_user),
        LOG_LEVEL="WARNING",
    )
    return env


# --- One process -------------------------------------------------------------------------
def worker(index: int, seconds: float) -> None:
    """Reserve until told to stop; print {"reservations": n, "round_trips": m}."""
    import django

    django.setup()
    from mailsync import quota

    store = quota.store()
    lease, round_trips = store.lease, [0]

    def counted_lease(*args, **kwargs):
        round_trips[0] += 1
        return lease(*args, **kwargs)

    store.lease = counted_lease
    calls = int(os.environ["BENCH_CALLS_PER_USER"])
    rng = random.Random(index)
    own = range(1 + index * OWN_USERS, 1 + (index + 1) * OWN_USERS)
    shared = range(10**6, 10**6 + SHARED_USERS)
    print("ready", flush=True)
    sys.stdin.readline()
    done, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        user = rng.choice(shared if rng.random() < SHARED_SHARE else own)
        for _ in range(calls):
            if not quota.reserve(user, rng.choice(UNITS), max_wait=5).granted:
                raise SystemExit("a reservation was refused: the budget is not far above the load")
            done += 1
    print(json.dumps({"reservations": done, "round_trips": round_trips[0]}), flush=True)


# --- The runs ------------------------------------------------------------------------------
def run(processes: int, env: dict[str, str], seconds: float) -> dict:
    from mailsync import quota

    quota.reset()
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", str(i), str(seconds)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    try:
        for w in workers:
            if w.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker did not start")
        for w in workers:  # all start together, each runs `seconds`
            w.stdin.write("go\n")
            w.stdin.flush()
        results = [json.loads(w.communicate(timeout=seconds + 60)[0]) for w in workers]
    finally:
        for w in workers:
            with contextlib.suppress(ProcessLookupError):
                w.kill()
    reservations = sum(r["reservations"] for r in results)
    return {
        "reservations_per_second": round(reservations / seconds),
        "round_trip_share": round(sum(r["round_trips"] for r in results) / reservations, 3),
    }


def main() -> int:
    args = parse_args()
    if args.worker:
        worker(int(args.worker[0]), float(args.worker[1]))
        return 0
    if not (args.database_url and args.redis_url):
        raise SystemExit("--database-url and --redis-url are required")
    from bench_sync import commit, fresh_database

    result: dict = {"seconds": args.seconds, "calls_per_user": args.calls_per_user}
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-quota-"))
        database_url, _ = stack.enter_context(fresh_database(args.database_url, Path(workdir)))
        for mode, redis_url in (("database", ""), ("redis", args.redis_url)):
            env = env_for(database_url, redis_url, args.calls_per_user)
            os.environ.clear()  # this process resets the store the workers use
            os.environ.update(env)
            import django
            from django.conf import settings
            from django.core.management import call_command

            django.setup()
            if mode == "database":
                call_command("migrate", verbosity=0, stdout=io.StringIO())
                result["database_engine"] = "postgresql"
            settings.REDIS_URL = redis_url
            from mailsync import quota

            quota.store.cache_clear()
            result[mode] = {str(n): run(n, env, args.seconds) for n in PROCESS_COUNTS}
            quota.reset()
    result["commit"] = commit()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
