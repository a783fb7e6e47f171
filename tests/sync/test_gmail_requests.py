"""The requests of a fetch batch are copies of one discovery-built template per method
and format (mailsync.gmail.GmailClient._get, issue 13): each must be the very request
discovery would build, and a fetch through the emulator must serve what it asked."""

from __future__ import annotations

import pytest

from mailsync import gmail

pytestmark = pytest.mark.django_db

FIELDS = ("uri", "method", "body", "headers", "methodId")


def discovery_request(client: gmail.GmailClient, collection: str, gmail_id: str, fmt: str):
    resource = getattr(client.service.users(), collection)()
    return resource.get(userId="me", id=gmail_id, format=fmt)


@pytest.mark.parametrize(
    ("collection", "fmt"),
    [("messages", "full"), ("messages", "raw"), ("messages", "minimal"), ("threads", "full")],
)
def test_a_template_request_is_the_request_discovery_builds(connected_mailbox, collection, fmt):
    user, _ = connected_mailbox(count=5)
    client = gmail.GmailClient(user.pk)
    for gmail_id in ("18c2f0a9b1d4e5f6", "Abc_-09", "x"):  # the second call reuses the template
        built = client._get(collection, gmail_id, fmt)
        expected = discovery_request(client, collection, gmail_id, fmt)
        assert {f: getattr(built, f) for f in FIELDS} == {f: getattr(expected, f) for f in FIELDS}
        assert built.http is expected.http
        assert type(built.postproc.__self__) is type(expected.postproc.__self__)
    assert set(client._templates) == {(collection, fmt)}


def test_an_id_discovery_must_quote_goes_through_discovery(connected_mailbox):
    user, _ = connected_mailbox(count=5)
    client = gmail.GmailClient(user.pk)
    built = client._get("messages", "a/b c%", "full")
    assert "/messages/a%2Fb%20c%25?" in built.uri
    assert built.uri == discovery_request(client, "messages", "a/b c%", "full").uri
    assert client._templates == {}


def test_a_fetch_of_messages_and_threads_serves_each_under_its_id(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=40)
    snapshot = emulator.snapshot(user.email)
    by_thread: dict[str, list[str]] = {}
    for gmail_id, message in snapshot["messages"].items():
        by_thread.setdefault(message["threadId"], []).append(gmail_id)
    thread_ids = [t for t, ids in by_thread.items() if len(ids) > 1][:2]
    message_ids = [ids[0] for t, ids in by_thread.items() if t not in thread_ids][:5]
    probe_id = next(m for m in snapshot["messages"] if m not in message_ids)
    fetched = gmail.GmailClient(user.pk).fetch(message_ids, thread_ids, probe_id=probe_id)
    assert {k: v["id"] for k, v in fetched.messages.found.items()} == {m: m for m in message_ids}
    assert {k: v["id"] for k, v in fetched.threads.found.items()} == {t: t for t in thread_ids}
    for thread_id in thread_ids:
        served = {m["id"] for m in fetched.threads.found[thread_id]["messages"]}
        assert served == set(by_thread[thread_id])
    assert fetched.messages.probe_ok is True
    assert probe_id not in fetched.messages.found  # asked with format=minimal, not kept
