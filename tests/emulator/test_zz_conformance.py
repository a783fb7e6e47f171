"""Every JSON answer must match the discovery document's schemas (named zz to run last).

Unknown fields fail; types must match; int64/uint64 must be decimal strings and `byte`
fields valid base64url. One test drives every implemented method itself, the other
checks everything the rest of the session recorded.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import googleapiclient
import pytest

from .conftest import ALICE, RECORDED

DISCOVERY = json.loads(
    (
        Path(googleapiclient.__file__).parent / "discovery_cache" / "documents" / "gmail.v1.json"
    ).read_text()
)
SCHEMAS = DISCOVERY["schemas"]


def _methods(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for resource in resources.values():
        for method in resource.get("methods", {}).values():
            out[method["id"]] = method
        out.update(_methods(resource.get("resources", {})))
    return out


METHODS = _methods(DISCOVERY["resources"])


def validate(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    if "$ref" in schema:
        schema = SCHEMAS[schema["$ref"]]
    kind = schema.get("type")
    errors: list[str] = []
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: expected object, got {type(value).__name__}"]
        props = schema.get("properties", {})
        for key, item in value.items():
            if key in props:
                errors += validate(item, props[key], f"{path}.{key}")
            elif "additionalProperties" in schema:
                errors += validate(item, schema["additionalProperties"], f"{path}.{key}")
            else:
                errors.append(f"{path}: unknown field {key!r}")
    elif kind == "array":
        if not isinstance(value, list):
            return [f"{path}: expected array"]
        for i, item in enumerate(value):
            errors += validate(item, schema["items"], f"{path}[{i}]")
    elif kind == "string":
        if not isinstance(value, str):
            return [f"{path}: expected string, got {type(value).__name__}"]
        fmt = schema.get("format")
        if fmt in ("int64", "uint64") and not value.lstrip("-").isdigit():
            errors.append(f"{path}: {fmt} string is not a number: {value!r}")
        if fmt == "byte":
            try:
                base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            except ValueError:
                errors.append(f"{path}: not base64url")
    elif kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{path}: expected integer, got {type(value).__name__}")
    elif kind == "boolean" and not isinstance(value, bool):
        errors.append(f"{path}: expected boolean")
    return errors


def check(recorded: list[tuple[str, Any]]) -> list[str]:
    errors = []
    for method_id, body in recorded:
        ref = METHODS.get(method_id, {}).get("response")
        if ref is None:
            errors.append(f"{method_id}: answered a body but discovery declares none")
            continue
        errors += [f"{method_id}: {e}" for e in validate(body, ref)]
    return errors


def test_validator_rejects_bad_shapes():
    assert validate({"id": "1", "bogus": 1}, {"$ref": "Message"}) == ["$: unknown field 'bogus'"]
    assert validate({"historyId": 5}, {"$ref": "Message"})
    assert validate({"sizeEstimate": "5"}, {"$ref": "Message"})
    assert validate({"internalDate": "abc"}, {"$ref": "Message"})


def test_every_method_conforms(emu, gmail, run_batch):
    emu.responses.clear()
    users = gmail.users()
    start = users.getProfile(userId="me").execute()["historyId"]
    users.watch(userId="me", body={"topicName": "projects/p/topics/t"}).execute()
    users.stop(userId="me").execute()
    labels = users.labels()
    for label in labels.list(userId="me").execute()["labels"]:
        labels.get(userId="me", id=label["id"]).execute()
    created = labels.create(userId="me", body={"name": "Conf"}).execute()
    labels.patch(userId="me", id=created["id"], body={"name": "Conf2"}).execute()
    labels.update(userId="me", id=created["id"], body={"name": "Conf3"}).execute()
    messages = users.messages()
    listed = messages.list(userId="me", maxResults=500, includeSpamTrash=True).execute()["messages"]
    for ref in listed:
        for fmt in ("full", "metadata", "minimal", "raw"):
            messages.get(userId="me", id=ref["id"], format=fmt).execute()
    mb = emu.mailbox(ALICE)
    for msg in mb.msgs.values():
        payload = messages.get(userId="me", id=mb.msg_id(msg.num)).execute()["payload"]
        stack = [payload]
        while stack:
            part = stack.pop()
            stack += part.get("parts", [])
            if "attachmentId" in part["body"]:
                messages.attachments().get(
                    userId="me", messageId=mb.msg_id(msg.num), id=part["body"]["attachmentId"]
                ).execute()
    raw = base64.urlsafe_b64encode(b"Subject: conf\r\n\r\nbody\r\n").decode()
    new = messages.insert(userId="me", body={"raw": raw, "labelIds": ["INBOX"]}).execute()
    messages.modify(userId="me", id=new["id"], body={"addLabelIds": [created["id"]]}).execute()
    messages.batchModify(
        userId="me", body={"ids": [new["id"]], "addLabelIds": ["STARRED"]}
    ).execute()
    messages.trash(userId="me", id=new["id"]).execute()
    messages.untrash(userId="me", id=new["id"]).execute()
    labels.delete(userId="me", id=created["id"]).execute()
    messages.delete(userId="me", id=new["id"]).execute()
    threads = users.threads()
    for thread in threads.list(userId="me", maxResults=50).execute()["threads"]:
        for fmt in ("full", "metadata", "minimal"):
            threads.get(userId="me", id=thread["id"], format=fmt).execute()
    users.history().list(userId="me", startHistoryId=start).execute()
    run_batch([messages.get(userId="me", id=ref["id"]) for ref in listed[:20]])
    recorded = list(emu.responses)
    covered = {method_id for method_id, _ in recorded}
    assert covered >= {
        "gmail.users.getProfile",
        "gmail.users.watch",
        "gmail.users.labels.list",
        "gmail.users.labels.get",
        "gmail.users.labels.create",
        "gmail.users.labels.patch",
        "gmail.users.labels.update",
        "gmail.users.messages.list",
        "gmail.users.messages.get",
        "gmail.users.messages.attachments.get",
        "gmail.users.messages.insert",
        "gmail.users.messages.modify",
        "gmail.users.messages.trash",
        "gmail.users.messages.untrash",
        "gmail.users.threads.list",
        "gmail.users.threads.get",
        "gmail.users.history.list",
    }
    assert check(recorded) == []


def test_recorded_session_responses_conform():
    if not RECORDED:
        pytest.skip("no other emulator tests ran in this session")
    assert check(RECORDED) == []
