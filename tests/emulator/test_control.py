"""Control API over HTTP (ControlClient) and the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from gmail_emulator import ControlClient
from gmail_emulator.control import ControlError

from .conftest import ALICE, make_service

ROOT = Path(__file__).resolve().parents[2]


def test_control_client_mirrors_python_api(base_url, emu, gmail):
    ctl = ControlClient(base_url)
    info = ctl.add_mailbox("carol@example.com", count=50)
    assert info["messages"] == 50
    assert ctl.snapshot("carol@example.com") == emu.snapshot("carol@example.com")
    msg_id = ctl.insert_message(ALICE, ["INBOX"], raw=b"Subject: hi\r\n\r\nbody\r\n")
    ctl.modify_message(ALICE, msg_id, add=["STARRED"])
    ctl.trash_message(ALICE, msg_id)
    ctl.untrash_message(ALICE, msg_id)
    assert emu.snapshot(ALICE)["messages"][msg_id]["labelIds"] == ["STARRED"]
    ctl.delete_message(ALICE, msg_id)
    label_id = ctl.create_label(
        ALICE, "Ctl", {"textColor": "#000000", "backgroundColor": "#fad165"}
    )
    ctl.update_label(ALICE, label_id, name="Ctl2")
    assert any(lab["name"] == "Ctl2" for lab in emu.snapshot(ALICE)["labels"])
    ctl.delete_label(ALICE, label_id)
    ctl.force_empty_history_pages(ALICE, 3)
    assert emu.mailbox(ALICE).forced_empty_pages == 3
    ctl.set_daily_limit_exceeded(ALICE, True)
    assert emu.mailbox(ALICE).daily_limit_exceeded
    ctl.set_daily_limit_exceeded(ALICE, False)
    ctl.script_fault("/profile$", 1, 503)
    ctl.update_config(latency_ms=1)
    assert emu.config.latency_ms == 1
    ctl.reset_stats()
    with pytest.raises(Exception):  # noqa: B017, PT011 - the scripted 503
        gmail.users().getProfile(userId="me").execute()
    assert ctl.stats()["by_status"] == {"503": 1}
    assert ctl.revoke_refresh_token(emu.mailbox(ALICE).refresh_token)
    ctl.expire_history(ALICE)
    with pytest.raises(ControlError) as err:
        ctl.snapshot("nobody@example.com")
    assert err.value.status == 404


def test_cli_prints_json_then_serves_and_stops_on_sigterm():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gmail_emulator",
            "--port",
            "0",
            "--mailbox",
            "dave@example.com:40",
            "--seed",
            "5",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        info = json.loads(proc.stdout.readline())
        assert info["client_id"] == "emulator-client-id.apps.googleusercontent.com"
        assert info["client_secret"] == "emulator-secret"
        mailbox = info["mailboxes"][0]
        assert mailbox["email"] == "dave@example.com"
        gmail = make_service(info["base_url"], mailbox["access_token"])
        assert gmail.users().getProfile(userId="me").execute()["messagesTotal"] == 40
        assert len(ControlClient(info["base_url"]).snapshot("dave@example.com")["messages"]) == 40
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()
