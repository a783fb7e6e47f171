"""Which worker processes are alive, so work held by dead ones is resumed at once.

A chain of batch tasks holds a slot (and claims on messages) on a lease longer than
any task may run; a run's steps are held by the worker running them. When a whole
cluster is killed, those leases would block the work for minutes. With the Redis
broker, Django-Q2 keeps each live cluster's stats (host, worker pids) in Redis with
a 3-second expiry, refreshed twice a second: a holder that is in none of them is
dead, and the watchdog hands its work on without waiting for the lease to run out.
With the ORM broker the stats live in each process's own cache, so liveness is
unknown and only the time-based leases apply (the broker redelivers lost tasks).
"""

from __future__ import annotations

import logging
import os
import socket
from functools import cache

log = logging.getLogger(__name__)


@cache
def _host() -> str:
    return socket.gethostname()


def current_holder() -> str:
    """This process, as it appears in leases: "host:pid"."""
    return f"{_host()}:{os.getpid()}"


def live_holders() -> set[str] | None:
    """Every live Django-Q2 worker of every cluster ("host:pid"), or None when that
    cannot be known (the broker does not share cluster stats)."""
    from django_q.brokers import get_broker
    from django_q.status import Stat

    try:
        stats = Stat.get_all(get_broker())
    except Exception:  # the broker is down: assume nothing about anyone
        log.warning("cannot read the cluster stats", exc_info=True)
        return None
    live = {
        f"{stat.host}:{pid}"
        for stat in stats
        for pid in [*getattr(stat, "workers", []), stat.sentinel, stat.pid]
    }
    # Only trust the stats if they show this very worker (the watchdog runs in one).
    return live if current_holder() in live else None
