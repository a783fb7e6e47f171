"""Quota, concurrency, faults and the daily limit."""

from __future__ import annotations

import threading
import time

import pytest
from googleapiclient.errors import HttpError

from .conftest import ALICE, make_service


def test_quota_exhaustion_429_with_retry_after_then_recovery(gmail, emu):
    emu.config.quota_user_per_minute = 20
    emu.config.quota_window_s = 1.0
    for _ in range(4):
        gmail.users().messages().list(userId="me", maxResults=1).execute()  # 5 units each
    with pytest.raises(HttpError) as err:
        gmail.users().messages().list(userId="me", maxResults=1).execute()
    assert err.value.status_code == 429
    assert err.value.resp["retry-after"] == "1"
    detail = err.value.error_details[0]
    assert detail["reason"] == "rateLimitExceeded"
    assert detail["domain"] == "global"
    # A refused request is not charged: profile (1 unit) still fails only until the window slides.
    time.sleep(1.05)
    gmail.users().messages().list(userId="me", maxResults=1).execute()


def test_rate_limit_status_403(gmail, emu):
    emu.config.quota_user_per_minute = 3
    emu.config.rate_limit_status = 403
    for _ in range(3):
        gmail.users().getProfile(userId="me").execute()
    with pytest.raises(HttpError) as err:
        gmail.users().getProfile(userId="me").execute()
    assert err.value.status_code == 403
    assert err.value.error_details[0]["reason"] == "userRateLimitExceeded"
    assert int(err.value.resp["retry-after"]) >= 1


def test_project_quota(gmail, emu):
    emu.config.quota_project_per_minute = 2
    gmail.users().getProfile(userId="me").execute()
    gmail.users().getProfile(userId="me").execute()
    with pytest.raises(HttpError) as err:
        gmail.users().getProfile(userId="me").execute()
    assert err.value.status_code == 429


def test_batch_with_one_part_over_quota(gmail, emu, run_batch):
    ids = [
        m["id"]
        for m in gmail.users().messages().list(userId="me", maxResults=10).execute()["messages"]
    ]
    emu.config.quota_user_per_minute = 5 + 9 * 5  # list already spent 5; room for 9 gets
    results = run_batch([gmail.users().messages().get(userId="me", id=i) for i in ids])
    errors = [exc for _, exc in results.values() if exc is not None]
    assert len(errors) == 1
    assert errors[0].status_code == 429
    assert sum(resp is not None for resp, _ in results.values()) == 9


def test_concurrent_request_limit(emu, base_url):
    emu.config.concurrent_requests_per_user = 3
    emu.config.latency_ms = 200
    token = emu.mailbox(ALICE).access_token
    statuses: list[int] = []
    lock = threading.Lock()

    services = [make_service(base_url, token) for _ in range(10)]
    barrier = threading.Barrier(10)

    def call(service) -> None:
        barrier.wait()
        try:
            service.users().getProfile(userId="me").execute()
            status = 200
        except HttpError as exc:
            status = (
                exc.status_code if "Too many concurrent requests for user" in exc.reason else -1
            )
        with lock:
            statuses.append(status)

    threads = [threading.Thread(target=call, args=(s,)) for s in services]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses.count(200) == 3
    assert statuses.count(429) == 7


def test_fault_rate_about_thirty_percent(gmail, emu):
    emu.config.fault_rate = 0.3
    failures = []
    for _ in range(500):
        try:
            gmail.users().getProfile(userId="me").execute()
        except HttpError as exc:
            failures.append((exc.status_code, exc.error_details[0]["reason"]))
    assert 110 <= len(failures) <= 190
    assert {reason for _, reason in failures} == {"backendError"}
    assert {status for status, _ in failures} == {500, 503}


def test_scripted_faults(gmail, emu):
    emu.script_fault(r"/messages$", 2, status=500)
    for _ in range(2):
        with pytest.raises(HttpError) as err:
            gmail.users().messages().list(userId="me").execute()
        assert err.value.status_code == 500
    gmail.users().getProfile(userId="me").execute()
    gmail.users().messages().list(userId="me").execute()


def test_daily_limit(gmail, emu):
    emu.set_daily_limit_exceeded(ALICE, True)
    with pytest.raises(HttpError) as err:
        gmail.users().getProfile(userId="me").execute()
    assert err.value.status_code == 403
    assert err.value.error_details[0]["reason"] == "dailyLimitExceeded"
    emu.set_daily_limit_exceeded(ALICE, False)
    gmail.users().getProfile(userId="me").execute()


def test_stats(gmail, emu):
    emu.reset_stats()
    msg_id = gmail.users().messages().list(userId="me").execute()["messages"][0]["id"]
    gmail.users().messages().get(userId="me", id=msg_id, format="minimal").execute()
    gmail.users().messages().get(userId="me", id=msg_id, format="raw").execute()
    stats = emu.stats()
    assert stats["requests"] == 3
    assert stats["by_method"] == {"gmail.users.messages.list": 1, "gmail.users.messages.get": 2}
    assert stats["by_status"] == {"200": 3}
    assert stats["fetches"] == {msg_id: 1}  # minimal is no download: only raw counts


def test_batch_parts_count_as_in_flight_together(gmail, emu, run_batch):
    """Gmail fans a batch's parts out at once: 50 parts against a limit of 25 leave 25
    refused, even with no latency (the parts are served one after the other)."""
    ids = [
        m["id"]
        for m in gmail.users().messages().list(userId="me", maxResults=50).execute()["messages"]
    ]
    emu.config.concurrent_requests_per_user = 25
    emu.reset_stats()
    results = run_batch([gmail.users().messages().get(userId="me", id=i) for i in ids])
    refused = [exc for _, exc in results.values() if exc is not None]
    assert len(refused) == 25
    assert {exc.status_code for exc in refused} == {429}
    assert all("Too many concurrent requests for user" in exc.reason for exc in refused)
    assert list(results)[25:] == [rid for rid, (_, exc) in results.items() if exc is not None]
    assert sum(emu.stats()["fetches"].values()) == 25
    # Nothing stays in flight: the next batch of 25 passes whole.
    results = run_batch([gmail.users().messages().get(userId="me", id=i) for i in ids[:25]])
    assert all(exc is None for _, exc in results.values())
