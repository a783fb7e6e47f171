"""Scripted faults: counted, timed (every matching call until a deadline), connection drops."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from googleapiclient.errors import HttpError

from gmail_emulator import ControlClient
from gmail_emulator.control import ControlError

from .conftest import ALICE, make_service

ROOT = Path(__file__).resolve().parents[2]
MESSAGES_GET = r"^/gmail/v1/users/me/messages/[0-9a-f]+$"


def _ids(gmail, n: int) -> list[str]:
    page = gmail.users().messages().list(userId="me", maxResults=n).execute()
    return [m["id"] for m in page["messages"]]


def _status(request) -> int:
    try:
        request.execute()
    except HttpError as exc:
        return exc.status_code
    return 200


def test_timed_fault_fails_every_matching_call_until_its_deadline(gmail, emu):
    msg_id = _ids(gmail, 1)[0]
    get = gmail.users().messages().get(userId="me", id=msg_id)
    started = time.monotonic()
    emu.script_fault(MESSAGES_GET, count=1, status=503, seconds=1.5)  # count is ignored
    failures = 0
    while time.monotonic() - started < 1.0:
        assert _status(get) == 503
        failures += 1
        assert gmail.users().messages().list(userId="me", maxResults=1).execute()["messages"]
    assert failures > 1
    while _status(get) == 503:
        assert time.monotonic() - started < 15, "the timed fault never ended"
    assert time.monotonic() - started >= 1.5


def test_timed_fault_hits_the_same_calls_inside_batches(gmail, emu, run_batch):
    ids = _ids(gmail, 10)
    emu.script_fault(MESSAGES_GET, status=503, reason="backendError", seconds=60)
    for _ in range(2):  # every batch, not just the first
        results = run_batch(
            [
                gmail.users().getProfile(userId="me"),
                *(gmail.users().messages().get(userId="me", id=i) for i in ids),
                gmail.users().messages().list(userId="me", maxResults=1),
            ]
        )
        statuses = [exc.status_code if exc else 200 for _, exc in results.values()]
        assert statuses == [200] + [503] * 10 + [200]
        errors = [exc for _, exc in results.values() if exc]
        assert {exc.error_details[0]["reason"] for exc in errors} == {"backendError"}
    emu.clear_faults()
    results = run_batch([gmail.users().messages().get(userId="me", id=i) for i in ids])
    assert all(exc is None for _, exc in results.values())


def test_counted_faults_still_run_out(gmail, emu):
    emu.script_fault(r"/profile$", count=2, status=500)
    assert [_status(gmail.users().getProfile(userId="me")) for _ in range(3)] == [500, 500, 200]


def _raw_get(base_url: str, path: str, token: str) -> http.client.HTTPResponse:
    url = urllib.parse.urlsplit(base_url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    return conn.getresponse()


def test_drop_fault_closes_the_connection_without_an_answer(emu, base_url, gmail):
    token = emu.mailbox(ALICE).access_token
    emu.reset_stats()
    emu.script_fault(r"/profile$", count=1, status=0)
    with pytest.raises(http.client.RemoteDisconnected):
        _raw_get(base_url, "/gmail/v1/users/me/profile", token)
    assert _raw_get(base_url, "/gmail/v1/users/me/profile", token).status == 200
    assert emu.stats()["by_status"] == {"0": 1, "200": 1}
    # httplib2 resends once on a dropped connection by itself: two drops reach the caller.
    emu.script_fault(r"/profile$", count=2, status=0)
    with pytest.raises(ConnectionError):
        gmail.users().getProfile(userId="me").execute()
    assert gmail.users().getProfile(userId="me").execute()["emailAddress"] == ALICE


def test_a_drop_in_a_batch_part_loses_the_whole_batch_answer(emu, gmail, run_batch):
    ids = _ids(gmail, 5)
    emu.script_fault(MESSAGES_GET, status=0, seconds=60)
    with pytest.raises(ConnectionError):
        run_batch([gmail.users().messages().get(userId="me", id=i) for i in ids])
    assert run_batch([gmail.users().getProfile(userId="me")])["1"][1] is None
    emu.clear_faults()
    assert emu.quota.in_flight[ALICE] == 0  # no slot stays taken by the lost batch


def test_control_api_scripts_timed_and_drop_faults(emu, base_url, gmail):
    ctl = ControlClient(base_url)
    ctl.script_fault(r"/labels$", status=429, reason="rateLimitExceeded", seconds=60)
    for _ in range(3):
        with pytest.raises(HttpError) as err:
            gmail.users().labels().list(userId="me").execute()
        assert err.value.status_code == 429
        assert err.value.resp["retry-after"] == "1"
    ctl.script_fault(r"/profile$", status=0, count=2)
    with pytest.raises(ConnectionError):
        gmail.users().getProfile(userId="me").execute()
    for bad in ({"status": 302}, {"seconds": 0}, {"path_regex": "("}, {"colour": "red"}):
        with pytest.raises(ControlError) as err:
            ctl._call("POST", "faults", {"path_regex": "/x", **bad})
        assert err.value.status == 400
    ctl.clear_faults()
    gmail.users().labels().list(userId="me").execute()


def test_cli_takes_faults():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    fault = {"path_regex": "/profile$", "status": 503, "seconds": 60}
    cmd = [sys.executable, "-m", "gmail_emulator", "--port", "0", "--mailbox", "erin@example.com:5"]
    proc = subprocess.Popen(
        [*cmd, "--fault", json.dumps(fault)], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    try:
        info = json.loads(proc.stdout.readline())
        gmail = make_service(info["base_url"], info["mailboxes"][0]["access_token"])
        assert [_status(gmail.users().getProfile(userId="me")) for _ in range(3)] == [503] * 3
        assert gmail.users().labels().list(userId="me").execute()["labels"]
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
    bad = subprocess.run(
        [*cmd, "--fault", '{"path_regex": "/x", "status": 99}'],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert bad.returncode != 0
    assert "status must be 0 (drop) or 400-599" in bad.stderr
