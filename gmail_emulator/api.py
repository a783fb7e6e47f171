"""Gmail API v1 methods: one small function per discovery method, plus the route table.

Handlers get a `Call` (mailbox, query parameters, JSON body, path arguments) and return
(status, JSON object or None). Authentication, quota, faults and latency are applied
before a handler runs (see emulator.Emulator.handle_gmail).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import random
import re
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

from . import generator, mime, search
from .errors import ApiError, bad_request, not_found
from .mailbox import (
    NUM_MASK,
    TIMELINE_KEEP_S,
    HistoryRecord,
    Mailbox,
    Msg,
    Watch,
    intern_labels,
)

if TYPE_CHECKING:
    from .emulator import Emulator

Result = tuple[int, Any]


@dataclass
class Call:
    emu: Emulator
    mb: Mailbox
    params: dict[str, list[str]]
    body: dict[str, Any]
    args: dict[str, str]

    def p(self, name: str, default: str | None = None) -> str | None:
        values = self.params.get(name)
        return values[0] if values else default

    def plist(self, name: str) -> list[str]:
        out: list[str] = []
        for value in self.params.get(name, []):
            out.extend(v for v in value.split(",") if v) if name == "historyTypes" else out.append(value)
        return out

    def pint(self, name: str, default: int, maximum: int) -> int:
        raw = self.p(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise bad_request(f"Invalid value for {name}: {raw}") from None
        if value < 0:
            raise bad_request(f"Invalid value for {name}: {raw}")
        return min(value, maximum) or default

    def pbool(self, name: str) -> bool:
        return (self.p(name) or "false").lower() == "true"


# ----- page tokens -----------------------------------------------------------------
def _token(prefix: str, value: int) -> str:
    return base64.urlsafe_b64encode(f"{prefix}:{value}".encode()).decode().rstrip("=")


def _untoken(prefix: str, token: str | None) -> int | None:
    if not token:
        return None
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        kind, value = text.split(":", 1)
        if kind != prefix:
            raise ValueError
        return int(value)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise bad_request("Invalid pageToken") from None


# ----- message resources --------------------------------------------------------------
def render(mb: Mailbox, msg: Msg, with_payload: bool = False) -> generator.Rendered:
    """Raw bytes, snippet and (generated mail, if asked) payload tree; records sizeEstimate."""
    if msg.raw is not None:
        rendered = generator.Rendered(msg.raw, mime.snippet(msg.raw), None)
    else:
        with mb.lock:
            rendered = generator.render_full(mb, msg, with_payload)
    msg.size = len(rendered.raw)
    return rendered


def raw_and_snippet(mb: Mailbox, msg: Msg) -> tuple[bytes, str]:
    rendered = render(mb, msg)
    return rendered.raw, rendered.snippet


def short(mb: Mailbox, msg: Msg) -> dict[str, Any]:
    return {"id": mb.msg_id(msg.num), "threadId": mb.msg_id(msg.tid), "labelIds": list(msg.labels)}


def message_resource(mb: Mailbox, msg: Msg, fmt: str, headers: list[str] | None = None) -> dict[str, Any]:
    raw, snip, tree = render(mb, msg, fmt in ("full", "metadata"))
    out: dict[str, Any] = {
        "id": mb.msg_id(msg.num), "threadId": mb.msg_id(msg.tid), "labelIds": list(msg.labels),
        "snippet": snip, "sizeEstimate": len(raw), "historyId": str(msg.hist),
        "internalDate": str(msg.date),
    }
    if fmt == "full":
        out["payload"] = tree if tree is not None else mime.payload(raw, msg.num)
    elif fmt == "metadata":
        out["payload"] = mime.metadata_payload(raw, headers) if tree is None \
            else mime.metadata_of_tree(tree, headers)
    elif fmt == "raw":
        out["raw"] = mime.b64url(raw)
    return out


def _format(call: Call, allowed: tuple[str, ...]) -> str:
    fmt = (call.p("format") or "full").lower()
    if fmt not in allowed:
        raise bad_request(f"Invalid format: {fmt}")
    return fmt


# ----- users ---------------------------------------------------------------------------
def get_profile(call: Call) -> Result:
    mb = call.mb
    with mb.lock:
        return 200, {"emailAddress": mb.email, "messagesTotal": len(mb.msgs),
                     "threadsTotal": len(mb.threads), "historyId": str(mb.history_id)}


def watch(call: Call) -> Result:
    topic = call.body.get("topicName")
    if not topic or not str(topic).startswith("projects/"):
        raise bad_request("Invalid topicName does not match projects/<project>/topics/*")
    mb = call.mb
    expiration = int(time.time() * 1000) + 7 * 86_400_000
    with mb.lock:
        mb.watch = Watch(topic, list(call.body.get("labelIds") or []), expiration)
        return 200, {"historyId": str(mb.history_id), "expiration": str(expiration)}


def stop(call: Call) -> Result:
    with call.mb.lock:
        call.mb.watch = None
    return 204, None


# ----- labels --------------------------------------------------------------------------
def labels_list(call: Call) -> Result:
    with call.mb.lock:
        return 200, {"labels": [label.resource() for label in call.mb.labels.values()]}


def labels_get(call: Call) -> Result:
    mb = call.mb
    with mb.lock:
        label = mb.labels.get(call.args["id"])
        if label is None:
            raise not_found()
        out = label.resource()
        out.update(mb.label_stats(label.id))
        return 200, out


def labels_create(call: Call) -> Result:
    body = call.body
    label = call.mb.create_label(body.get("name", ""), body.get("color"),
                                 body.get("labelListVisibility"), body.get("messageListVisibility"))
    return 200, label.resource()


def labels_patch(call: Call) -> Result:
    return 200, call.mb.update_label(call.args["id"], call.body).resource()


def labels_update(call: Call) -> Result:
    return 200, call.mb.update_label(call.args["id"], call.body, replace=True).resource()


def labels_delete(call: Call) -> Result:
    call.mb.delete_label(call.args["id"])
    return 204, None


# ----- messages --------------------------------------------------------------------------
def _filter(call: Call) -> tuple[Any, list[str]]:
    mb = call.mb
    label_ids = call.plist("labelIds")
    preds, wants = search.build(mb, call.p("q") or "") if call.p("q") else ([], False)
    exclude = set() if (call.pbool("includeSpamTrash") or wants) else {"SPAM", "TRASH"}
    exclude -= set(label_ids)
    required = set(label_ids)

    def match(msg: Msg) -> bool:
        labels = msg.labels
        if exclude and not exclude.isdisjoint(labels):
            return False
        if required and not required.issubset(labels):
            return False
        return all(pred(msg) for pred in preds)

    return match, label_ids


def _estimate(call: Call, label_ids: list[str]) -> int:
    mb = call.mb
    counts = mb.label_counts
    if label_ids:
        return min(counts.get(lid, 0) for lid in label_ids)
    total = len(mb.msgs)
    if not call.pbool("includeSpamTrash"):
        total -= counts.get("SPAM", 0) + counts.get("TRASH", 0)
    return max(total, 0)


def messages_list(call: Call) -> Result:
    mb = call.mb
    cfg = call.emu.config
    limit = call.pint("maxResults", 100, 500)
    # Quirk: offsets into the live order (skip or repeat a message when mail arrives or
    # leaves between pages); otherwise the key of the last message (stable under changes).
    kind = "o" if cfg.list_offset_page_tokens else "m"
    position = _untoken(kind, call.p("pageToken"))
    match, label_ids = _filter(call)
    with mb.lock:
        keys = mb.list_keys(cfg.list_inversion_rate)
        page = _page_by_offset if kind == "o" else _page_by_key
        items, next_token = page(mb, keys, position, limit, match)
        estimate = _estimate(call, label_ids)
    out: dict[str, Any] = {}
    if items:
        out["messages"] = items
    if next_token:
        out["nextPageToken"] = next_token
    elif position is None:
        estimate = len(items)
    out["resultSizeEstimate"] = estimate if call.p("q") is None or not next_token else max(
        len(items), estimate)
    return 200, out


Page = tuple[list[dict[str, str]], str | None]


def _page_by_key(mb: Mailbox, keys: list[int], before: int | None, limit: int,
                 match: Any) -> Page:
    """A page of the index below key `before`; the token is the last listed key."""
    items: list[dict[str, str]] = []
    pos = len(keys) if before is None else bisect.bisect_left(keys, before)
    last_key = 0
    while pos > 0:
        pos -= 1
        key = keys[pos]
        msg = mb.msgs.get(key & NUM_MASK)
        if msg is None or not match(msg):
            continue
        if len(items) == limit:
            return items, _token("m", last_key)
        items.append({"id": mb.msg_id(msg.num), "threadId": mb.msg_id(msg.tid)})
        last_key = key
    return items, None


def _page_by_offset(mb: Mailbox, keys: list[int], start: int | None, limit: int,
                    match: Any) -> Page:
    """A page starting `start` entries below the newest one of the index as it is now."""
    items: list[dict[str, str]] = []
    count = len(keys)
    for offset in range(start or 0, count):
        msg = mb.msgs.get(keys[count - 1 - offset] & NUM_MASK)
        if msg is None or not match(msg):
            continue
        if len(items) == limit:
            return items, _token("o", offset)
        items.append({"id": mb.msg_id(msg.num), "threadId": mb.msg_id(msg.tid)})
    return items, None


def messages_get(call: Call) -> Result:
    fmt = _format(call, ("minimal", "metadata", "full", "raw"))
    mb = call.mb
    with mb.lock:
        msg = mb.get_msg(call.args["id"])
    if fmt == "raw" and "CHAT" in msg.labels and call.emu.config.chat_raw_refused:
        # Quirk: chats have no raw form (GYB#84); Google's generic answer to a bad request.
        raise bad_request("Request contains an invalid argument.")
    out = message_resource(mb, msg, fmt, call.plist("metadataHeaders"))
    if fmt != "minimal":  # ids and labels only: a check that it exists, not a download
        call.emu.count_fetch(out["id"])
    return 200, out


def attachments_get(call: Call) -> Result:
    mb = call.mb
    with mb.lock:
        msg = mb.get_msg(call.args["messageId"])
    parsed = mime.parse_attachment_id(call.args["id"])
    if parsed is None or parsed[0] != msg.num:
        raise bad_request("Invalid attachment token")
    raw, _ = raw_and_snippet(mb, msg)
    data = mime.find_part(raw, parsed[1])
    if data is None:
        raise not_found()
    return 200, {"size": len(data), "data": mime.b64url(data)}


def _decode_raw(value: Any) -> bytes:
    if not isinstance(value, str) or not value:
        raise bad_request("'raw' RFC822 payload message string or uploading message via /upload/* "
                          "URL required", "invalidArgument")
    try:
        cleaned = value.replace("+", "-").replace("/", "_").strip()
        return base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (ValueError, binascii.Error):
        raise bad_request("Invalid raw message: not base64url") from None


def thread_for_raw(mb: Mailbox, raw: bytes) -> int | None:
    """The thread a raw message belongs to via In-Reply-To/References, if any."""
    refs = " ".join(filter(None, (mime.header_value(raw, "References"),
                                  mime.header_value(raw, "In-Reply-To"))))
    for ref in reversed(re.findall(r"<[^>]+>", refs)):
        num = mb.msgid_index.get(ref)
        if num is None:
            gen = re.fullmatch(rf"<gen\.{mb.seed}\.(\d+)@emulator\.invalid>", ref)
            num = int(gen[1]) if gen else None
        if num is not None and num in mb.msgs:
            return mb.msgs[num].tid
    return None


def insert_raw(mb: Mailbox, raw: bytes, label_ids: list[str], date_ms: int | None = None) -> Msg:
    """Index a raw message (insert, mbox, import); writes a messagesAdded record."""
    with mb.lock:
        for lid in label_ids:
            if lid not in mb.labels:
                raise bad_request(f"Invalid label: {lid}")
        num = mb.next_num
        if num > NUM_MASK:
            raise ApiError(403, "quotaExceeded", "Mailbox is full")
        mb.next_num += 1
        tid = thread_for_raw(mb, raw)
        msg = Msg(num, num if tid is None else tid, date_ms or int(time.time() * 1000),
                  intern_labels(label_ids), 0, raw)
        message_id = mime.header_value(raw, "Message-ID")
        if message_id:
            mb.msgid_index[message_id.strip()] = num
        mb.add_msg(msg)
        return msg


def insert_generated(mb: Mailbox, label_ids: list[str], rng: random.Random) -> Msg:
    with mb.lock:
        for lid in label_ids:
            if lid not in mb.labels:
                raise bad_request(f"Invalid label: {lid}")
        date = max(int(time.time() * 1000), (mb.keys[-1] >> 24) + 1 if mb.keys else 0)
        msg = generator.new_generated_message(mb, rng, date, tuple(label_ids))
        mb.add_msg(msg)
        return msg


def _date_from_header(raw: bytes) -> int | None:
    value = mime.header_value(raw, "Date")
    try:
        return int(parsedate_to_datetime(value).timestamp() * 1000) if value else None
    except (TypeError, ValueError):
        return None


def messages_insert(call: Call) -> Result:
    raw = call.body.get("_raw_bytes") or _decode_raw(call.body.get("raw"))
    date = _date_from_header(raw) if call.p("internalDateSource") == "dateHeader" else None
    msg = insert_raw(call.mb, raw, list(call.body.get("labelIds") or []), date)
    return 200, short(call.mb, msg)


def messages_modify(call: Call) -> Result:
    msg = call.mb.modify(call.args["id"], call.body.get("addLabelIds") or [],
                         call.body.get("removeLabelIds") or [])
    return 200, short(call.mb, msg)


def messages_batch_modify(call: Call) -> Result:
    ids = call.body.get("ids") or []
    call.mb.batch_modify(list(ids), call.body.get("addLabelIds") or [],
                         call.body.get("removeLabelIds") or [])
    return 204, None


def messages_batch_delete(call: Call) -> Result:
    mb = call.mb
    with mb.lock:
        for msg_id in call.body.get("ids") or []:
            if mb.num_of(msg_id) in mb.msgs:
                mb.delete(msg_id)
    return 204, None


def messages_trash(call: Call) -> Result:
    return 200, short(call.mb, call.mb.trash(call.args["id"]))


def messages_untrash(call: Call) -> Result:
    return 200, short(call.mb, call.mb.untrash(call.args["id"]))


def messages_delete(call: Call) -> Result:
    call.mb.delete(call.args["id"])
    return 204, None


# ----- threads ----------------------------------------------------------------------------
def threads_list(call: Call) -> Result:
    mb = call.mb
    limit = call.pint("maxResults", 100, 500)
    before = _untoken("t", call.p("pageToken"))
    match, label_ids = _filter(call)
    picked: list[Msg] = []
    next_token = None
    with mb.lock:
        last_key = None
        for msg in mb.iter_newest(before):
            if not match(msg):
                continue
            members = mb.threads.get(msg.tid, ())
            newest = next((mb.msgs[n] for n in reversed(members) if n in mb.msgs
                           and match(mb.msgs[n])), None)
            if newest is not msg:
                continue
            if len(picked) == limit:
                next_token = _token("t", last_key)
                break
            picked.append(msg)
            last_key = msg.key
        estimate = _estimate(call, label_ids)
    threads = []
    for msg in picked:
        _, snip = raw_and_snippet(mb, msg)
        with mb.lock:
            hist = max((mb.msgs[n].hist for n in mb.threads.get(msg.tid, ()) if n in mb.msgs),
                       default=msg.hist)
        threads.append({"id": mb.msg_id(msg.tid), "snippet": snip, "historyId": str(hist)})
    out: dict[str, Any] = {}
    if threads:
        out["threads"] = threads
    if next_token:
        out["nextPageToken"] = next_token
    out["resultSizeEstimate"] = estimate if next_token or before else len(threads)
    return 200, out


def threads_get(call: Call) -> Result:
    fmt = _format(call, ("minimal", "metadata", "full"))
    mb = call.mb
    tid = mb.num_of(call.args["id"])
    with mb.lock:
        members = [mb.msgs[n] for n in mb.threads.get(tid, ()) if n in mb.msgs]
    if not members:
        raise not_found()
    headers = call.plist("metadataHeaders")
    messages = [message_resource(mb, msg, fmt, headers) for msg in members]
    for message in messages:  # a thread delivers each of its messages: each is a fetch
        if fmt != "minimal":
            call.emu.count_fetch(message["id"])
    return 200, {"id": mb.msg_id(tid), "historyId": str(max(m.hist for m in members)),
                 "messages": messages}


# ----- history ----------------------------------------------------------------------------
HISTORY_TYPES = {"messageAdded", "messageDeleted", "labelAdded", "labelRemoved"}


def _history_view(mb: Mailbox, rec: HistoryRecord, types: set[str] | None,
                  label_id: str | None) -> dict[str, Any] | None:
    if label_id and label_id not in rec.labels_after and label_id not in rec.added \
            and label_id not in rec.removed:
        return None
    wanted = rec.types() if types is None else rec.types() & types
    if not wanted:
        return None
    ident = {"id": mb.msg_id(rec.num), "threadId": mb.msg_id(rec.tid)}
    full = dict(ident, labelIds=list(rec.labels_after))
    out: dict[str, Any] = {"id": str(rec.id), "messages": [ident]}
    if "messageAdded" in wanted:
        out["messagesAdded"] = [{"message": full}]
    if "messageDeleted" in wanted:
        out["messagesDeleted"] = [{"message": full}]
    if "labelAdded" in wanted:
        out["labelsAdded"] = [{"message": full, "labelIds": list(rec.added)}]
    if "labelRemoved" in wanted:
        out["labelsRemoved"] = [{"message": full, "labelIds": list(rec.removed)}]
    return out


def history_list(call: Call) -> Result:
    mb = call.mb
    raw_start = call.p("startHistoryId")
    if not raw_start:
        raise bad_request("Missing required parameter: startHistoryId")
    try:
        start = int(raw_start)
    except ValueError:
        raise bad_request(f"Invalid startHistoryId: {raw_start}") from None
    types_list = call.plist("historyTypes")
    unknown = set(types_list) - HISTORY_TYPES
    if unknown:
        raise bad_request(f"Invalid historyTypes: {sorted(unknown)}")
    types = set(types_list) or None
    label_id = call.p("labelId")
    limit = call.pint("maxResults", 100, 500)
    token = _untoken("h", call.p("pageToken"))
    cfg = call.emu.config
    mb.prune_history(cfg.history_retention_s)
    with mb.lock:
        fresh_s = min(cfg.fresh_history_404_s, TIMELINE_KEEP_S)
        if fresh_s > 0 and start > mb.history_id_at(time.time() - fresh_s):
            raise not_found()  # quirk: an id younger than that is not found yet (lieer#301)
        position = start if token is None else max(start, token)
        idx = mb.history_after(position)
        end = _visible_end(mb, idx, cfg.history_lag_s)
        remaining = end - idx
        forced = mb.forced_empty_pages > 0
        if forced or (remaining and call.emu.rng.random() < cfg.empty_history_page_rate):
            if forced:
                mb.forced_empty_pages -= 1
            return 200, {"nextPageToken": _token("h", position), "historyId": str(mb.history_id)}
        records: list[dict[str, Any]] = []
        next_token = None
        history = mb.history
        for i in range(idx, end):
            view = _history_view(mb, history[i], types, label_id)
            if view is None:
                continue
            if len(records) == limit:
                next_token = _token("h", int(records[-1]["id"]))
                break
            records.append(view)
        out: dict[str, Any] = {}
        if records:
            out["history"] = records
        if next_token:
            out["nextPageToken"] = next_token
        out["historyId"] = str(mb.history_id)
        return 200, out


def _visible_end(mb: Mailbox, idx: int, lag_s: float) -> int:
    """End of the records history.list shows: with a lag (quirk), the newest records are
    not shown yet although the answer's historyId (the mailbox's) already counts them."""
    end = len(mb.history)
    if lag_s > 0:
        cutoff = time.time() - lag_s
        while end > idx and mb.history[end - 1].ts > cutoff:
            end -= 1
    return end


def not_implemented(call: Call) -> Result:
    raise ApiError(501, "notImplemented", "This method is not implemented by the emulator.")


# ----- routes -------------------------------------------------------------------------------
_U = r"^gmail/v1/users/(?P<user>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], str, Any]] = [
    (m, re.compile(_U + p + "$"), mid, fn) for m, p, mid, fn in [
        ("GET", "/profile", "gmail.users.getProfile", get_profile),
        ("POST", "/watch", "gmail.users.watch", watch),
        ("POST", "/stop", "gmail.users.stop", stop),
        ("GET", "/labels", "gmail.users.labels.list", labels_list),
        ("POST", "/labels", "gmail.users.labels.create", labels_create),
        ("GET", "/labels/(?P<id>[^/]+)", "gmail.users.labels.get", labels_get),
        ("PATCH", "/labels/(?P<id>[^/]+)", "gmail.users.labels.patch", labels_patch),
        ("PUT", "/labels/(?P<id>[^/]+)", "gmail.users.labels.update", labels_update),
        ("DELETE", "/labels/(?P<id>[^/]+)", "gmail.users.labels.delete", labels_delete),
        ("GET", "/messages", "gmail.users.messages.list", messages_list),
        ("POST", "/messages", "gmail.users.messages.insert", messages_insert),
        ("POST", "/messages/batchModify", "gmail.users.messages.batchModify", messages_batch_modify),
        ("POST", "/messages/batchDelete", "gmail.users.messages.batchDelete", messages_batch_delete),
        ("POST", "/messages/import", "gmail.users.messages.import", messages_insert),
        ("POST", "/messages/send", "gmail.users.messages.send", not_implemented),
        ("GET", "/messages/(?P<messageId>[^/]+)/attachments/(?P<id>[^/]+)",
         "gmail.users.messages.attachments.get", attachments_get),
        ("GET", "/messages/(?P<id>[^/]+)", "gmail.users.messages.get", messages_get),
        ("DELETE", "/messages/(?P<id>[^/]+)", "gmail.users.messages.delete", messages_delete),
        ("POST", "/messages/(?P<id>[^/]+)/modify", "gmail.users.messages.modify", messages_modify),
        ("POST", "/messages/(?P<id>[^/]+)/trash", "gmail.users.messages.trash", messages_trash),
        ("POST", "/messages/(?P<id>[^/]+)/untrash", "gmail.users.messages.untrash", messages_untrash),
        ("GET", "/threads", "gmail.users.threads.list", threads_list),
        ("GET", "/threads/(?P<id>[^/]+)", "gmail.users.threads.get", threads_get),
        ("GET", "/history", "gmail.users.history.list", history_list),
    ]
]
# The media-upload form of insert/import: /upload/gmail/v1/users/{userId}/messages.
UPLOAD_ROUTE = re.compile(r"^upload/gmail/v1/users/(?P<user>[^/]+)/messages(?P<kind>/import)?$")


def route(method: str, path: str) -> tuple[str, Any, dict[str, str]] | None:
    """(method id, handler, path args) for a Gmail path, or None if no method matches."""
    for verb, pattern, method_id, fn in ROUTES:
        match = pattern.match(path)
        if match and verb == method:
            return method_id, fn, match.groupdict()
    if path.startswith("gmail/v1/users/"):
        for _verb, pattern, _mid, _fn in ROUTES:
            if pattern.match(path):
                raise ApiError(405, "methodNotAllowed", f"Method {method} not allowed")
    return None
