"""The shared quota budget: GCRA reservations in the database and in Redis."""

from __future__ import annotations

import pytest
from django.conf import settings

from mailsync import quota
from tests.cluster import redis_test_url

pytestmark = pytest.mark.django_db

REDIS_TEST_URL = redis_test_url(1)


@pytest.fixture(params=["database", "redis"])
def store(request):
    if request.param == "database":
        yield quota.DatabaseStore()
        return
    redis_store = quota.RedisStore(REDIS_TEST_URL)
    redis_store.reset()
    yield redis_store
    redis_store.reset()


def limits(units_per_minute: int) -> dict[str, float]:
    return {"user:1": quota.seconds_per_unit(units_per_minute), quota.PROJECT_KEY: 0.0}


def test_reservations_queue_up_at_the_budget_rate(store):
    now = 1000.0
    per_unit = quota.seconds_per_unit(15_000)
    first = store.reserve(limits(15_000), 250, now, max_wait=30)
    second = store.reserve(limits(15_000), 250, now, max_wait=30)
    third = store.reserve(limits(15_000), 250, now, max_wait=30)
    assert first.granted
    assert first.wait_s == 0
    # Within the burst allowance the second goes at once; the third waits its turn.
    assert second.wait_s == pytest.approx(max(0.0, 250 * per_unit - quota.BURST_S))
    assert third.wait_s == pytest.approx(500 * per_unit - quota.BURST_S)


def test_a_reservation_that_would_wait_too_long_is_refused_and_costs_nothing(store):
    now = 1000.0
    for _ in range(10):
        store.reserve(limits(3_000), 250, now, max_wait=1000)
    refused = store.reserve(limits(3_000), 250, now, max_wait=5)
    assert not refused.granted
    after = store.reserve(limits(3_000), 250, now, max_wait=1000)
    assert after.wait_s == pytest.approx(refused.wait_s)


def test_the_budget_never_exceeds_gmails_moving_window(store):
    """Reserve as fast as granted for three minutes: no 60 s window holds more than
    the per-minute budget."""
    budget = 15_000
    now, sent = 0.0, []
    while now < 180:
        reservation = store.reserve(limits(budget), 250, now, max_wait=60)
        now += reservation.wait_s
        sent.append(now)
    worst = max(sum(1 for t in sent if start <= t < start + 60) for start in sent) * 250
    assert worst <= budget
    # ... and uses most of it.
    assert len(sent) * 250 / 3 >= 0.9 * budget


def test_a_429_pauses_then_halves_the_rate(store):
    now = 1000.0
    store.penalize("user:1", retry_after=10, now=now)
    paused = store.reserve(limits(15_000), 5, now, max_wait=60)
    assert paused.wait_s == pytest.approx(10 - quota.BURST_S)
    base = store.reserve(limits(15_000), 250, now + 20, max_wait=60)
    slowed = store.reserve(limits(15_000), 250, now + 20, max_wait=60)
    assert slowed.wait_s == pytest.approx(2 * 250 * quota.seconds_per_unit(15_000) - quota.BURST_S)
    assert base.granted


def test_the_project_budget_is_shared_by_all_users(store):
    now = 1000.0
    project = quota.seconds_per_unit(3_000)
    for user in range(1, 6):
        store.reserve({f"user:{user}": 0.0, quota.PROJECT_KEY: project}, 250, now, max_wait=1000)
    sixth = store.reserve({"user:6": 0.0, quota.PROJECT_KEY: project}, 250, now, max_wait=1000)
    assert sixth.wait_s == pytest.approx(5 * 250 * project - quota.BURST_S)


def test_the_store_follows_the_settings():
    assert isinstance(
        quota.store(), quota.RedisStore if settings.REDIS_URL else quota.DatabaseStore
    )
