"""CPU seconds of a benchmark's processes (bench_sync.py): the qcluster tree, the emulator,
PostgreSQL's backends serving the bench database, and the Redis server when the app uses
it."""

from __future__ import annotations

import contextlib
import subprocess

import psutil


class CpuMeter:
    """CPU seconds (user + system) of the qcluster tree and of the emulator, summed over
    every process seen, each counted from its last sample (a recycled worker keeps what
    it spent up to its last sample: at most one sampling interval short)."""

    def __init__(
        self,
        cluster: subprocess.Popen[str],
        emulator: subprocess.Popen[str],
        redis_server: bool = False,
    ):
        self.cluster, self.emulator = cluster, emulator
        # The machine's Redis server (the benches run on one machine): what the app
        # asks of it is the sync's CPU too.
        self.redis_pid = _redis_server_pid() if redis_server else None
        self.redis_start = self.redis_now = self._cpu(self.redis_pid) if self.redis_pid else 0.0
        self.seen: dict[int, float] = {}
        self.start: dict[int, float] = {}
        self.emulator_start = self.emulator_now = self._cpu(emulator.pid)
        self.sampled = False
        # PostgreSQL's backends serving the bench database (same machine): their CPU
        # is the sync's too. SQLite runs inside the workers.
        self.backends: dict[int, float] = {}
        self.backend_start: dict[int, float] = {}

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            return 0.0
        return times.user + times.system

    def sample(self) -> None:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.cluster.pid)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = process.cpu_times()
                    self.seen[process.pid] = times.user + times.system
                    # A process forked since the first sample spent all of its CPU here.
                    self.start.setdefault(
                        process.pid, self.seen[process.pid] if not self.sampled else 0.0
                    )
        self.emulator_now = self._cpu(self.emulator.pid) or self.emulator_now
        if self.redis_pid:
            self.redis_now = self._cpu(self.redis_pid) or self.redis_now
        self._sample_backends()
        self.sampled = True

    def _sample_backends(self) -> None:
        from django.db import connection

        if connection.vendor != "postgresql":
            return
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
            pids = [row[0] for row in cursor.fetchall()]
        for pid in pids:
            cpu = self._cpu(pid)
            if cpu:
                self.backends[pid] = cpu
                self.backend_start.setdefault(pid, cpu if not self.sampled else 0.0)

    def database_seconds(self) -> float:
        return sum(self.backends[pid] - self.backend_start[pid] for pid in self.backends)

    def cluster_seconds(self) -> float:
        return sum(self.seen[pid] - self.start[pid] for pid in self.seen)

    def emulator_seconds(self) -> float:
        return self.emulator_now - self.emulator_start

    def redis_seconds(self) -> float:
        return self.redis_now - self.redis_start


def _redis_server_pid() -> int | None:
    for process in psutil.process_iter(["name"]):
        if process.info["name"] == "redis-server":
            return process.pid
    return None
