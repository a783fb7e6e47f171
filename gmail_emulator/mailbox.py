"""One mailbox's state: compact per-message metadata, labels, an ordered index and history.

Messages are kept as small slotted records (no bodies): generated messages are
re-rendered from the seed on demand, so a 500,000-message mailbox fits in memory.
The ordered index is a sorted list of integer keys ``internalDate << 24 | num`` so that
listing newest-first is a reverse walk from a bisected position (O(page)).
"""

from __future__ import annotations

import bisect
import random
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import ApiError, bad_request, not_found

NUM_BITS = 24
NUM_MASK = (1 << NUM_BITS) - 1
INVERSION_MS = 6 * 3_600_000  # how far messages.list may move a message (quirk)
TIMELINE_KEEP_S = 3600.0  # how far back history_id_at can answer

SYSTEM_LABELS = [
    "INBOX", "SENT", "UNREAD", "STARRED", "IMPORTANT", "TRASH", "SPAM", "DRAFT",
    "CATEGORY_PERSONAL", "CATEGORY_SOCIAL", "CATEGORY_PROMOTIONS", "CATEGORY_UPDATES",
    "CATEGORY_FORUMS", "CHAT",
]
# Labels Gmail lists with these visibilities (the rest have none on system labels).
_SYSTEM_VISIBILITY = {
    "INBOX": ("labelShow", "show"), "SENT": ("labelShow", "show"),
    "UNREAD": ("labelShow", "show"), "STARRED": ("labelShow", "show"),
    "IMPORTANT": ("labelShow", "show"), "TRASH": ("labelHide", "hide"),
    "SPAM": ("labelHide", "hide"), "DRAFT": ("labelShow", "show"),
    "CHAT": ("labelHide", "hide"),
}
# Labels a client may not add/remove via modify (Gmail answers 400).
_IMMUTABLE = {"DRAFT", "SENT", "CHAT"}

LABEL_COLORS = [
    ("#000000", "#fad165"), ("#ffffff", "#4a86e8"), ("#ffffff", "#16a766"),
    ("#ffffff", "#e66550"), ("#000000", "#ffad47"), ("#ffffff", "#a479e2"),
    ("#000000", "#b9e4d0"), ("#ffffff", "#f691b3"), ("#000000", "#c9daf8"),
]

_label_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}


def intern_labels(labels: Iterable[str]) -> tuple[str, ...]:
    """Share identical label tuples between messages (saves memory on big mailboxes)."""
    key = tuple(sorted(set(labels)))
    return _label_tuples.setdefault(key, key)


class Msg:
    """Compact metadata of one message; the body is rendered or stored separately."""

    __slots__ = ("date", "hist", "labels", "num", "raw", "size", "tid")

    def __init__(self, num: int, tid: int, date: int, labels: tuple[str, ...], hist: int,
                 raw: bytes | None = None) -> None:
        self.num = num
        self.tid = tid
        self.date = date
        self.labels = labels
        self.hist = hist
        self.size = 0 if raw is None else len(raw)
        self.raw = raw

    @property
    def key(self) -> int:
        return self.date << NUM_BITS | self.num


@dataclass
class Label:
    id: str
    name: str
    type: str = "user"
    color: dict[str, str] | None = None
    label_list_visibility: str | None = "labelShow"
    message_list_visibility: str | None = "show"

    def resource(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name, "type": self.type}
        if self.message_list_visibility:
            out["messageListVisibility"] = self.message_list_visibility
        if self.label_list_visibility:
            out["labelListVisibility"] = self.label_list_visibility
        if self.color:
            out["color"] = dict(self.color)
        return out


class HistoryRecord:
    """One change; `kind` is messageAdded/messageDeleted/labelAdded/labelRemoved set."""

    __slots__ = (
        "added",
        "added_msg",
        "deleted",
        "id",
        "labels_after",
        "num",
        "removed",
        "tid",
        "ts",
    )

    def __init__(self, hid: int, num: int, tid: int, *, added_msg: bool = False,
                 deleted: bool = False, added: tuple[str, ...] = (),
                 removed: tuple[str, ...] = (), labels_after: tuple[str, ...] = ()) -> None:
        self.id = hid
        self.ts = time.time()
        self.num = num
        self.tid = tid
        self.added_msg = added_msg
        self.deleted = deleted
        self.added = added
        self.removed = removed
        self.labels_after = labels_after

    def types(self) -> set[str]:
        out = set()
        if self.added_msg:
            out.add("messageAdded")
        if self.deleted:
            out.add("messageDeleted")
        if self.added:
            out.add("labelAdded")
        if self.removed:
            out.add("labelRemoved")
        return out


@dataclass
class Watch:
    topic: str
    label_ids: list[str]
    expiration_ms: int


def _remove_sorted(keys: list[int], key: int) -> None:
    idx = bisect.bisect_left(keys, key)
    if idx < len(keys) and keys[idx] == key:
        del keys[idx]


@dataclass
class Mailbox:
    """State of one Gmail account. All public methods take `lock`."""

    email: str
    seed: int
    id_base: int
    history_id: int
    rng: random.Random
    step_max: int = 7
    msgs: dict[int, Msg] = field(default_factory=dict)
    keys: list[int] = field(default_factory=list)
    threads: dict[int, list[int]] = field(default_factory=dict)
    labels: dict[str, Label] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)
    history: list[HistoryRecord] = field(default_factory=list)
    history_ids: list[int] = field(default_factory=list)
    history_floor: int = 0
    next_num: int = 0
    next_label: int = 1
    msgid_index: dict[str, int] = field(default_factory=dict)
    daily_limit_exceeded: bool = False
    forced_empty_pages: int = 0
    watch: Watch | None = None
    access_token: str = ""
    refresh_token: str = ""
    generated_until_ms: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)
    listeners: list[Any] = field(default_factory=list)
    _thread_stats: tuple[int, dict[str, tuple[int, int]]] | None = None
    # messages.list order with date inversions: (rate, keys with perturbed dates), lazily.
    _list_index: tuple[float, list[int]] | None = None
    # (time, history id) whenever the id moved, for "how old is this history id" (quirk).
    id_timeline: list[tuple[float, int]] = field(default_factory=list)
    # Label ids some messages carry that labels.list/labels.get do not know (quirk).
    unlisted_label_ids: tuple[str, ...] = ()

    # ----- ids -----------------------------------------------------------------
    def msg_id(self, num: int) -> str:
        return format(self.id_base + num, "x")

    def num_of(self, msg_id: str) -> int:
        try:
            num = int(msg_id, 16) - self.id_base
        except (ValueError, TypeError):
            raise bad_request("Invalid id value") from None
        if num < 0 or num > NUM_MASK:
            raise not_found()
        return num

    def get_msg(self, msg_id: str) -> Msg:
        msg = self.msgs.get(self.num_of(msg_id))
        if msg is None:
            raise not_found()
        return msg

    # ----- labels --------------------------------------------------------------
    def init_system_labels(self) -> None:
        for lid in SYSTEM_LABELS:
            llv, mlv = _SYSTEM_VISIBILITY.get(lid, (None, None))
            self.labels[lid] = Label(lid, lid, "system", None, llv, mlv)

    def label_by_name(self, name: str) -> Label | None:
        low = name.lower()
        for label in self.labels.values():
            if label.name.lower() == low:
                return label
        return None

    def create_label(self, name: str, color: dict[str, str] | None = None,
                     label_list_visibility: str | None = "labelShow",
                     message_list_visibility: str | None = "show") -> Label:
        with self.lock:
            name = (name or "").strip()
            if not name:
                raise bad_request("Invalid label name")
            if self.label_by_name(name) is not None:
                raise ApiError(409, "alreadyExists", "Label name exists or conflicts")
            if len(self.labels) >= 10000:
                raise bad_request("Too many labels", "failedPrecondition")
            lid = f"Label_{self.next_label}"
            self.next_label += 1
            label = Label(lid, name, "user", color, label_list_visibility or "labelShow",
                          message_list_visibility or "show")
            self.labels[lid] = label
            return label

    def update_label(self, label_id: str, patch: dict[str, Any], replace: bool = False) -> Label:
        with self.lock:
            label = self.labels.get(label_id)
            if label is None:
                raise not_found()
            if label.type == "system":
                raise bad_request("Invalid label: " + label_id)
            if "name" in patch or replace:
                name = (patch.get("name") or "").strip()
                if not name:
                    raise bad_request("Invalid label name")
                other = self.label_by_name(name)
                if other is not None and other.id != label_id:
                    raise ApiError(409, "alreadyExists", "Label name exists or conflicts")
                label.name = name
            if "color" in patch or replace:
                label.color = patch.get("color") or None
            if "labelListVisibility" in patch or replace:
                label.label_list_visibility = patch.get("labelListVisibility") or "labelShow"
            if "messageListVisibility" in patch or replace:
                label.message_list_visibility = patch.get("messageListVisibility") or "show"
            return label

    def delete_label(self, label_id: str) -> None:
        with self.lock:
            label = self.labels.get(label_id)
            if label is None:
                raise not_found()
            if label.type == "system":
                raise bad_request("Invalid delete request")
            for msg in list(self.msgs.values()):
                if label_id in msg.labels:
                    self._change_labels(msg, (), (label_id,))
            del self.labels[label_id]
            self.label_counts.pop(label_id, None)

    def label_stats(self, label_id: str) -> dict[str, int]:
        """Counters for labels.get; thread counters are computed lazily per history id."""
        with self.lock:
            if label_id not in self.labels:
                raise not_found()
            cached = self._thread_stats
            if cached is None or cached[0] != self.history_id:
                cached = (self.history_id, self._compute_stats())
                self._thread_stats = cached
            stats = cached[1]
            m_total, m_unread, t_total, t_unread = stats.get(label_id, (0, 0, 0, 0))
            return {"messagesTotal": m_total, "messagesUnread": m_unread,
                    "threadsTotal": t_total, "threadsUnread": t_unread}

    def _compute_stats(self) -> dict[str, tuple[int, int, int, int]]:
        m_total: dict[str, int] = {}
        m_unread: dict[str, int] = {}
        t_all: dict[str, set[int]] = {}
        t_unr: dict[str, set[int]] = {}
        for msg in self.msgs.values():
            unread = "UNREAD" in msg.labels
            for lid in msg.labels:
                m_total[lid] = m_total.get(lid, 0) + 1
                t_all.setdefault(lid, set()).add(msg.tid)
                if unread:
                    m_unread[lid] = m_unread.get(lid, 0) + 1
                    t_unr.setdefault(lid, set()).add(msg.tid)
        return {lid: (m_total.get(lid, 0), m_unread.get(lid, 0), len(t_all.get(lid, ())),
                      len(t_unr.get(lid, ()))) for lid in m_total}

    # ----- mutation primitives (caller holds lock) -----------------------------
    def _next_history_id(self) -> int:
        self.history_id += self.rng.randint(1, max(1, self.step_max))
        self.mark_history_id()
        return self.history_id

    def mark_history_id(self) -> None:
        """Note when the mailbox's history id took its current value (one hour is kept)."""
        now = time.time()
        timeline = self.id_timeline
        timeline.append((now, self.history_id))
        if len(timeline) > 2 and timeline[1][0] < now - TIMELINE_KEEP_S:
            cut = bisect.bisect_left(timeline, (now - TIMELINE_KEEP_S,)) - 1
            del timeline[:max(cut, 0)]

    def history_id_at(self, when: float) -> int:
        """The mailbox's history id at time `when` (-1 before the mailbox existed)."""
        pos = bisect.bisect_right(self.id_timeline, (when, float("inf")))
        return self.id_timeline[pos - 1][1] if pos else -1

    def _record(self, rec: HistoryRecord) -> None:
        self.history.append(rec)
        self.history_ids.append(rec.id)
        for listener in self.listeners:
            listener(self)

    def _count(self, labels: Iterable[str], delta: int) -> None:
        counts = self.label_counts
        for lid in labels:
            counts[lid] = counts.get(lid, 0) + delta

    def add_msg(self, msg: Msg, record: bool = True) -> None:
        """Index a new message; with `record`, a messagesAdded history entry is written."""
        self.msgs[msg.num] = msg
        bisect.insort(self.keys, msg.key)
        if self._list_index is not None:
            bisect.insort(self._list_index[1], self._listed_key(msg.key, self._list_index[0]))
        members = self.threads.setdefault(msg.tid, [])
        if not members or self.msgs[members[-1]].date <= msg.date:
            members.append(msg.num)
        else:
            members.append(msg.num)
            members.sort(key=lambda n: self.msgs[n].key)
        self._count(msg.labels, 1)
        self.next_num = max(self.next_num, msg.num + 1)
        if record:
            hid = self._next_history_id()
            msg.hist = hid
            self._record(HistoryRecord(hid, msg.num, msg.tid, added_msg=True,
                                       labels_after=msg.labels))

    def _change_labels(self, msg: Msg, add: Iterable[str], remove: Iterable[str]) -> bool:
        current = set(msg.labels)
        remove_set = set(remove)
        added = tuple(sorted(lid for lid in set(add) if lid not in current and lid not in remove_set))
        removed = tuple(sorted(lid for lid in remove_set if lid in current))
        if not added and not removed:
            return False
        new = intern_labels((current | set(added)) - set(removed))
        self._count(removed, -1)
        self._count(added, 1)
        msg.labels = new
        hid = self._next_history_id()
        msg.hist = hid
        self._record(HistoryRecord(hid, msg.num, msg.tid, added=added, removed=removed,
                                   labels_after=new))
        return True

    def _check_labels(self, ids: Iterable[str], adding: bool) -> None:
        for lid in ids:
            if lid not in self.labels:
                raise bad_request(f"Invalid label: {lid}")
            if lid in _IMMUTABLE:
                raise bad_request(f"Invalid label: {lid}")

    # ----- public mutations ----------------------------------------------------
    def modify(self, msg_id: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> Msg:
        add, remove = list(add), list(remove)
        with self.lock:
            self._check_labels(add, True)
            self._check_labels(remove, False)
            msg = self.get_msg(msg_id)
            self._change_labels(msg, add, remove)
            return msg

    def batch_modify(self, ids: list[str], add: Iterable[str], remove: Iterable[str]) -> None:
        add, remove = list(add), list(remove)
        if len(ids) > 1000:
            raise bad_request("Too many ids: at most 1000")
        with self.lock:
            self._check_labels(add, True)
            self._check_labels(remove, False)
            for msg_id in ids:
                msg = self.msgs.get(self.num_of(msg_id))
                if msg is not None:
                    self._change_labels(msg, add, remove)

    def trash(self, msg_id: str) -> Msg:
        with self.lock:
            msg = self.get_msg(msg_id)
            # Gmail drops INBOX/SPAM on trash and does not restore them on untrash.
            self._change_labels(msg, ("TRASH",), ("SPAM", "INBOX"))
            return msg

    def untrash(self, msg_id: str) -> Msg:
        with self.lock:
            msg = self.get_msg(msg_id)
            self._change_labels(msg, (), ("TRASH",))
            return msg

    def delete(self, msg_id: str) -> None:
        with self.lock:
            msg = self.get_msg(msg_id)
            del self.msgs[msg.num]
            _remove_sorted(self.keys, msg.key)
            if self._list_index is not None:
                rate, listed = self._list_index
                _remove_sorted(listed, self._listed_key(msg.key, rate))
            members = self.threads.get(msg.tid, [])
            if msg.num in members:
                members.remove(msg.num)
            if not members:
                self.threads.pop(msg.tid, None)
            self._count(msg.labels, -1)
            hid = self._next_history_id()
            self._record(HistoryRecord(hid, msg.num, msg.tid, deleted=True,
                                       labels_after=msg.labels))

    # ----- history -------------------------------------------------------------
    def prune_history(self, retention_s: float) -> None:
        with self.lock:
            cutoff = time.time() - retention_s
            drop = 0
            while drop < len(self.history) and self.history[drop].ts < cutoff:
                drop += 1
            if drop:
                self.history_floor = max(self.history_floor, self.history[drop - 1].id)
                del self.history[:drop]
                del self.history_ids[:drop]

    def expire_history(self) -> None:
        with self.lock:
            self.history.clear()
            self.history_ids.clear()
            self.history_floor = self.history_id

    def history_after(self, start: int) -> int:
        """Index of the first record with id > start; raises 404 if start is too old."""
        if start < self.history_floor:
            raise not_found()
        return bisect.bisect_right(self.history_ids, start)

    # ----- listing -------------------------------------------------------------
    def list_keys(self, inversion_rate: float) -> list[int]:
        """The index messages.list walks: `keys`, or with inversions keys whose date part is
        moved by up to INVERSION_MS for a deterministic `inversion_rate` share of messages."""
        if inversion_rate <= 0:
            return self.keys
        if self._list_index is None or self._list_index[0] != inversion_rate:
            listed = sorted(self._listed_key(key, inversion_rate) for key in self.keys)
            self._list_index = (inversion_rate, listed)
        return self._list_index[1]

    def _listed_key(self, key: int, rate: float) -> int:
        num = key & NUM_MASK
        h = (num * 0x9E3779B97F4A7C15 + self.seed * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        if (h >> 40) % 100_000 >= rate * 100_000:
            return key
        shift = (h & 0xFFFFFFFF) % (2 * INVERSION_MS + 1) - INVERSION_MS
        return max(0, (key >> NUM_BITS) + shift) << NUM_BITS | num

    def iter_newest(self, before_key: int | None = None) -> Iterator[Msg]:
        """Messages newest first, starting strictly below `before_key` (a page token)."""
        keys = self.keys
        pos = len(keys) if before_key is None else bisect.bisect_left(keys, before_key)
        msgs = self.msgs
        while pos > 0:
            pos -= 1
            try:
                key = keys[pos]
            except IndexError:  # index shrank under us; restart from the key
                return
            msg = msgs.get(key & NUM_MASK)
            if msg is not None:
                yield msg
