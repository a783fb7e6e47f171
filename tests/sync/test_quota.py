"""The shared quota state: leases, adaptive pace and permits, in the database and in Redis."""

from __future__ import annotations

import pytest
from django.conf import settings

from mailsync import quota
from mailsync.quota_stores import Cut, DatabaseStore, Pace, RedisStore
from tests.cluster import redis_test_url

pytestmark = pytest.mark.django_db

PACE = Pace(seconds_per_unit=60 / 15_000, cap=0.98, increase=0.1 / 15_000)
CUT = Cut(factor=0.7, floor=0.05, hold_s=10)


@pytest.fixture(params=["database", "redis"])
def store(request):
    if request.param == "database":
        yield DatabaseStore()
        return
    redis_store = RedisStore(redis_test_url(1))
    redis_store.reset()
    yield redis_store
    redis_store.reset()


def test_leases_queue_up_at_the_pace(store):
    now = 1000.0
    per_unit = PACE.seconds_per_unit / PACE.cap
    first = store.lease("user:1", 125, now, max_wait=30, pace=PACE)
    second = store.lease("user:1", 125, now, max_wait=30, pace=PACE)
    third = store.lease("user:1", 125, now + 0.1, max_wait=30, pace=PACE)
    assert first.granted
    assert first.wait_s == 0
    assert second.wait_s == pytest.approx(125 * per_unit)
    # Each grant raised the pace a little (additive increase), up to the ceiling.
    assert third.wait_s == pytest.approx(250 * per_unit - 0.1, rel=1e-3)
    assert store.pace("user:1", PACE.cap) == PACE.cap


def test_a_lease_that_would_wait_too_long_is_refused_and_costs_nothing(store):
    now = 1000.0
    for _ in range(10):
        store.lease("user:1", 125, now, max_wait=1000, pace=PACE)
    refused = store.lease("user:1", 125, now, max_wait=5, pace=PACE)
    assert not refused.granted
    after = store.lease("user:1", 125, now, max_wait=1000, pace=PACE)
    assert after.granted
    assert after.wait_s == pytest.approx(refused.wait_s)


def test_a_429_pauses_and_cuts_the_pace_once_per_hold(store):
    now = 1000.0
    store.lease("user:1", 5, now, max_wait=60, pace=PACE)
    store.penalize("user:1", 10, now, PACE, CUT)
    assert store.pace("user:1", PACE.cap) == pytest.approx(PACE.cap * 0.7)
    paused = store.lease("user:1", 5, now, max_wait=60, pace=PACE)
    assert paused.wait_s == pytest.approx(10)
    # The 429s that follow within the hold are the same overrun: no second cut.
    store.penalize("user:1", 10, now + 1, PACE, CUT)
    assert store.pace("user:1", PACE.cap) == pytest.approx(PACE.cap * 0.7, rel=1e-3)
    store.penalize("user:1", 1, now + 11, PACE, CUT)
    assert store.pace("user:1", PACE.cap) == pytest.approx(PACE.cap * 0.49, rel=1e-3)


def test_the_pace_comes_back_additively_after_a_cut(store):
    now = 1000.0
    store.penalize("user:1", 0, now, PACE, CUT)
    cut = store.pace("user:1", PACE.cap)
    for _ in range(10):  # 1,250 units: 1/12 of the window's budget
        store.lease("user:1", 125, now + 100, max_wait=1000, pace=PACE)
    assert store.pace("user:1", PACE.cap) == pytest.approx(cut + 0.1 * 1250 / 15_000)
    # A slower pace spaces the leases further apart.
    slow = store.lease("user:2", 125, now, max_wait=1000, pace=PACE)
    store.penalize("user:2", 0, now, PACE, CUT)
    store.lease("user:2", 125, now, max_wait=1000, pace=PACE)
    after = store.lease("user:2", 125, now, max_wait=1000, pace=PACE)
    assert slow.wait_s == 0
    assert after.wait_s == pytest.approx(
        125 * PACE.seconds_per_unit / PACE.cap + 125 * PACE.seconds_per_unit / (PACE.cap * 0.7)
    )


def test_permits_bound_the_parts_in_flight_and_come_back(store):
    now = 1000.0
    assert store.acquire_permits("user:1", "a", 20, 25, now, now + 60)
    assert not store.acquire_permits("user:1", "b", 6, 25, now, now + 60)
    assert store.acquire_permits("user:1", "c", 5, 25, now, now + 60)
    assert store.in_flight("user:1") == 25
    assert store.acquire_permits("user:2", "d", 25, 25, now, now + 60)  # each user its own
    store.release_permits("user:1", "a")
    assert store.in_flight("user:1") == 5
    assert store.acquire_permits("user:1", "b", 20, 25, now, now + 5)
    # A holder that never releases (killed): its permits come back when they expire.
    assert not store.acquire_permits("user:1", "e", 1, 25, now + 4, now + 64)
    assert store.acquire_permits("user:1", "e", 20, 25, now + 6, now + 66)
    assert store.in_flight("user:1") == 25
    store.release_permits("user:1", "b")  # expired and reclaimed already: nothing twice
    assert store.in_flight("user:1") == 25


def test_the_user_budget_starts_at_98_percent_or_more():
    """Gmail's 15,000 units/min, 60 s window, 25 parts in flight (the defaults)."""
    assert settings.MAILSYNC_QUOTA_WINDOW_SECONDS == 60
    assert quota.largest_reservation() == 250  # 25 parts of threads.get (10 units each)
    assert quota.user_ceiling() >= 0.98


def test_a_call_alone_leases_its_own_units_and_steady_demand_leases_ahead(settings):
    settings.REDIS_URL = ""
    quota.store.cache_clear()
    quota.reset()
    assert quota.reserve(1, 5, max_wait=1).granted
    assert quota.pace(1) == quota.user_ceiling()
    leases = quota._leases.mine()
    assert leases["user:1"].size == 5
    assert leases["user:1"].left == 0
    # The next call within the lease's life: demand is steady, lease eight times more.
    assert quota.reserve(1, 5, max_wait=1).granted
    assert leases["user:1"].size == 40
    assert leases["user:1"].left == 35
    assert quota.reserve(1, 5, max_wait=1).granted
    assert leases["user:1"].left == 30  # spent locally


def test_a_reservation_larger_than_any_request_is_a_programming_error():
    with pytest.raises(ValueError, match="BATCHED_METHODS"):
        quota.reserve(1, quota.largest_reservation() + 1, max_wait=1)


def test_the_store_follows_the_settings():
    quota.store.cache_clear()
    assert isinstance(quota.store(), RedisStore if settings.REDIS_URL else DatabaseStore)


@pytest.mark.parametrize("limit", [25, 24, 10, 3])
@pytest.mark.parametrize("batch", [50, 25, 100])
def test_two_batches_requests_fit_in_the_permits_at_once(settings, limit, batch):
    """A batch holds permits for its largest request: two workers' batches must fit
    side by side (with 25 permits, requests of 13 did not: one batch at a time)."""
    settings.MAILSYNC_CONCURRENT_REQUESTS_PER_USER = limit
    size = quota.request_parts(batch)
    assert 2 * size <= limit
    assert -(-batch // size) * size - batch < -(-batch // size)  # requests of even size
