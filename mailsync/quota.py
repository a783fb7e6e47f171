"""Gmail's quota, shared by every worker on every machine: units per user and per
project in a moving window, and requests in flight per user.

Budget. Each key (one per user, one for the project) is paced by GCRA in a shared
store (mailsync/quota_stores.py). A process does not ask the store for every call: it
leases units in chunks and spends them locally while the lease is valid, so no row or
key is touched by every call (issue 11). A chunk starts at what the call needs and
grows while the process keeps spending on that key (x8 per lease, up to a ceiling).

Why no 60 s window goes over the limit. Leases are granted at a rate r; a lease's
units are spent within `valid_s` of its grant; the largest lease is `chunk`. Then any
window W of sends holds at most r * (W + valid_s + skew) + chunk units, so the
ceiling is (1 - chunk / limit) * W / (W + valid_s + skew) of the budget: 0.988 for a
user at Gmail's 15,000 units/min with 25-part batches of messages.get.

Adaptive pace (issue 13). A user's key starts at that ceiling. A 429 pauses it for
Retry-After and multiplies its pace by CUT_FACTOR (once per CUT_HOLD of a window: the
window holds the past, so the 429s that follow a cut are not news); each unit leased
then adds INCREASE_PER_WINDOW / limit back (additive increase), up to the ceiling.
The pace lives in the store, so every worker of the user shares it.

Concurrency (issues 13, 15). Every request holds one permit per part while it is in
flight (`acquire_permits`); a user never has more than MAILSYNC_CONCURRENT_REQUESTS_PER_USER.
A permit expires after PERMIT_TTL_S, so a killed holder's permits come back.

The state lives in Redis when REDIS_URL is set, in the database otherwise.
"""

from __future__ import annotations

import os
import random
import threading
import time
import uuid
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import NamedTuple

from django.conf import settings

from .quota_stores import Cut, DatabaseStore, Pace, RedisStore

PROJECT_KEY = "project"

SKEW_S = 0.1  # send-to-arrival jitter and clock difference between machines
USER_LEASE_S = 0.1  # a user lease's units are spent within this of its grant
PROJECT_LEASE_S = 1.0
PROJECT_CHUNK_SHARE = 0.005  # largest project lease: this share of the project's limit
GROWTH = 8  # a lease used up while still valid: the next one is this many times larger
MIN_CAP = 0.5  # for budgets so small that a batch is a big share of them
TURN_EARLY_S = 0.02  # ask again this long before the user's turn

INCREASE_PER_WINDOW = 0.1  # pace regained per window's worth of units spent
CUT_FACTOR = 0.7
CUT_HOLD = 1 / 6  # of a window
FLOOR = 0.05

# Longer than any one HTTP request (gmail.HTTP_TIMEOUT_S is 30 s).
PERMIT_TTL_S = 60.0
# First and longest wait between tries for permits: a request in flight takes tens of
# milliseconds to seconds; a try is one store round trip.
PERMIT_POLL_S = (0.005, 0.05)

# Gmail API cost of each call in quota units (shared/reference/gmail-api.md).
COSTS = {
    "users.getProfile": 1,
    "users.labels.list": 1,
    "users.labels.get": 1,
    "users.messages.list": 5,
    "users.messages.get": 5,
    "users.threads.get": 10,
    "users.messages.attachments.get": 5,
    "users.history.list": 2,
    "users.watch": 100,
    "users.stop": 50,
}
# Methods sent as batch parts: a request holds at most concurrency_limit() of them.
BATCHED_METHODS = ("users.messages.get", "users.threads.get", "users.labels.get")


class Reservation(NamedTuple):
    granted: bool
    wait_s: float  # granted: how long it waited; refused: how long it would have to


class PermitsBusy(Exception):
    """The user has the most requests in flight that Gmail accepts, for longer than
    the caller may wait."""

    def __init__(self, wait_s: float):
        super().__init__(f"{concurrency_limit()} Gmail requests in flight for this user")
        self.wait_s = wait_s


# --- Limits from the settings -------------------------------------------------------------------
def concurrency_limit() -> int:
    """Gmail requests (batch parts) a user may have in flight, across every worker."""
    return settings.MAILSYNC_CONCURRENT_REQUESTS_PER_USER


def request_parts(parts: int) -> int:
    """Parts per request when a batch of `parts` is sent: at most half the user's
    permits (rounded down), in requests of even size. Two of the user's requests are
    then in flight at once (two workers' batches), where a request of every permit
    made each worker wait for the other's to come back (issue 13). Rounded up, 25
    permits gave requests of 13, and two of them did not fit: one at a time."""
    half = max(1, concurrency_limit() // 2)
    requests = -(-parts // half)
    return max(1, -(-parts // max(1, requests)))


def largest_reservation() -> int:
    """The most units one request reserves: a batch of concurrency_limit() parts, or
    the dearest single call. The budget's ceiling leaves room for one of these."""
    return _policies().largest


def ceiling(limit: int, chunk: int, valid_s: float, window: float) -> float:
    """The highest share of `limit` a key may be leased at so that no window holds
    more than `limit` (module docstring)."""
    return max(MIN_CAP, (1 - chunk / limit) * window / (window + valid_s + SKEW_S))


def user_ceiling() -> float:
    """The highest pace of a user, as a share of the budget: where every user starts."""
    return _policies().user.pace.cap


@dataclass(frozen=True)
class _Policy:
    pace: Pace
    valid_s: float
    max_chunk: int


@dataclass(frozen=True)
class _Policies:
    user: _Policy
    project: _Policy
    largest: int
    cut: Cut


def _policies() -> _Policies:
    return _policies_for(
        settings.MAILSYNC_QUOTA_USER_PER_MINUTE,
        settings.MAILSYNC_QUOTA_PROJECT_PER_MINUTE,
        settings.MAILSYNC_QUOTA_WINDOW_SECONDS,
        settings.MAILSYNC_CONCURRENT_REQUESTS_PER_USER,
    )


@lru_cache(maxsize=16)  # computed once per settings, not on every call
def _policies_for(
    user_limit: int, project_limit: int, window: float, concurrency: int
) -> _Policies:
    largest = max(concurrency * max(COSTS[m] for m in BATCHED_METHODS), *COSTS.values())
    user = Pace(
        seconds_per_unit=window / user_limit,
        cap=ceiling(user_limit, largest, USER_LEASE_S, window),
        increase=INCREASE_PER_WINDOW / user_limit,
    )
    project_chunk = max(largest, int(project_limit * PROJECT_CHUNK_SHARE))
    project = Pace(
        seconds_per_unit=window / project_limit,
        cap=ceiling(project_limit, project_chunk, PROJECT_LEASE_S, window),
    )
    return _Policies(
        user=_Policy(user, USER_LEASE_S, largest),
        project=_Policy(project, PROJECT_LEASE_S, project_chunk),
        largest=largest,
        cut=Cut(CUT_FACTOR, FLOOR, window * CUT_HOLD),
    )


def user_key(user_id: int) -> str:
    return f"user:{user_id}"


@cache
def store() -> DatabaseStore | RedisStore:
    if settings.REDIS_URL:
        return RedisStore(settings.REDIS_URL)
    return DatabaseStore()


# --- This process's leases ------------------------------------------------------------------------
@dataclass
class _Lease:
    left: int
    start: float  # time.monotonic() from which its units may be spent
    end: float  # ... and until which
    size: int


class _Slot(NamedTuple):  # made twice per call: a tuple is cheaper than a frozen dataclass
    granted: bool
    at: float = 0.0  # monotonic time the units may be spent
    until: float = 0.0  # ... at the latest
    wait_s: float = 0.0  # refused: how long until asking would help


class _Leases:
    """Leases by key, forgotten in a forked child (its parent may spend them too)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid = os.getpid()
        self.by_key: dict[str, _Lease] = {}

    def mine(self) -> dict[str, _Lease]:
        if self.pid != os.getpid():
            self.pid, self.by_key = os.getpid(), {}
        return self.by_key


_leases = _Leases()


def _chunk(units: int, previous: _Lease | None, now: float, largest: int) -> int:
    """Lease what this call needs, or more while the process keeps spending on the key
    (the previous lease ran out while still valid): unspent units are lost when a lease
    ends, so a call that comes alone leases only its own."""
    if previous is not None and now <= previous.end:
        return min(largest, GROWTH * max(units, previous.size))
    return units


def _take(key: str, units: int, policy: _Policy, latest: float) -> _Slot:
    """`units` of `key`'s budget, spendable from a moment no later than `latest`."""
    now = time.monotonic()
    with _leases.lock:
        lease = _leases.mine().get(key)
        if lease and lease.left >= units and max(now, lease.start) <= lease.end:
            if lease.start > latest:
                return _Slot(False, wait_s=lease.start - now)
            lease.left -= units
            return _Slot(True, max(now, lease.start), lease.end)
        size = _chunk(units, lease, now, policy.max_chunk)
    grant = store().lease(key, size, time.time(), max(latest - now, 0.0), policy.pace)
    if not grant.granted:
        return _Slot(False, wait_s=grant.wait_s)
    start = now + grant.wait_s
    with _leases.lock:
        _leases.mine()[key] = _Lease(size - units, start, start + policy.valid_s, size)
    return _Slot(True, start, start + policy.valid_s)


def _give_back(key: str, units: int, slot: _Slot) -> None:
    """Units taken but not sent go back to this process's lease (still within its life)."""
    with _leases.lock:
        lease = _leases.mine().get(key)
        if lease is not None and lease.end == slot.until:
            lease.left += units


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


# --- The interface ----------------------------------------------------------------------------------
def reserve(user_id: int, units: int, max_wait: float) -> Reservation:
    """Take `units` from the project's and the user's budgets, sleeping until they may
    be spent: granted, send at once. Refused: it would take more than `max_wait`.

    A send needs both budgets' units within their leases' lives. The project's comes
    first (usually this process's lease has some); then the user's, which must start
    before the project's lease ends. If the user's turn comes later, the project's
    units go back to the lease and we sleep until just before that turn.
    """
    policies = _policies()
    if units > policies.largest:
        raise ValueError(
            f"{units} units in one request; at most {policies.largest} "
            "(add the method to quota.BATCHED_METHODS if it is sent in batches)"
        )
    started = time.monotonic()
    deadline = started + max_wait
    key = user_key(user_id)
    while True:
        project = _take(PROJECT_KEY, units, policies.project, deadline)
        if not project.granted:
            return Reservation(False, project.wait_s)
        _sleep_until(project.at)
        user = _take(key, units, policies.user, min(deadline, project.until))
        if user.granted:
            _sleep_until(user.at)
            return Reservation(True, time.monotonic() - started)
        _give_back(PROJECT_KEY, units, project)
        turn = time.monotonic() + user.wait_s
        if turn > deadline:
            return Reservation(False, user.wait_s)
        # Ask again just before the user's turn, so that it is not lost while we wake.
        _sleep_until(turn - min(TURN_EARLY_S, user.wait_s / 2))


def penalize(user_id: int, retry_after: float) -> None:
    """Gmail said 429: nothing for this user for `retry_after` s, and a slower pace."""
    key = user_key(user_id)
    with _leases.lock:
        _leases.mine().pop(key, None)
    policies = _policies()
    store().penalize(key, retry_after, time.time(), policies.user.pace, policies.cut)


def pace(user_id: int) -> float:
    """The user's pace now, as a share of the budget."""
    return store().pace(user_key(user_id), user_ceiling())


@dataclass(frozen=True)
class Permits:
    key: str
    holder: str


def acquire_permits(
    user_id: int, parts: int, max_wait: float, ttl_s: float = PERMIT_TTL_S
) -> Permits:
    """Take one permit per part of a request about to be sent (one store round trip
    when there is room); give them back with release_permits. Raises PermitsBusy if
    the user's requests in flight leave no room within `max_wait`."""
    limit = concurrency_limit()
    if not 0 < parts <= limit:
        raise ValueError(f"{parts} parts in one request; at most {limit}")
    permits = Permits(user_key(user_id), uuid.uuid4().hex)
    deadline = time.monotonic() + max_wait
    delay = PERMIT_POLL_S[0]
    while not store().acquire_permits(
        permits.key, permits.holder, parts, limit, time.time(), time.time() + ttl_s
    ):
        if time.monotonic() + delay > deadline:
            raise PermitsBusy(delay)
        time.sleep(random.uniform(delay / 2, delay))
        delay = min(PERMIT_POLL_S[1], delay * 1.5)
    return permits


def release_permits(permits: Permits) -> None:
    store().release_permits(permits.key, permits.holder)


def reset() -> None:
    """Forget all quota state: the store's and this process's leases."""
    with _leases.lock:
        _leases.mine().clear()
    store().reset()
