"""Generated mailboxes: determinism, speed, content variety, hostile messages, mbox."""

from __future__ import annotations

import base64
import collections
import mailbox
import time

from gmail_emulator import Emulator, EmulatorConfig, mime

from .conftest import ALICE


def test_same_seed_same_snapshot():
    def snap(seed):
        emu = Emulator(EmulatorConfig(seed=seed, generated_until_ms=1_700_000_000_000))
        emu.add_mailbox("x@example.com", count=500)
        return emu.snapshot("x@example.com")

    assert snap(3) == snap(3)
    assert snap(3) != snap(4)


def test_generation_is_fast_and_realistic():
    emu = Emulator()
    started = time.perf_counter()
    mb = emu.add_mailbox("big@example.com", count=5000)
    assert time.perf_counter() - started < 0.5
    sizes = collections.Counter(len(m) for m in mb.threads.values())
    assert sizes[1] > sizes[2] > sizes[5]
    assert max(sizes) >= 6
    counts = mb.label_counts
    for label in ("INBOX", "SENT", "UNREAD", "SPAM", "TRASH", "STARRED", "IMPORTANT"):
        assert counts.get(label, 0) > 0, label
    assert 0.005 < counts["SPAM"] / 5000 < 0.06
    years = {time.gmtime(m.date / 1000).tm_year for m in mb.msgs.values()}
    assert len(years) >= 4


def test_content_variety(gmail, emu):
    mb = emu.mailbox(ALICE)
    charsets, encodings, types = set(), set(), set()
    for msg in list(mb.msgs.values())[:300]:
        raw = (
            gmail.users().messages().get(userId="me", id=mb.msg_id(msg.num), format="raw").execute()
        )
        text = base64.urlsafe_b64decode(raw["raw"]).decode("latin-1").lower()
        for cs in ("utf-8", "iso-8859-1", "windows-1252", "iso-2022-jp", "koi8-r"):
            if f'charset="{cs}"' in text:
                charsets.add(cs)
        for cte in ("quoted-printable", "base64", "7bit"):
            if f"content-transfer-encoding: {cte}" in text:
                encodings.add(cte)
        for ctype in ("multipart/alternative", "multipart/mixed", "text/plain"):
            if f"content-type: {ctype}" in text:
                types.add(ctype)
        if "=?" in text.split("\r\n\r\n")[0]:
            types.add("rfc2047")
    assert charsets == {"utf-8", "iso-8859-1", "windows-1252", "iso-2022-jp", "koi8-r"}
    assert encodings == {"quoted-printable", "base64", "7bit"}
    assert types == {"multipart/alternative", "multipart/mixed", "text/plain", "rfc2047"}


def test_hostile_messages_are_served(gmail, emu):
    mb = emu.mailbox(ALICE)
    for num in (7, 13, 21, 29):
        msg_id = mb.msg_id(num)
        for fmt in ("full", "metadata", "minimal", "raw"):
            got = gmail.users().messages().get(userId="me", id=msg_id, format=fmt).execute()
            assert got["id"] == msg_id
    full = gmail.users().messages().get(userId="me", id=mb.msg_id(7)).execute()
    assert any("\x00" in h["value"] for h in full["payload"]["headers"])
    full = gmail.users().messages().get(userId="me", id=mb.msg_id(13)).execute()
    assert max(len(h["value"]) for h in full["payload"]["headers"]) >= 20000


def test_snippet_and_size_consistent(gmail, emu):
    mb = emu.mailbox(ALICE)
    msg = gmail.users().messages().get(userId="me", id=mb.msg_id(100), format="raw").execute()
    assert len(base64.urlsafe_b64decode(msg["raw"])) == msg["sizeEstimate"]
    assert 0 < len(msg["snippet"]) <= 200
    assert "  " not in msg["snippet"]


def test_mbox_loading(tmp_path, base_url, emu):
    path = tmp_path / "takeout.mbox"
    box = mailbox.mbox(str(path))
    box.add(
        b"From: a@example.org\nTo: bob@example.com\nSubject: first\nMessage-ID: <m1@x>\n"
        b"Date: Mon, 01 Jan 2024 10:00:00 +0000\nX-Gmail-Labels: Inbox,Unread,Trips\n\nHello Bob\n"
    )
    box.add(
        b"From: bob@example.com\nSubject: Re: first\nIn-Reply-To: <m1@x>\nMessage-ID: <m2@x>\n"
        b"Date: Tue, 02 Jan 2024 10:00:00 +0000\nX-Gmail-Labels: Sent\n\nThanks\n"
    )
    box.flush()
    box.close()
    mb = emu.add_mailbox_from_mbox("bob@example.com", str(path))
    snap = emu.snapshot("bob@example.com")
    trips = next(lab["id"] for lab in snap["labels"] if lab["name"] == "Trips")
    first, second = sorted(snap["messages"].values(), key=lambda m: m["internalDate"])
    assert first["labelIds"] == sorted(["INBOX", "UNREAD", trips])
    assert second["labelIds"] == ["SENT"]
    assert first["threadId"] == second["threadId"]
    assert first["internalDate"] == "1704103200000"
    from .conftest import make_service

    gmail = make_service(base_url, mb.access_token)
    listed = gmail.users().messages().list(userId="me").execute()["messages"]
    got = gmail.users().messages().get(userId="me", id=listed[1]["id"]).execute()
    assert got["snippet"] == "Hello Bob"


def test_full_and_metadata_match_a_parse_of_raw(emu, gmail, run_batch):
    """Generated mail's format=full/metadata come from the renderer, not a MIME parse:
    they must equal what the stdlib parser makes of the same message's raw bytes."""
    mb = emu.mailbox(ALICE)
    ids = [mb.msg_id(num) for num in mb.msgs]
    messages = gmail.users().messages()
    answers: dict[tuple[str, str], dict] = {}
    for fmt in ("raw", "full", "metadata"):
        for start in range(0, len(ids), 50):
            chunk = ids[start : start + 50]
            results = run_batch(
                [
                    messages.get(userId="me", id=i, format=fmt, metadataHeaders=["Subject", "To"])
                    if fmt == "metadata"
                    else messages.get(userId="me", id=i, format=fmt)
                    for i in chunk
                ]
            )
            for resp, exc in results.values():
                assert exc is None
                answers[(resp["id"], fmt)] = resp
    for msg_id in ids:
        raw = base64.urlsafe_b64decode(answers[(msg_id, "raw")]["raw"])
        num = mb.num_of(msg_id)
        assert answers[(msg_id, "full")]["payload"] == mime.payload(raw, num), msg_id
        assert answers[(msg_id, "metadata")]["payload"] == mime.metadata_payload(
            raw, ["Subject", "To"]
        ), msg_id
