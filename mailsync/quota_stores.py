"""Where the shared quota state lives: the database (QuotaBucket rows) or Redis.

Each store offers the same few atomic operations, each one round trip touching one
key (so no key is hot for the whole project, and Redis Cluster can place keys freely):

- `lease`: take `units` from a key's budget (GCRA: one "theoretical arrival time" per
  key, moved forward by units x seconds per unit at the key's pace). Granted now or
  after a wait; refused, costing nothing, if the wait would exceed `max_wait`. Every
  grant also raises the key's pace a little (additive increase, up to its ceiling).
- `penalize`: Gmail said 429: pause the key, and cut its pace (multiplicative
  decrease) unless it was cut moments ago.
- `acquire_permits` / `release_permits`: a request holds one permit per part while it
  is in flight; a key never has more than `limit`. A permit expires at `expires_at`,
  so a killed holder's permits come back.

Times are epoch seconds given by the caller; machines keep their clocks in step (NTP)
and quota.SKEW_S leaves room for what they differ by.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection, transaction

from .models import QuotaBucket, QuotaPermit

STATE_TTL_S = 3600  # Redis forgets an idle key's pace after an hour


@dataclass(frozen=True)
class Pace:
    """How fast a key may go."""

    seconds_per_unit: float  # at 100 % of the budget: window / limit
    cap: float  # the highest fraction of the budget it may run at
    increase: float = 0.0  # fraction of the budget added per unit leased


@dataclass(frozen=True)
class Cut:
    """What a 429 does to a key's pace."""

    factor: float  # multiply the pace by this
    floor: float  # never below this fraction of the budget
    hold_s: float  # and not again for this long


@dataclass(frozen=True)
class Grant:
    granted: bool
    wait_s: float  # from `now` until the units may be spent (or, refused, until asking helps)


# --- Database --------------------------------------------------------------------------------
BUCKETS = QuotaBucket._meta.db_table
PERMITS = QuotaPermit._meta.db_table


# The pace a row runs at: its factor, or the ceiling when unset (0) or above it; when a
# lease would start; whether it is granted.
_FRAGMENTS = {
    "factor": "(CASE WHEN {t}.factor > 0 AND {t}.factor < %(cap)s THEN {t}.factor ELSE %(cap)s END)",
    "start": "{greatest}({t}.tat, %(now)s)",
    "granted": "{greatest}({t}.tat, %(now)s) - %(now)s <= %(max_wait)s",
}


def _sql(template: str) -> str:
    """Fill in the table names and fragments; GREATEST/LEAST are MAX/MIN in SQLite."""
    names = {"t": BUCKETS, "p": PERMITS, "greatest": "GREATEST", "least": "LEAST"}
    if connection.vendor != "postgresql":
        names.update(greatest="MAX", least="MIN")
    fragments = {name: text.format(**names) for name, text in _FRAGMENTS.items()}
    return template.format(**names, **fragments)


# One statement: create the row or update it; every SET reads the row as it was.
_LEASE_SQL = """
INSERT INTO {t} (key, tat, factor, cut_until, last_wait, in_flight)
VALUES (%(key)s, %(now)s + %(units)s * %(seconds_per_unit)s / %(cap)s,
        {least}(%(cap)s, %(cap)s + %(increase)s * %(units)s), 0, 0, 0)
ON CONFLICT (key) DO UPDATE SET
    last_wait = {start} - %(now)s,
    tat = CASE WHEN {granted}
          THEN {start} + %(units)s * %(seconds_per_unit)s / {factor} ELSE {t}.tat END,
    factor = CASE WHEN {granted}
             THEN {least}(%(cap)s, {factor} + %(increase)s * %(units)s) ELSE {factor} END
RETURNING last_wait
"""

_PENALIZE_SQL = """
INSERT INTO {t} (key, tat, factor, cut_until, last_wait, in_flight)
VALUES (%(key)s, %(now)s + %(pause)s, {greatest}(%(floor)s, %(cap)s * %(cut)s),
        %(now)s + %(hold)s, 0, 0)
ON CONFLICT (key) DO UPDATE SET
    tat = {greatest}({t}.tat, %(now)s + %(pause)s),
    factor = CASE WHEN {t}.cut_until <= %(now)s
             THEN {greatest}(%(floor)s, {factor} * %(cut)s) ELSE {factor} END,
    cut_until = CASE WHEN {t}.cut_until <= %(now)s THEN %(now)s + %(hold)s ELSE {t}.cut_until END
"""

# Count the parts in flight on the user's row, if they fit (RETURNING nothing if not).
_COUNT_IN_SQL = """
INSERT INTO {t} (key, tat, factor, cut_until, last_wait, in_flight)
VALUES (%(key)s, 0, 0, 0, 0, %(parts)s)
ON CONFLICT (key) DO UPDATE SET in_flight = {t}.in_flight + %(parts)s
WHERE {t}.in_flight + %(parts)s <= %(limit)s
RETURNING key
"""
_HOLD_SQL = """
INSERT INTO {p} (holder, key, parts, expires_at)
VALUES (%(holder)s, %(key)s, %(parts)s, %(expires_at)s)
"""
_DROP_HOLDER_SQL = "DELETE FROM {p} WHERE holder = %(holder)s RETURNING key, parts"
_DROP_EXPIRED_SQL = "DELETE FROM {p} WHERE key = %(key)s AND expires_at < %(now)s RETURNING parts"
_COUNT_OUT_SQL = "UPDATE {t} SET in_flight = in_flight - %(parts)s WHERE key = %(key)s"

# PostgreSQL does each pair above in one statement (data-modifying CTEs: one round trip).
_PG_ACQUIRE_SQL = """
WITH counted AS (COUNT_IN)
INSERT INTO {p} (holder, key, parts, expires_at)
SELECT %(holder)s, key, %(parts)s, %(expires_at)s FROM counted
RETURNING holder
"""
_PG_RELEASE_SQL = """
WITH gone AS (DROP_HOLDER)
UPDATE {t} SET in_flight = {t}.in_flight - gone.parts FROM gone WHERE {t}.key = gone.key
"""
_PG_RECLAIM_SQL = """
WITH gone AS (DROP_EXPIRED)
UPDATE {t} SET in_flight = {t}.in_flight - (SELECT SUM(parts) FROM gone)
WHERE key = %(key)s AND EXISTS (SELECT 1 FROM gone)
"""


class DatabaseStore:
    """The state in QuotaBucket and QuotaPermit rows, each operation one statement on
    PostgreSQL (row locks make it atomic), a short IMMEDIATE transaction on SQLite."""

    def lease(self, key: str, units: int, now: float, max_wait: float, pace: Pace) -> Grant:
        params = {
            "key": key,
            "units": units,
            "now": now,
            "max_wait": max_wait,
            "seconds_per_unit": pace.seconds_per_unit,
            "cap": pace.cap,
            "increase": pace.increase,
        }
        with connection.cursor() as cursor:
            cursor.execute(_sql(_LEASE_SQL), params)
            (wait,) = cursor.fetchone()
        return Grant(wait <= max_wait, max(wait, 0.0))

    def penalize(self, key: str, pause_s: float, now: float, pace: Pace, cut: Cut) -> None:
        params = {
            "key": key,
            "now": now,
            "pause": pause_s,
            "cap": pace.cap,
            "cut": cut.factor,
            "floor": cut.floor,
            "hold": cut.hold_s,
        }
        with connection.cursor() as cursor:
            cursor.execute(_sql(_PENALIZE_SQL), params)

    def pace(self, key: str, cap: float) -> float:
        factor = QuotaBucket.objects.filter(key=key).values_list("factor", flat=True).first()
        return factor if factor and factor < cap else cap

    def acquire_permits(
        self, key: str, holder: str, parts: int, limit: int, now: float, expires_at: float
    ) -> bool:
        params = {
            "key": key,
            "holder": holder,
            "parts": parts,
            "limit": limit,
            "expires_at": expires_at,
        }
        # A read first: on SQLite a failed attempt would still have waited for the
        # database's write lock, and the waiters' polls held it from the others
        # (most of a CPU-bound sync's wait for permits, issue 13).
        if self.in_flight(key) + parts <= limit and self._count_in(params):
            return True
        # Full: permits of dead holders may be what fills it (looked for with a read:
        # on SQLite a write would queue behind every writer).
        dead = QuotaPermit.objects.filter(key=key, expires_at__lt=now)
        return dead.exists() and self._reclaim(key, now) and self._count_in(params)

    def release_permits(self, key: str, holder: str) -> None:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(
                    _sql(_PG_RELEASE_SQL.replace("DROP_HOLDER", _DROP_HOLDER_SQL)),
                    {"holder": holder},
                )
                return
            with transaction.atomic():
                cursor.execute(_sql(_DROP_HOLDER_SQL), {"holder": holder})
                for key, parts in cursor.fetchall():
                    cursor.execute(_sql(_COUNT_OUT_SQL), {"key": key, "parts": parts})

    def in_flight(self, key: str) -> int:
        return QuotaBucket.objects.filter(key=key).values_list("in_flight", flat=True).first() or 0

    def _count_in(self, params: dict) -> bool:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(_sql(_PG_ACQUIRE_SQL.replace("COUNT_IN", _COUNT_IN_SQL)), params)
                return cursor.fetchone() is not None
            with transaction.atomic():
                cursor.execute(_sql(_COUNT_IN_SQL), params)
                if cursor.fetchone() is None:
                    return False
                cursor.execute(_sql(_HOLD_SQL), params)
                return True

    def _reclaim(self, key: str, now: float) -> bool:
        """Give back the permits of holders that expired; True if there were any."""
        params = {"key": key, "now": now}
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute(
                    _sql(_PG_RECLAIM_SQL.replace("DROP_EXPIRED", _DROP_EXPIRED_SQL)), params
                )
                return cursor.rowcount > 0
            with transaction.atomic():
                cursor.execute(_sql(_DROP_EXPIRED_SQL), params)
                parts = sum(row[0] for row in cursor.fetchall())
                if parts:
                    cursor.execute(_sql(_COUNT_OUT_SQL), {"key": key, "parts": parts})
                return parts > 0

    def reset(self) -> None:
        QuotaPermit.objects.all().delete()
        QuotaBucket.objects.all().delete()


# --- Redis -------------------------------------------------------------------------------------
_LEASE_LUA = """
local now, units, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local seconds_per_unit, cap, increase = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local state = redis.call('HMGET', KEYS[1], 'tat', 'factor')
local tat, factor = tonumber(state[1] or '0'), tonumber(state[2] or '0')
if factor <= 0 or factor > cap then factor = cap end
local start = math.max(tat, now)
local wait = start - now
if wait > max_wait then return {0, string.format('%.17g', wait)} end
redis.call('HSET', KEYS[1],
  'tat', string.format('%.17g', start + units * seconds_per_unit / factor),
  'factor', string.format('%.17g', math.min(cap, factor + increase * units)))
redis.call('EXPIRE', KEYS[1], ARGV[7])
return {1, string.format('%.17g', wait)}
"""

_PENALIZE_LUA = """
local now, pause, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local cut, floor, hold = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local state = redis.call('HMGET', KEYS[1], 'tat', 'factor', 'cut_until')
local tat, factor = tonumber(state[1] or '0'), tonumber(state[2] or '0')
local cut_until = tonumber(state[3] or '0')
if factor <= 0 or factor > cap then factor = cap end
if cut_until <= now then
  factor = math.max(floor, factor * cut)
  cut_until = now + hold
end
redis.call('HSET', KEYS[1], 'tat', string.format('%.17g', math.max(tat, now + pause)),
  'factor', string.format('%.17g', factor), 'cut_until', string.format('%.17g', cut_until))
redis.call('EXPIRE', KEYS[1], ARGV[7])
return 1
"""

# One hash per user: holder -> "parts expires_at". Expired holders are dropped first.
_ACQUIRE_LUA = """
local now, parts, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local held = 0
local entries = redis.call('HGETALL', KEYS[1])
for i = 1, #entries, 2 do
  local n, expires_at = string.match(entries[i + 1], '(%S+) (%S+)')
  if tonumber(expires_at) < now then
    redis.call('HDEL', KEYS[1], entries[i])
  else
    held = held + tonumber(n)
  end
end
if held + parts > limit then return 0 end
redis.call('HSET', KEYS[1], ARGV[4], ARGV[2] .. ' ' .. ARGV[5])
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[5]) - now) * 1000) + 1000)
return 1
"""


class RedisStore:
    """The same state in Redis hashes, each operation one Lua script on one key."""

    prefix = "mailsync:quota:"

    def __init__(self, url: str):
        import redis

        self.client = redis.Redis.from_url(url)
        self._no_script = redis.exceptions.NoScriptError
        self._lease = self.client.register_script(_LEASE_LUA)
        self._penalize = self.client.register_script(_PENALIZE_LUA)
        self._acquire = self.client.register_script(_ACQUIRE_LUA)

    def _run(self, script, key: str, *args):
        """EVALSHA straight from the client: redis-py's Script wrapper costs a third of
        a lease's CPU (58 against 81 µs here)."""
        try:
            return self.client.evalsha(script.sha, 1, self.prefix + key, *args)
        except self._no_script:  # a restarted Redis forgot it
            return script(keys=[self.prefix + key], args=args)

    def lease(self, key: str, units: int, now: float, max_wait: float, pace: Pace) -> Grant:
        granted, wait = self._run(
            self._lease,
            key,
            now,
            units,
            max_wait,
            pace.seconds_per_unit,
            pace.cap,
            pace.increase,
            STATE_TTL_S,
        )
        return Grant(bool(granted), max(float(wait), 0.0))

    def penalize(self, key: str, pause_s: float, now: float, pace: Pace, cut: Cut) -> None:
        args = (now, pause_s, pace.cap, cut.factor, cut.floor, cut.hold_s, STATE_TTL_S)
        self._run(self._penalize, key, *args)

    def pace(self, key: str, cap: float) -> float:
        factor = float(self.client.hget(self.prefix + key, "factor") or 0)
        return factor if 0 < factor < cap else cap

    def acquire_permits(
        self, key: str, holder: str, parts: int, limit: int, now: float, expires_at: float
    ) -> bool:
        return bool(
            self._run(self._acquire, "permits:" + key, now, parts, limit, holder, expires_at)
        )

    def release_permits(self, key: str, holder: str) -> None:
        self.client.hdel(self.prefix + "permits:" + key, holder)

    def in_flight(self, key: str) -> int:
        values = self.client.hvals(self.prefix + "permits:" + key)
        return sum(int(value.split()[0]) for value in values)

    def reset(self) -> None:
        for key in self.client.scan_iter(self.prefix + "*"):
            self.client.delete(key)
