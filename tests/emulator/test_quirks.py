"""Real Gmail's quirks (issue 15): each alone, and all together with `unstable`."""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from googleapiclient.errors import HttpError

from gmail_emulator import ControlClient, Emulator, EmulatorConfig
from gmail_emulator.config import UNSTABLE

from .conftest import ALICE, make_service

ROOT = Path(__file__).resolve().parents[2]
BOB = "bob@example.com"
SIX_HOURS_MS = 6 * 3_600_000


def _list_all(gmail, **kwargs) -> tuple[list[str], int]:
    ids, token, pages = [], None, 0
    while True:
        page = gmail.users().messages().list(userId="me", pageToken=token, **kwargs).execute()
        ids += [m["id"] for m in page.get("messages", [])]
        pages += 1
        token = page.get("nextPageToken")
        if not token:
            return ids, pages


def _history(gmail, start) -> dict:
    return gmail.users().history().list(userId="me", startHistoryId=start).execute()


def _history_status(gmail, start) -> int:
    try:
        _history(gmail, start)
    except HttpError as exc:
        return exc.status_code
    return 200


def _mailbox_service(emu, base_url, email: str, count: int = 300):
    mailbox = emu.add_mailbox(email, count=count)
    return mailbox, make_service(base_url, mailbox.access_token)


def test_stable_default_has_every_quirk_off():
    stable = EmulatorConfig()
    assert stable.concurrent_requests_per_user == 100
    assert not stable.unstable
    assert stable.list_inversion_rate == stable.history_lag_s == stable.fresh_history_404_s == 0
    assert stable.unknown_label_rate == stable.chat_rate == 0
    assert not stable.list_offset_page_tokens
    assert not stable.chat_raw_refused
    assert stable.refresh_token_max_age_s is None


def test_unstable_turns_every_quirk_on_and_each_can_be_set_alone():
    assert {name: getattr(EmulatorConfig(unstable=True), name) for name in UNSTABLE} == UNSTABLE
    mixed = EmulatorConfig(unstable=True, fresh_history_404_s=3.0)
    assert mixed.fresh_history_404_s == 3.0
    assert mixed.concurrent_requests_per_user == 25
    config = EmulatorConfig()
    config.update(unstable=True, chat_raw_refused=False)
    assert not config.chat_raw_refused
    assert config.list_offset_page_tokens
    config.update(unstable=False)
    assert config.concurrent_requests_per_user == 100
    assert not config.list_offset_page_tokens
    alone = EmulatorConfig(history_lag_s=1.0)
    assert alone.history_lag_s == 1.0
    assert alone.concurrent_requests_per_user == 100


def test_cli_unstable_flag_and_per_quirk_flags():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "gmail_emulator", "--port", "0", "--mailbox", "q@example.com:200"]
    cmd += ["--unstable", "--chat-raw-refused", "off", "--history-lag-s", "0.5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        info = json.loads(proc.stdout.readline())
        config = ControlClient(info["base_url"]).config()
        expected = dict(UNSTABLE, chat_raw_refused=False, history_lag_s=0.5, unstable=True)
        assert {name: config[name] for name in expected} == expected
        labels = ControlClient(info["base_url"]).snapshot("q@example.com")["messages"].values()
        assert any(m["labelIds"] == ["CHAT"] for m in labels)
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()


def test_concurrency_limit_of_25_in_unstable_mode(gmail, emu, run_batch):
    emu.config.update(unstable=True)
    ids, _ = _list_all(gmail, maxResults=100)
    results = run_batch([gmail.users().messages().get(userId="me", id=i) for i in ids[:50]])
    refused = [exc for _, exc in results.values() if exc is not None]
    assert len(refused) == 25
    body = json.loads(refused[0].content)["error"]
    assert body["code"] == 429
    assert body["message"] == "Too many concurrent requests for user"
    assert body["errors"][0]["reason"] == "rateLimitExceeded"
    assert body["status"] == "RESOURCE_EXHAUSTED"


def test_listing_order_has_small_date_inversions(gmail, emu):
    snap = emu.snapshot(ALICE)["messages"]
    ordered, _ = _list_all(gmail, maxResults=37, includeSpamTrash=True)
    assert [int(snap[i]["internalDate"]) for i in ordered] == sorted(
        (int(m["internalDate"]) for m in snap.values()), reverse=True
    )
    emu.config.list_inversion_rate = 0.05
    listed, _ = _list_all(gmail, maxResults=37, includeSpamTrash=True)
    assert sorted(listed) == sorted(snap)
    assert len(set(listed)) == len(listed)
    dates = [int(snap[i]["internalDate"]) for i in listed]
    inversions = [(a, b) for a, b in itertools.pairwise(dates) if b > a]
    assert inversions
    assert all(b - a <= 2 * SIX_HOURS_MS for a, b in inversions)
    assert _list_all(gmail, maxResults=500, includeSpamTrash=True)[0] == listed  # stable order
    new_id = emu.insert_message(ALICE)
    assert new_id in _list_all(gmail, maxResults=37, includeSpamTrash=True)[0]


def _two_pages(gmail, change) -> tuple[list[str], list[str]]:
    first = gmail.users().messages().list(userId="me", maxResults=10).execute()
    change()
    second = (
        gmail.users()
        .messages()
        .list(userId="me", maxResults=10, pageToken=first["nextPageToken"])
        .execute()
    )
    return [m["id"] for m in first["messages"]], [m["id"] for m in second["messages"]]


def _after(gmail, message_id: str, n: int) -> list[str]:
    """The `n` messages listed after `message_id` in a listing made now in one page."""
    whole, _ = _list_all(gmail, maxResults=500)
    return whole[whole.index(message_id) + 1 :][:n]


def test_offset_page_tokens_repeat_or_skip_when_mail_arrives_or_leaves(gmail, emu):
    # Stable tokens: mail arriving or leaving between pages changes nothing downstream.
    first, second = _two_pages(gmail, lambda: emu.insert_message(ALICE))
    assert second == _after(gmail, first[-1], 10)
    first, second = _two_pages(gmail, lambda: emu.delete_message(ALICE, first[0]))
    assert second == _after(gmail, first[-1], 10)
    emu.config.list_offset_page_tokens = True
    first, second = _two_pages(gmail, lambda: None)
    assert second == _after(gmail, first[-1], 10)
    first, second = _two_pages(gmail, lambda: emu.insert_message(ALICE))
    assert second[0] == first[-1]  # new mail on top pushed the page's last one down again
    assert second[1:] == _after(gmail, first[-1], 9)
    first, second = _two_pages(gmail, lambda: emu.delete_message(ALICE, first[0]))
    skipped = _after(gmail, first[-1], 1)[0]
    assert skipped not in first + second  # a deletion above moved one past the cut
    assert second == _after(gmail, skipped, 10)


def test_history_answers_run_ahead_of_the_records_shown(gmail, emu):
    emu.config.history_lag_s = 1.0
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    changed = time.monotonic()
    new_id = emu.insert_message(ALICE)
    current = emu.snapshot(ALICE)["historyId"]
    page = _history(gmail, start)
    assert "history" not in page
    assert page["historyId"] == current  # counts a change it does not show yet
    while "history" not in (page := _history(gmail, start)):
        assert time.monotonic() - changed < 15, "the record never became visible"
    assert time.monotonic() - changed >= 1.0
    assert page["history"][0]["messagesAdded"][0]["message"]["id"] == new_id
    # A client that stored the first answer's historyId has skipped the change for good.
    assert "history" not in _history(gmail, current)


def _wait_for_history(gmail, start, since: float) -> None:
    while _history_status(gmail, start) == 404:
        assert time.monotonic() - since < 15, "the id never became usable"


def test_fresh_history_ids_answer_404_for_a_while(gmail, emu):
    emu.config.fresh_history_404_s = 1.0
    old = gmail.users().getProfile(userId="me").execute()["historyId"]
    _wait_for_history(gmail, old, time.monotonic())  # the mailbox itself is seconds old
    changed = time.monotonic()
    emu.insert_message(ALICE)
    fresh = gmail.users().getProfile(userId="me").execute()["historyId"]
    with pytest.raises(HttpError) as err:
        _history(gmail, fresh)
    assert err.value.status_code == 404
    assert err.value.error_details[0]["reason"] == "notFound"
    assert json.loads(err.value.content)["error"]["message"] == "Requested entity was not found."
    assert len(_history(gmail, old)["history"]) == 1  # an older id still works
    _wait_for_history(gmail, fresh, changed)
    assert time.monotonic() - changed >= 1.0


def test_a_new_mailbox_history_id_is_fresh_too(emu, base_url):
    emu.config.fresh_history_404_s = 60
    _, gmail = _mailbox_service(emu, base_url, BOB, 20)
    start = gmail.users().getProfile(userId="me").execute()["historyId"]
    assert _history_status(gmail, start) == 404
    emu.config.fresh_history_404_s = 0
    assert _history_status(gmail, start) == 200


def test_messages_carry_label_ids_that_labels_list_and_get_do_not_know(emu, base_url):
    emu.config.unknown_label_rate = 0.02
    _, gmail = _mailbox_service(emu, base_url, BOB)
    known = {lab["id"] for lab in gmail.users().labels().list(userId="me").execute()["labels"]}
    snap = emu.snapshot(BOB)["messages"]
    carriers = {
        i: set(m["labelIds"]) - known for i, m in snap.items() if set(m["labelIds"]) - known
    }
    assert 3 <= len(carriers) <= 12  # about 2 % of 300
    msg_id, unknown = next(iter(carriers.items()))
    got = gmail.users().messages().get(userId="me", id=msg_id, format="minimal").execute()
    assert unknown <= set(got["labelIds"])
    with pytest.raises(HttpError) as err:
        gmail.users().labels().get(userId="me", id=next(iter(unknown))).execute()
    assert err.value.status_code == 404
    # Deterministic per seed: the same mailbox again carries them on the same messages.
    again = Emulator(EmulatorConfig(seed=emu.config.seed, unknown_label_rate=0.02))
    again.add_mailbox(BOB, count=300)
    assert {
        i for i, m in again.snapshot(BOB)["messages"].items() if set(m["labelIds"]) - known
    } == set(carriers)
    stable = Emulator(EmulatorConfig(seed=emu.config.seed))
    stable.add_mailbox(BOB, count=300)
    assert not any(set(m["labelIds"]) - known for m in stable.snapshot(BOB)["messages"].values())


def test_chats_refuse_raw_but_serve_full(emu, base_url, run_batch):
    emu.config.update(unstable=True)
    _, gmail = _mailbox_service(emu, base_url, BOB)
    chats = [i for i, m in emu.snapshot(BOB)["messages"].items() if m["labelIds"] == ["CHAT"]]
    assert 3 <= len(chats) <= 12
    messages = gmail.users().messages()
    with pytest.raises(HttpError) as err:
        messages.get(userId="me", id=chats[0], format="raw").execute()
    assert err.value.status_code == 400
    error = json.loads(err.value.content)["error"]
    assert error["message"] == "Request contains an invalid argument."
    assert error["status"] == "INVALID_ARGUMENT"
    assert messages.get(userId="me", id=chats[0], format="full").execute()["payload"]["headers"]
    emu.reset_stats()
    results = run_batch([messages.get(userId="me", id=i, format="raw") for i in chats])
    assert all(exc is not None and exc.status_code == 400 for _, exc in results.values())
    assert emu.stats()["fetches"] == {}


def test_chat_raw_refusal_alone(gmail, emu):
    chat = emu.insert_message(ALICE, ["CHAT"], raw=b"From: a@example.org\r\n\r\nhi\r\n")
    messages = gmail.users().messages()
    assert base64.urlsafe_b64decode(
        messages.get(userId="me", id=chat, format="raw").execute()["raw"]
    )
    emu.config.chat_raw_refused = True
    with pytest.raises(HttpError) as err:
        messages.get(userId="me", id=chat, format="raw").execute()
    assert err.value.status_code == 400
    listed = messages.list(userId="me", maxResults=5).execute()["messages"]
    other = next(m["id"] for m in listed if m["id"] != chat)
    assert messages.get(userId="me", id=other, format="raw").execute()["raw"]


def _refresh(base_url: str, emu, refresh_token: str) -> tuple[int, dict]:
    form = {
        "grant_type": "refresh_token",
        "refresh_token": refresh_token,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
    }
    req = urllib.request.Request(
        base_url + "token", data=urllib.parse.urlencode(form).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_refresh_tokens_expire_by_age(emu, base_url):
    token = emu.mailbox(ALICE).refresh_token
    emu.config.update(unstable=True)
    assert emu.config.refresh_token_max_age_s == 7 * 86400
    assert _refresh(base_url, emu, token)[0] == 200  # minutes old: fine
    emu.config.refresh_token_max_age_s = 0.0  # now older than the limit
    status, body = _refresh(base_url, emu, token)
    assert status == 400
    assert body == {
        "error": "invalid_grant",
        "error_description": "Token has been expired or revoked.",
    }
    emu.config.refresh_token_max_age_s = None
    assert _refresh(base_url, emu, token)[0] == 200
