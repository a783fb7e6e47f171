"""The subset of Gmail's `q` search syntax the emulator understands.

Unsupported terms are refused with 400 naming the term, so a test never silently gets
a wrong result from a query the emulator only pretends to run.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Callable
from datetime import UTC, datetime

from .errors import bad_request
from .mailbox import Mailbox, Msg

SUPPORTED = "in:, label:, is:, category:, after:, before:, newer_than:, older_than:"
_IN = {"inbox": "INBOX", "sent": "SENT", "spam": "SPAM", "trash": "TRASH",
       "starred": "STARRED", "important": "IMPORTANT", "unread": "UNREAD",
       "drafts": "DRAFT", "draft": "DRAFT", "chats": "CHAT", "chat": "CHAT"}
_IS = {"unread": ("UNREAD", True), "read": ("UNREAD", False), "starred": ("STARRED", True),
       "important": ("IMPORTANT", True)}
_CATEGORY = {"primary": "CATEGORY_PERSONAL", "personal": "CATEGORY_PERSONAL",
             "social": "CATEGORY_SOCIAL", "promotions": "CATEGORY_PROMOTIONS",
             "updates": "CATEGORY_UPDATES", "forums": "CATEGORY_FORUMS"}
_UNITS = {"d": 86400, "m": 30 * 86400, "y": 365 * 86400}

Predicate = Callable[[Msg], bool]


def _has(lid: str) -> Predicate:
    return lambda m: lid in m.labels


def _negate(pred: Predicate) -> Predicate:
    return lambda m: not pred(m)


def _since(ms: int) -> Predicate:
    return lambda m: m.date >= ms


def _until(ms: int) -> Predicate:
    return lambda m: m.date < ms


def _norm(name: str) -> str:
    return re.sub(r"[\s/]+", "-", name.strip().lower())


def _date_ms(value: str, term: str) -> int:
    if value.isdigit():
        return int(value) * 1000
    for fmt in ("%Y/%m/%d", "%Y-%m-%d", "%m/%d/%Y"):
        try:
            return int(datetime.strptime(value, fmt).replace(tzinfo=UTC).timestamp() * 1000)
        except ValueError:
            continue
    raise bad_request(f"Invalid date in search term: {term}")


def build(mb: Mailbox, q: str) -> tuple[list[Predicate], bool]:
    """Predicates for `q` and whether it asks for spam/trash explicitly."""
    preds: list[Predicate] = []
    wants_spam_trash = False
    try:
        tokens = shlex.split(q)
    except ValueError:
        raise bad_request(f"Invalid search query: {q}") from None
    for token in tokens:
        negate = token.startswith("-")
        term = token[1:] if negate else token
        key, sep, value = term.partition(":")
        key = key.lower()
        if not sep or not value:
            raise bad_request(f"Unsupported search term in q: '{token}' (the emulator supports "
                              f"{SUPPORTED})")
        pred: Predicate
        if key == "in" and value.lower() == "anywhere":
            wants_spam_trash = True
            continue
        if key in ("in", "label"):
            lid = _IN.get(value.lower())
            if lid is None:
                wanted = _norm(value)
                label = next((lab for lab in mb.labels.values() if _norm(lab.name) == wanted
                              or lab.id.lower() == value.lower()), None)
                lid = label.id if label else "\0no-such-label"
            if lid in ("SPAM", "TRASH") and not negate:
                wants_spam_trash = True
            pred = _has(lid)
        elif key == "is" and value.lower() in _IS:
            lid, present = _IS[value.lower()]
            pred = _has(lid) if present else _negate(_has(lid))
        elif key == "category" and value.lower() in _CATEGORY:
            pred = _has(_CATEGORY[value.lower()])
        elif key in ("after", "before"):
            ms = _date_ms(value, token)
            pred = _since(ms) if key == "after" else _until(ms)
        elif key in ("newer_than", "older_than"):
            match = re.fullmatch(r"(\d+)([dmy])", value.lower())
            if not match:
                raise bad_request(f"Invalid search term: {token}")
            ms = int((time.time() - int(match[1]) * _UNITS[match[2]]) * 1000)
            pred = _since(ms) if key == "newer_than" else _until(ms)
        else:
            raise bad_request(f"Unsupported search term in q: '{token}' (the emulator supports "
                              f"{SUPPORTED})")
        if negate:
            pred = _negate(pred)
        preds.append(pred)
    return preds, wants_spam_trash
