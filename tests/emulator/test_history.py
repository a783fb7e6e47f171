"""history.list: record types, ordering, paging, empty pages, retention and 404."""

from __future__ import annotations

import time

import pytest
from googleapiclient.errors import HttpError

from .conftest import ALICE


def _history(gmail, start, **kwargs):
    records, token, pages = [], None, 0
    while True:
        page = (
            gmail.users()
            .history()
            .list(userId="me", startHistoryId=start, pageToken=token, **kwargs)
            .execute()
        )
        pages += 1
        records += page.get("history", [])
        token = page.get("nextPageToken")
        if not token:
            return records, page["historyId"], pages


def test_changes_produce_typed_increasing_records(gmail, emu):
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    new_id = emu.insert_message(ALICE)
    emu.modify_message(ALICE, new_id, add=["STARRED"], remove=["UNREAD"])
    emu.trash_message(ALICE, new_id)
    emu.untrash_message(ALICE, new_id)
    label_id = emu.create_label(ALICE, "Temp")  # no history record
    emu.modify_message(ALICE, new_id, add=[label_id])
    emu.delete_label(ALICE, label_id)  # removes the label from the message: a record
    emu.delete_message(ALICE, new_id)
    records, current, _ = _history(gmail, start)
    ids = [int(r["id"]) for r in records]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert int(start) < ids[0]
    assert current == gmail.users().getProfile(userId="me").execute()["historyId"]
    assert int(current) == ids[-1]
    kinds = [
        next(
            k
            for k in ("messagesAdded", "messagesDeleted", "labelsAdded", "labelsRemoved")
            if k in r
        )
        for r in records
    ]
    assert kinds[0] == "messagesAdded"
    assert kinds[-1] == "messagesDeleted"
    assert records[1]["labelsAdded"][0]["labelIds"] == ["STARRED"]
    assert records[1]["labelsRemoved"][0]["labelIds"] == ["UNREAD"]
    assert records[-2]["labelsRemoved"][0]["labelIds"] == [label_id]
    assert all(
        r["messages"] == [{"id": new_id, "threadId": r["messages"][0]["threadId"]}] for r in records
    )
    assert len(records) == 7


def test_history_types_filter_and_label_filter(gmail, emu):
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    a = emu.insert_message(ALICE, ("INBOX",))
    emu.modify_message(ALICE, a, add=["STARRED"])
    emu.insert_message(ALICE, ("SENT",))
    added, _, _ = _history(gmail, start, historyTypes=["messageAdded"])
    assert len(added) == 2
    assert all(set(r) == {"id", "messages", "messagesAdded"} for r in added)
    starred, _, _ = _history(gmail, start, labelId="STARRED")
    assert len(starred) == 1


def test_message_history_id_follows(gmail, emu):
    msg_id = emu.insert_message(ALICE)
    before = gmail.users().messages().get(userId="me", id=msg_id, format="minimal").execute()
    emu.modify_message(ALICE, msg_id, add=["STARRED"])
    after = gmail.users().messages().get(userId="me", id=msg_id, format="minimal").execute()
    assert int(after["historyId"]) > int(before["historyId"])
    assert after["historyId"] == emu.snapshot(ALICE)["historyId"]


def test_paging_and_forced_empty_pages(gmail, emu):
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    for _ in range(25):
        emu.insert_message(ALICE)
    emu.force_empty_history_pages(ALICE, 2)
    first = gmail.users().history().list(userId="me", startHistoryId=start, maxResults=10).execute()
    assert "history" not in first
    assert first["nextPageToken"]
    records, _, pages = _history(gmail, start, maxResults=10)
    assert len(records) == 25
    assert pages == 4  # one forced empty page, then 10 + 10 + 5


def test_random_empty_pages_happen(gmail, emu):
    emu.config.empty_history_page_rate = 0.5
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    for _ in range(30):
        emu.insert_message(ALICE)
    records, _, pages = _history(gmail, start, maxResults=5)
    assert len(records) == 30
    assert pages > 6


def test_start_at_latest_is_empty(gmail):
    current = gmail.users().getProfile(userId="me").execute()["historyId"]
    page = gmail.users().history().list(userId="me", startHistoryId=current).execute()
    assert page == {"historyId": current}
    ahead = gmail.users().history().list(userId="me", startHistoryId=int(current) + 1000).execute()
    assert "history" not in ahead


def test_expired_history_is_404(gmail, emu):
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    emu.insert_message(ALICE)
    emu.expire_history(ALICE)
    with pytest.raises(HttpError) as err:
        gmail.users().history().list(userId="me", startHistoryId=start).execute()
    assert err.value.status_code == 404
    assert err.value.error_details[0]["reason"] == "notFound"
    current = gmail.users().getProfile(userId="me").execute()["historyId"]
    assert (
        "history" not in gmail.users().history().list(userId="me", startHistoryId=current).execute()
    )


def test_retention_drops_old_records(gmail, emu):
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    emu.insert_message(ALICE)
    time.sleep(0.05)
    emu.config.history_retention_s = 0.01
    with pytest.raises(HttpError) as err:
        gmail.users().history().list(userId="me", startHistoryId=start).execute()
    assert err.value.status_code == 404


def test_start_before_mailbox_creation_is_404(gmail):
    current = int(gmail.users().getProfile(userId="me").execute()["historyId"])
    with pytest.raises(HttpError) as err:
        gmail.users().history().list(userId="me", startHistoryId=current - 100).execute()
    assert err.value.status_code == 404


def test_label_create_and_rename_leave_no_history(gmail, emu):
    before = gmail.users().getProfile(userId="me").execute()["historyId"]
    label_id = emu.create_label(ALICE, "Quiet")
    emu.update_label(ALICE, label_id, name="Quieter")
    assert gmail.users().getProfile(userId="me").execute()["historyId"] == before
