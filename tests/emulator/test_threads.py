"""threads.get next to messages.get in batches: formats, units and fetch accounting."""

from __future__ import annotations

import collections
import json

import pytest

from .conftest import ALICE, raw_batch

MESSAGES_GET = "gmail.users.messages.get"
THREADS_GET = "gmail.users.threads.get"


def _threads_by_size(emu) -> dict[str, list[str]]:
    members: dict[str, list[str]] = collections.defaultdict(list)
    for msg_id, message in emu.snapshot(ALICE)["messages"].items():
        members[message["threadId"]].append(msg_id)
    return dict(members)


def _batched(run_batch, requests: list) -> list[tuple[dict, Exception | None]]:
    out = []
    for start in range(0, len(requests), 50):
        out += list(run_batch(requests[start : start + 50]).values())
    return out


def test_threads_get_parts_in_every_format(gmail, emu, run_batch):
    threads = _threads_by_size(emu)
    long_ids = sorted((t for t in threads if len(threads[t]) >= 3), key=lambda t: -len(threads[t]))
    tid, other_tid, third_tid = long_ids[:3]
    single = next(m for t, ms in threads.items() if len(ms) == 1 for m in ms)
    emu.reset_stats()
    api = gmail.users()
    results = run_batch(
        [
            api.threads().get(userId="me", id=tid, format="full"),
            api.messages().get(userId="me", id=single, format="raw"),
            api.threads().get(
                userId="me", id=other_tid, format="metadata", metadataHeaders=["Subject"]
            ),
            api.threads().get(userId="me", id=third_tid, format="minimal"),
        ]
    )
    assert all(exc is None for _, exc in results.values())
    full, raw, meta, minimal = (resp for resp, _ in results.values())
    assert full["id"] == tid
    assert sorted(m["id"] for m in full["messages"]) == sorted(threads[tid])
    dates = [int(m["internalDate"]) for m in full["messages"]]
    assert dates == sorted(dates)
    first = full["messages"][0]
    assert first == api.messages().get(userId="me", id=first["id"], format="full").execute()
    assert "raw" in raw
    assert sorted(m["id"] for m in meta["messages"]) == sorted(threads[other_tid])
    assert all(
        [h["name"] for h in m["payload"]["headers"]] == ["Subject"] and "parts" not in m["payload"]
        for m in meta["messages"]
    )
    assert all("payload" not in m and m["labelIds"] for m in minimal["messages"])
    delivered = len(threads[tid]) + len(threads[other_tid])  # the minimal one downloads nothing
    stats = emu.stats()
    assert stats["by_method"] == {THREADS_GET: 3, MESSAGES_GET: 2}
    assert stats["units_by_method"] == {THREADS_GET: 30, MESSAGES_GET: 10}
    assert stats["units"] == 40
    # Every message a thread delivered with content is a fetch, like a messages.get.
    assert sum(stats["fetches"].values()) == delivered + 2
    assert set(threads[tid]) <= set(stats["fetches"])


def test_threads_get_has_no_raw_format(gmail, emu, base_url):
    tid = next(iter(_threads_by_size(emu)))
    with pytest.raises(TypeError, match="not an allowed value"):
        gmail.users().threads().get(userId="me", id=tid, format="raw")  # the client refuses
    token = emu.mailbox(ALICE).access_token
    answer = raw_batch(base_url, [f"/gmail/v1/users/me/threads/{tid}?format=raw"], token)
    assert "HTTP/1.1 400 Bad Request" in answer
    error = json.loads(answer[answer.index("{") : answer.rindex("}") + 1])["error"]
    assert error["status"] == "INVALID_ARGUMENT"
    assert emu.stats()["fetches"] == {}


def test_threads_get_delivers_spam_and_trash_members(gmail, emu):
    threads = _threads_by_size(emu)
    tid = next(t for t, ms in threads.items() if len(ms) >= 2)
    trashed = threads[tid][0]
    emu.trash_message(ALICE, trashed)
    listed = gmail.users().messages().list(userId="me", maxResults=500).execute()["messages"]
    assert trashed not in {m["id"] for m in listed}
    thread = gmail.users().threads().get(userId="me", id=tid, format="minimal").execute()
    labels = {m["id"]: m["labelIds"] for m in thread["messages"]}
    assert set(labels) == set(threads[tid])
    assert "TRASH" in labels[trashed]


def test_units_spent_fetching_by_thread_reach_the_snapshot_optimum(gmail, emu, run_batch):
    """What bench_sync computes: with the snapshot's per-thread counts, fetch threads of 3+
    with threads.get and the rest with messages.get; the units spent equal
    sum over threads of min(10, 5 * n) and each message is fetched once."""
    threads = _threads_by_size(emu)
    optimum = sum(min(10, 5 * len(members)) for members in threads.values())
    api = gmail.users()
    requests = []
    for tid, members in threads.items():
        if len(members) >= 3:
            requests.append(api.threads().get(userId="me", id=tid, format="full"))
        else:
            requests += [api.messages().get(userId="me", id=m, format="raw") for m in members]
    emu.reset_stats()
    assert all(exc is None for _, exc in _batched(run_batch, requests))
    stats = emu.stats()
    assert stats["units_by_method"][MESSAGES_GET] + stats["units_by_method"][THREADS_GET] == optimum
    assert set(stats["fetches"]) == set(emu.snapshot(ALICE)["messages"])
    assert set(stats["fetches"].values()) == {1}
    assert optimum < 5 * len(stats["fetches"])
