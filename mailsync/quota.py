"""One Gmail quota budget per user, and one per project, shared by every worker.

Each call reserves its cost in quota units before it is sent. The budget is a
GCRA (generic cell rate algorithm) state: one number per key, the "theoretical
arrival time" when everything reserved so far will have been paid for. A
reservation moves it forward by units x interval and tells the caller how long
to wait before sending, so concurrent workers queue up behind each other instead
of all firing and collecting 429s.

Gmail counts units in a moving 60 s window. To stay under it without 429s the
rate is (limit - largest reservation) / (60 s + burst + skew): about 94% of the
ceiling with the default budget and batches of 50.

The state lives where every worker sees it: Redis when REDIS_URL is set, the
database otherwise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.db import transaction

from .models import QuotaBucket

WINDOW_S = 60.0
BURST_S = 1.0  # how far ahead of the rate a reservation may start
SKEW_S = 2.0  # reservation-to-arrival delays between our clock and Gmail's window
PENALTY_S = 120.0  # after a 429 the key runs at half rate this long
PROJECT_KEY = "project"

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


@dataclass(frozen=True)
class Reservation:
    granted: bool
    wait_s: float  # sleep this long before sending (granted) or before asking again


def _largest_reservation() -> int:
    return settings.MAILSYNC_BATCH_SIZE * COSTS["users.messages.get"]


def seconds_per_unit(units_per_minute: int) -> float:
    usable = max(units_per_minute - _largest_reservation(), units_per_minute * 0.5)
    return (WINDOW_S + BURST_S + SKEW_S) / usable


def user_key(user_id: int) -> str:
    return f"user:{user_id}"


def _ensure_buckets(keys: list[str]) -> None:
    # One INSERT ... ON CONFLICT DO NOTHING: this runs before every Gmail call.
    QuotaBucket.objects.bulk_create([QuotaBucket(key=key) for key in keys], ignore_conflicts=True)


class DatabaseStore:
    """GCRA state in QuotaBucket rows, updated under a row lock."""

    def reserve(self, limits: dict[str, float], units: int, now: float, max_wait: float):
        keys = sorted(limits)
        _ensure_buckets(keys)
        with transaction.atomic():
            buckets = {
                b.key: b for b in QuotaBucket.objects.select_for_update().filter(key__in=keys)
            }
            wait = max(buckets[k].tat - BURST_S - now for k in keys)
            wait = max(wait, 0.0)
            if wait > max_wait:
                return Reservation(False, wait)
            for key in keys:
                bucket = buckets[key]
                interval = limits[key] * (2 if bucket.slow_until > now else 1)
                bucket.tat = max(bucket.tat, now) + units * interval
                bucket.save(update_fields=["tat"])
            return Reservation(True, wait)

    def penalize(self, key: str, retry_after: float, now: float) -> None:
        _ensure_buckets([key])
        with transaction.atomic():
            bucket = QuotaBucket.objects.select_for_update().get(key=key)
            bucket.tat = max(bucket.tat, now + retry_after)
            bucket.slow_until = now + PENALTY_S
            bucket.save(update_fields=["tat", "slow_until"])

    def reset(self) -> None:
        QuotaBucket.objects.all().delete()


_RESERVE_LUA = """
local now = tonumber(ARGV[1])
local units = tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local wait = 0
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('HGET', key, 'tat') or '0')
  local w = tat - burst - now
  if w > wait then wait = w end
end
if wait > max_wait then return {0, tostring(wait)} end
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('HGET', key, 'tat') or '0')
  local slow_until = tonumber(redis.call('HGET', key, 'slow_until') or '0')
  local interval = tonumber(ARGV[4 + i])
  if slow_until > now then interval = interval * 2 end
  if now > tat then tat = now end
  redis.call('HSET', key, 'tat', tostring(tat + units * interval))
  redis.call('EXPIRE', key, 3600)
end
return {1, tostring(wait)}
"""

_PENALIZE_LUA = """
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('HGET', KEYS[1], 'tat') or '0')
local until_ = now + tonumber(ARGV[2])
if until_ > tat then tat = until_ end
redis.call('HSET', KEYS[1], 'tat', tostring(tat), 'slow_until', tostring(now + tonumber(ARGV[3])))
redis.call('EXPIRE', KEYS[1], 3600)
return 1
"""


class RedisStore:
    """The same GCRA state in Redis hashes, updated atomically by Lua scripts."""

    prefix = "mailsync:quota:"

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)
        self._reserve = self.client.register_script(_RESERVE_LUA)
        self._penalize = self.client.register_script(_PENALIZE_LUA)

    def reserve(self, limits: dict[str, float], units: int, now: float, max_wait: float):
        keys = sorted(limits)
        granted, wait = self._reserve(
            keys=[self.prefix + k for k in keys],
            args=[now, units, max_wait, BURST_S, *(limits[k] for k in keys)],
        )
        return Reservation(bool(granted), max(float(wait), 0.0))

    def penalize(self, key: str, retry_after: float, now: float) -> None:
        self._penalize(keys=[self.prefix + key], args=[now, retry_after, PENALTY_S])

    def reset(self) -> None:
        for key in self.client.scan_iter(self.prefix + "*"):
            self.client.delete(key)


@cache
def store() -> DatabaseStore | RedisStore:
    if settings.REDIS_URL:
        return RedisStore(settings.REDIS_URL)
    return DatabaseStore()


def reserve(user_id: int, units: int, max_wait: float) -> Reservation:
    """Reserve `units` from the user's and the project's budgets.

    Granted: the caller must sleep `wait_s` and then send. Not granted: the wait
    would exceed `max_wait`; nothing was reserved.
    """
    limits = {
        user_key(user_id): seconds_per_unit(settings.MAILSYNC_QUOTA_USER_PER_MINUTE),
        PROJECT_KEY: seconds_per_unit(settings.MAILSYNC_QUOTA_PROJECT_PER_MINUTE),
    }
    return store().reserve(limits, units, time.time(), max_wait)


def penalize(user_id: int, retry_after: float) -> None:
    """Gmail said 429: nothing more for `retry_after` s, then half rate for a while."""
    store().penalize(user_key(user_id), retry_after, time.time())
