"""Load an mbox (e.g. Google Takeout) into a mailbox, honouring X-Gmail-Labels."""

from __future__ import annotations

import mailbox as stdlib_mailbox
import re
from email.utils import parsedate_to_datetime

from . import mime
from .mailbox import Mailbox, Msg, intern_labels

_SYSTEM = {
    "inbox": "INBOX", "sent": "SENT", "sent mail": "SENT", "unread": "UNREAD",
    "starred": "STARRED", "important": "IMPORTANT", "trash": "TRASH", "spam": "SPAM",
    "draft": "DRAFT", "drafts": "DRAFT", "chat": "CHAT", "chats": "CHAT",
    "category personal": "CATEGORY_PERSONAL", "category social": "CATEGORY_SOCIAL",
    "category promotions": "CATEGORY_PROMOTIONS", "category updates": "CATEGORY_UPDATES",
    "category forums": "CATEGORY_FORUMS",
}
_SKIP = {"opened", "archived"}


def _labels(mb: Mailbox, header: str | None) -> list[str]:
    if header is None:
        return ["INBOX"]
    out = []
    for name in (n.strip() for n in header.split(",")):
        if not name or name.lower() in _SKIP:
            continue
        lid = _SYSTEM.get(name.lower())
        if lid is None:
            label = mb.label_by_name(name) or mb.create_label(name)
            lid = label.id
        out.append(lid)
    return out


def load_mbox(mb: Mailbox, path: str) -> int:
    """Add every message of the mbox at `path` (no history records: initial state)."""
    box = stdlib_mailbox.mbox(path, create=False)
    thrids: dict[str, int] = {}
    count = 0
    with mb.lock:
        for key in box.iterkeys():
            raw = box.get_bytes(key)
            raw = re.sub(rb"(?<!\r)\n", b"\r\n", raw)
            num = mb.next_num
            mb.next_num += 1
            date = None
            value = mime.header_value(raw, "Date")
            try:
                date = int(parsedate_to_datetime(value).timestamp() * 1000) if value else None
            except (TypeError, ValueError):
                date = None
            thrid = mime.header_value(raw, "X-GM-THRID")
            tid = thrids.get(thrid) if thrid else None
            if tid is None:
                from .api import thread_for_raw

                tid = thread_for_raw(mb, raw)
            if tid is None:
                tid = num
            if thrid:
                thrids.setdefault(thrid, tid)
            labels = _labels(mb, mime.header_value(raw, "X-Gmail-Labels"))
            msg = Msg(num, tid, date or 0, intern_labels(labels), mb.history_id, raw)
            message_id = mime.header_value(raw, "Message-ID")
            if message_id:
                mb.msgid_index[message_id.strip()] = num
            mb.add_msg(msg, record=False)
            count += 1
        mb.history_id += 1
        mb.history_floor = mb.history_id
    return count
