"""Batch endpoint: Content-ID echo, limits, concurrency of parts."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from .conftest import ALICE, raw_batch


def test_batch_answers_each_part(gmail, emu, run_batch):
    ids = [
        m["id"]
        for m in gmail.users().messages().list(userId="me", maxResults=50).execute()["messages"]
    ]
    emu.reset_stats()
    results = run_batch(
        [gmail.users().messages().get(userId="me", id=i, format="metadata") for i in ids]
    )
    assert len(results) == 50
    assert {resp["id"] for resp, exc in results.values()} == set(ids)
    stats = emu.stats()
    assert stats["by_method"]["gmail.users.messages.get"] == 50
    assert sum(stats["fetches"].values()) == 50


def test_batch_mixed_methods_and_404(gmail, run_batch):
    results = run_batch(
        [
            gmail.users().getProfile(userId="me"),
            gmail.users().messages().get(userId="me", id="18c0000000000001"),
            gmail.users().labels().list(userId="me"),
        ]
    )
    assert results["1"][0]["emailAddress"] == ALICE
    assert results["2"][1].status_code == 404
    assert results["3"][0]["labels"]


def test_batch_101_parts_refused(gmail, base_url):
    from googleapiclient.errors import HttpError
    from googleapiclient.http import BatchHttpRequest

    batch = BatchHttpRequest(batch_uri=base_url + "batch")
    batch._requests = {}
    for i in range(101):
        batch._order.append(str(i))
        batch._requests[str(i)] = gmail.users().getProfile(userId="me")
        batch._callbacks[str(i)] = None
    with pytest.raises(HttpError) as err:
        batch.execute(http=gmail._http)
    assert err.value.status_code == 400


def test_batch_parts_run_concurrently(gmail, emu, run_batch):
    ids = [
        m["id"]
        for m in gmail.users().messages().list(userId="me", maxResults=40).execute()["messages"]
    ]
    emu.config.latency_ms = 100
    started = time.perf_counter()
    results = run_batch(
        [gmail.users().messages().get(userId="me", id=i, format="minimal") for i in ids]
    )
    elapsed = time.perf_counter() - started
    assert all(exc is None for _, exc in results.values())
    assert elapsed < 2.0  # 40 x 100 ms in sequence would be 4 s (room for a slow machine)


def test_batch_content_ids_are_echoed(emu, base_url):
    token = emu.mailbox(ALICE).access_token
    profile = "/gmail/v1/users/me/profile?alt=json"
    text = raw_batch(base_url, [profile], token, path="batch", content_ids=["abc + 1"])
    assert "Content-ID: <response-abc + 1>" in text
    assert "HTTP/1.1 200 OK" in text


def test_batch_part_without_auth_is_401(base_url):
    text = raw_batch(base_url, ["/gmail/v1/users/me/profile"])
    assert "HTTP/1.1 401 Unauthorized" in text


def test_batch_not_multipart_is_400(base_url):
    req = urllib.request.Request(
        base_url + "batch", data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 400
