"""Every Gmail endpoint through the real google-api-python-client."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import google.oauth2.credentials
import pytest
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError

from .conftest import ALICE


def _all_ids(gmail, **kwargs) -> list[str]:
    ids, token = [], None
    while True:
        page = gmail.users().messages().list(userId="me", pageToken=token, **kwargs).execute()
        ids += [m["id"] for m in page.get("messages", [])]
        token = page.get("nextPageToken")
        if not token:
            return ids


def test_profile(gmail, emu):
    profile = gmail.users().getProfile(userId="me").execute()
    assert profile["emailAddress"] == ALICE
    assert profile["messagesTotal"] == 300
    assert profile["historyId"] == emu.snapshot(ALICE)["historyId"]
    assert gmail.users().getProfile(userId=ALICE).execute()["emailAddress"] == ALICE


def test_other_user_is_forbidden(gmail):
    with pytest.raises(HttpError) as err:
        gmail.users().getProfile(userId="bob@example.com").execute()
    assert err.value.status_code == 403


def test_unknown_token_is_401_auth_error(base_url):
    req = urllib.request.Request(
        base_url + "gmail/v1/users/me/messages?alt=json",
        headers={"Authorization": "Bearer not-a-token"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 401
    body = json.loads(err.value.read())
    assert body["error"]["errors"][0]["reason"] == "authError"
    assert body["error"]["status"] == "UNAUTHENTICATED"


def test_expired_token_is_refreshed_by_the_client(emu, base_url):
    """google-auth sees the 401, refreshes at the emulator's token endpoint and retries."""
    mb = emu.mailbox(ALICE)
    creds = google.oauth2.credentials.Credentials(
        emu.issue_access_token(ALICE, lifetime_s=-1),
        refresh_token=mb.refresh_token,
        token_uri=base_url + "token",
        client_id=emu.client_id,
        client_secret=emu.client_secret,
    )
    gmail = build(
        "gmail",
        "v1",
        credentials=creds,
        client_options={"api_endpoint": base_url},
        cache_discovery=False,
        static_discovery=True,
    )
    assert gmail.users().getProfile(userId="me").execute()["emailAddress"] == ALICE
    assert emu.stats()["by_status"]["401"] == 1
    assert emu.stats()["by_method"]["oauth2.token"] == 1


def test_list_newest_first_pages_and_excludes_spam_trash(gmail, emu):
    snap = emu.snapshot(ALICE)["messages"]
    ids = _all_ids(gmail, maxResults=37)
    expected = [i for i, m in snap.items() if not {"SPAM", "TRASH"} & set(m["labelIds"])]
    assert sorted(ids) == sorted(expected)
    dates = [int(snap[i]["internalDate"]) for i in ids]
    assert dates == sorted(dates, reverse=True)
    everything = _all_ids(gmail, maxResults=500, includeSpamTrash=True)
    assert len(everything) == 300


def test_list_defaults_and_estimate(gmail):
    page = gmail.users().messages().list(userId="me").execute()
    assert len(page["messages"]) == 100
    assert isinstance(page["resultSizeEstimate"], int)
    assert set(page["messages"][0]) == {"id", "threadId"}


def test_list_label_ids_must_all_match(gmail, emu):
    snap = emu.snapshot(ALICE)["messages"]
    ids = _all_ids(gmail, labelIds=["INBOX", "IMPORTANT"])
    expected = [
        i
        for i, m in snap.items()
        if {"INBOX", "IMPORTANT"} <= set(m["labelIds"])
        and not {"SPAM", "TRASH"} & set(m["labelIds"])
    ]
    assert sorted(ids) == sorted(expected)
    assert ids


@pytest.mark.parametrize(
    ("q", "check"),
    [
        ("in:inbox", lambda m: "INBOX" in m["labelIds"]),
        ("label:work-projects", None),
        ("is:unread", lambda m: "UNREAD" in m["labelIds"]),
        ("in:spam", lambda m: "SPAM" in m["labelIds"]),
        ("after:2024/01/01", lambda m: int(m["internalDate"]) >= 1704067200000),
        ("before:1704067200", lambda m: int(m["internalDate"]) < 1704067200000),
    ],
)
def test_list_q(gmail, emu, q, check):
    snap = emu.snapshot(ALICE)["messages"]
    ids = _all_ids(gmail, q=q, maxResults=500)
    if check is None:
        label = next(
            lab["id"] for lab in emu.snapshot(ALICE)["labels"] if lab["name"] == "Work/Projects"
        )
        check = lambda m: label in m["labelIds"]  # noqa: E731
    spam_trash = q == "in:spam"
    expected = [
        i
        for i, m in snap.items()
        if check(m) and (spam_trash or not {"SPAM", "TRASH"} & set(m["labelIds"]))
    ]
    assert sorted(ids) == sorted(expected)


def test_list_newer_than(gmail, emu):
    new_id = emu.insert_message(ALICE)
    assert _all_ids(gmail, q="newer_than:1d") == [new_id]


def test_unsupported_q_term_is_400(gmail):
    with pytest.raises(HttpError) as err:
        gmail.users().messages().list(userId="me", q="from:bob").execute()
    assert err.value.status_code == 400
    assert "from:bob" in err.value.reason


def test_get_formats(gmail):
    msg_id = gmail.users().messages().list(userId="me").execute()["messages"][0]["id"]
    full = gmail.users().messages().get(userId="me", id=msg_id).execute()
    assert full["payload"]["partId"] == ""
    assert isinstance(full["historyId"], str)
    assert isinstance(full["internalDate"], str)
    raw = gmail.users().messages().get(userId="me", id=msg_id, format="raw").execute()
    raw_bytes = base64.urlsafe_b64decode(raw["raw"])
    assert len(raw_bytes) == raw["sizeEstimate"] == full["sizeEstimate"]
    minimal = gmail.users().messages().get(userId="me", id=msg_id, format="minimal").execute()
    assert "payload" not in minimal
    assert minimal["snippet"] == full["snippet"]
    meta = (
        gmail.users()
        .messages()
        .get(userId="me", id=msg_id, format="metadata", metadataHeaders=["Subject", "From"])
        .execute()
    )
    assert {h["name"] for h in meta["payload"]["headers"]} == {"Subject", "From"}


def test_get_unknown_message_is_404(gmail):
    with pytest.raises(HttpError) as err:
        gmail.users().messages().get(userId="me", id="18c0000000000001").execute()
    assert err.value.status_code == 404


def _walk(part):
    yield part
    for child in part.get("parts", []):
        yield from _walk(child)


def test_full_payload_tree_and_attachments(gmail, emu):
    mb = emu.mailbox(ALICE)
    found = 0
    for msg in list(mb.msgs.values())[:120]:
        msg_id = mb.msg_id(msg.num)
        full = gmail.users().messages().get(userId="me", id=msg_id).execute()
        for part in _walk(full["payload"]):
            body = part["body"]
            if "data" in body:
                assert len(base64.urlsafe_b64decode(body["data"])) == body["size"]
                assert len(body["data"]) % 4 == 0  # padded like Google
            if "attachmentId" in body:
                found += 1
                att = (
                    gmail.users()
                    .messages()
                    .attachments()
                    .get(userId="me", messageId=msg_id, id=body["attachmentId"])
                    .execute()
                )
                assert len(base64.urlsafe_b64decode(att["data"])) == att["size"] == body["size"]
            if part["partId"]:
                parent_id = part["partId"].rpartition(".")[0]
                assert parent_id == "" or part["partId"].startswith(parent_id + ".")
    assert found > 0


def test_insert_modify_trash_untrash_delete(gmail, emu):
    raw = (
        b"From: x@example.org\r\nTo: alice@example.com\r\nSubject: hello\r\n"
        b"Message-ID: <ins-1@example.org>\r\n\r\nHi Alice, see you soon.\r\n"
    )
    msg = (
        gmail.users()
        .messages()
        .insert(
            userId="me",
            body={"raw": base64.urlsafe_b64encode(raw).decode(), "labelIds": ["INBOX", "UNREAD"]},
        )
        .execute()
    )
    got = gmail.users().messages().get(userId="me", id=msg["id"]).execute()
    assert got["snippet"] == "Hi Alice, see you soon."
    assert got["labelIds"] == ["INBOX", "UNREAD"]
    reply = (
        b"From: alice@example.com\r\nSubject: Re: hello\r\nIn-Reply-To: <ins-1@example.org>\r\n"
        b"\r\nThanks\r\n"
    )
    reply_msg = (
        gmail.users()
        .messages()
        .insert(
            userId="me",
            body={"raw": base64.urlsafe_b64encode(reply).decode(), "labelIds": ["SENT"]},
        )
        .execute()
    )
    assert reply_msg["threadId"] == msg["threadId"]
    modified = (
        gmail.users()
        .messages()
        .modify(
            userId="me",
            id=msg["id"],
            body={"addLabelIds": ["STARRED"], "removeLabelIds": ["UNREAD"]},
        )
        .execute()
    )
    assert modified["labelIds"] == ["INBOX", "STARRED"]
    assert (
        "TRASH" in gmail.users().messages().trash(userId="me", id=msg["id"]).execute()["labelIds"]
    )
    assert gmail.users().messages().untrash(userId="me", id=msg["id"]).execute()["labelIds"] == [
        "STARRED"
    ]
    gmail.users().messages().delete(userId="me", id=msg["id"]).execute()
    assert msg["id"] not in emu.snapshot(ALICE)["messages"]


def test_modify_unknown_label_is_400(gmail):
    msg_id = gmail.users().messages().list(userId="me").execute()["messages"][0]["id"]
    with pytest.raises(HttpError) as err:
        gmail.users().messages().modify(
            userId="me", id=msg_id, body={"addLabelIds": ["Nope"]}
        ).execute()
    assert err.value.status_code == 400


def test_batch_modify(gmail, emu):
    ids = [
        m["id"]
        for m in gmail.users().messages().list(userId="me", maxResults=20).execute()["messages"]
    ]
    gmail.users().messages().batchModify(
        userId="me", body={"ids": ids, "addLabelIds": ["STARRED"]}
    ).execute()
    snap = emu.snapshot(ALICE)["messages"]
    assert all("STARRED" in snap[i]["labelIds"] for i in ids)


def test_labels_crud_and_counters(gmail, emu):
    labels = gmail.users().labels().list(userId="me").execute()["labels"]
    assert {"INBOX", "SPAM", "TRASH", "CATEGORY_SOCIAL", "CHAT"} <= {lab["id"] for lab in labels}
    assert all("messagesTotal" not in lab for lab in labels)
    work = next(lab for lab in labels if lab["name"] == "Work/Projects")
    assert work["type"] == "user"
    assert set(work["color"]) == {"textColor", "backgroundColor"}
    inbox = gmail.users().labels().get(userId="me", id="INBOX").execute()
    snap = emu.snapshot(ALICE)["messages"]
    assert inbox["messagesTotal"] == sum("INBOX" in m["labelIds"] for m in snap.values())
    assert inbox["threadsTotal"] <= inbox["messagesTotal"]
    assert inbox["messagesUnread"] == sum(
        {"INBOX", "UNREAD"} <= set(m["labelIds"]) for m in snap.values()
    )
    created = (
        gmail.users()
        .labels()
        .create(
            userId="me",
            body={"name": "Emu", "color": {"textColor": "#000000", "backgroundColor": "#fad165"}},
        )
        .execute()
    )
    assert created["id"].startswith("Label_")
    with pytest.raises(HttpError) as err:
        gmail.users().labels().create(userId="me", body={"name": "Emu"}).execute()
    assert err.value.status_code == 409
    patched = (
        gmail.users().labels().patch(userId="me", id=created["id"], body={"name": "Emu2"}).execute()
    )
    assert patched["name"] == "Emu2"
    assert patched["color"]["backgroundColor"] == "#fad165"
    updated = (
        gmail.users()
        .labels()
        .update(userId="me", id=created["id"], body={"name": "Emu3"})
        .execute()
    )
    assert updated["name"] == "Emu3"
    assert "color" not in updated
    gmail.users().labels().delete(userId="me", id=created["id"]).execute()
    with pytest.raises(HttpError) as err:
        gmail.users().labels().get(userId="me", id=created["id"]).execute()
    assert err.value.status_code == 404


def test_threads(gmail, emu):
    page = gmail.users().threads().list(userId="me", maxResults=10).execute()
    assert len(page["threads"]) == 10
    assert page["nextPageToken"]
    seen, token = [], None
    while True:
        page = (
            gmail.users()
            .threads()
            .list(userId="me", maxResults=50, pageToken=token, includeSpamTrash=True)
            .execute()
        )
        seen += [t["id"] for t in page.get("threads", [])]
        token = page.get("nextPageToken")
        if not token:
            break
    snap = emu.snapshot(ALICE)["messages"]
    assert sorted(seen) == sorted({m["threadId"] for m in snap.values()})
    long_thread = max(seen, key=lambda t: sum(m["threadId"] == t for m in snap.values()))
    thread = gmail.users().threads().get(userId="me", id=long_thread).execute()
    assert len(thread["messages"]) == sum(m["threadId"] == long_thread for m in snap.values())
    dates = [int(m["internalDate"]) for m in thread["messages"]]
    assert dates == sorted(dates)
    if len(thread["messages"]) > 1:
        headers = {h["name"] for h in thread["messages"][1]["payload"]["headers"]}
        assert {"In-Reply-To", "References"} <= headers
    minimal = gmail.users().threads().get(userId="me", id=long_thread, format="minimal").execute()
    assert "payload" not in minimal["messages"][0]


def test_watch_and_stop(gmail):
    resp = gmail.users().watch(userId="me", body={"topicName": "projects/p/topics/t"}).execute()
    assert int(resp["expiration"]) > 0
    assert resp["historyId"]
    gmail.users().stop(userId="me").execute()


def test_method_override_for_long_urls(gmail, emu):
    many = [f"X-Header-{i}" for i in range(300)]
    msg_id = gmail.users().messages().list(userId="me").execute()["messages"][0]["id"]
    before = emu.stats()["by_method"].get("gmail.users.messages.get", 0)
    meta = (
        gmail.users()
        .messages()
        .get(userId="me", id=msg_id, format="metadata", metadataHeaders=[*many, "Subject"])
        .execute()
    )
    assert [h["name"] for h in meta["payload"]["headers"]] == ["Subject"]
    assert emu.stats()["by_method"]["gmail.users.messages.get"] == before + 1


def test_raw_override_request(base_url, emu):
    token = emu.mailbox(ALICE).access_token
    req = urllib.request.Request(
        base_url + "gmail/v1/users/me/messages",
        data=b"maxResults=2&labelIds=INBOX",
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "x-http-method-override": "GET",
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    with urllib.request.urlopen(req) as resp:
        assert len(json.load(resp)["messages"]) == 2


def test_media_upload_insert(base_url, emu):
    """The /upload form of insert (the client itself builds an https URL for it, so raw HTTP)."""
    raw = b"From: a@example.org\r\nSubject: upload\r\n\r\nuploaded body\r\n"
    req = urllib.request.Request(
        base_url + "upload/gmail/v1/users/me/messages?uploadType=media",
        data=raw,
        method="POST",
        headers={
            "Authorization": f"Bearer {emu.mailbox(ALICE).access_token}",
            "Content-Type": "message/rfc822",
        },
    )
    with urllib.request.urlopen(req) as resp:
        msg = json.load(resp)
    assert emu.snapshot(ALICE)["messages"][msg["id"]]["labelIds"] == []
