"""Deterministic synthetic mailboxes.

Generation writes only compact metadata (dates, threads, labels); the RFC 2822 text of a
generated message is rendered on demand from (seed, message number), so generating
5,000 messages takes milliseconds and 500,000 fit in memory. Rendering is pure: the
same seed always yields the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import html
import random
import re
from collections.abc import Callable
from datetime import UTC, datetime
from email.header import Header
from email.utils import format_datetime
from functools import lru_cache
from typing import Any, NamedTuple

from . import corpus, mime
from .mailbox import LABEL_COLORS, Mailbox, Msg, intern_labels

DAY_MS = 86_400_000
USER_LABELS = ["Work", "Work/Projects", "Work/Projects/Apollo", "Work/Hiring", "Personal",
               "Personal/Travel", "Receipts", "Newsletters", "Family", "Ünïcode label"]
CATEGORIES = ["CATEGORY_PERSONAL", "CATEGORY_SOCIAL", "CATEGORY_PROMOTIONS",
              "CATEGORY_UPDATES", "CATEGORY_FORUMS"]
CHARSETS = [("utf-8", 0.55), ("us-ascii", 0.15), ("iso-8859-1", 0.1),
            ("windows-1252", 0.07), ("iso-2022-jp", 0.06), ("koi8-r", 0.07)]
# Label ids on messages that labels.list and labels.get do not know (lieer#48 saw "Label_3").
# Far above the ids labels.create hands out (Label_1, Label_2, ... at most 10,000 labels).
UNLISTED_LABEL_IDS = ("Label_900001", "Label_900002")
# Every mailbox of 30+ messages holds one of each hostile kind (index modulo 500).
HOSTILE = {7: "nul_header", 13: "long_header", 21: "bad_boundary", 29: "unknown_charset"}


def _pick_charset(rng: random.Random) -> str:
    r = rng.random()
    for name, share in CHARSETS:
        r -= share
        if r < 0:
            return name
    return "utf-8"


def _thread_length(rng: random.Random) -> int:
    r = rng.random()
    if r < 0.55:
        return 1
    if r < 0.75:
        return 2
    if r < 0.85:
        return 3
    if r < 0.91:
        return 4
    if r < 0.95:
        return 5
    return min(60, int(rng.paretovariate(1.2)) + 5)


def populate(mb: Mailbox, count: int, until_ms: int, span_days: int, chat_rate: float = 0.0,
             unknown_label_rate: float = 0.0) -> None:
    """Fill `mb` with `count` generated messages (metadata only) and its user labels.

    `chat_rate` and `unknown_label_rate` (quirks, 0 by default) turn that share of the
    messages into chats and give that share a label id no label list knows; both pick
    every Nth message from a seed-given offset, so the rest of the mailbox is unchanged.
    """
    rng = random.Random(mb.seed)
    chats = _every_nth(mb.seed, chat_rate, 17)
    unlisted = _every_nth(mb.seed, unknown_label_rate, 29)
    if unlisted:
        mb.unlisted_label_ids = UNLISTED_LABEL_IDS
    for i, name in enumerate(USER_LABELS):
        text, bg = LABEL_COLORS[i % len(LABEL_COLORS)]
        mb.create_label(name, {"textColor": text, "backgroundColor": bg})
    user_ids = [lid for lid, lab in mb.labels.items() if lab.type == "user"]
    span = span_days * DAY_MS
    start = until_ms - span
    random_ = rng.random
    entries: list[tuple[int, int, int]] = []  # (date, thread index, position)
    thread_props: list[tuple[float, ...]] = []
    n = 0
    t = 0
    while n < count:
        length = min(_thread_length(rng), count - n)
        # More mail in recent years: bias the root date towards the end of the span.
        root = until_ms - int(span * random_() ** 1.6) - 1
        date = root
        for pos in range(length):
            entries.append((min(date, until_ms - 1 - pos), t, pos))
            date += int(rng.expovariate(1 / 7_200_000)) + 60_000
        thread_props.append((random_(), random_(), random_(), random_(), (root - start) / span))
        n += length
        t += 1
    entries.sort()
    roots: dict[int, int] = {}
    base_hist = mb.history_id
    for num, (date, ti, pos) in enumerate(entries):
        tid = roots.setdefault(ti, num)
        p_box, p_cat, p_user, p_imp, recency = thread_props[ti]
        r = random_()
        labels: list[str] = []
        if p_box < 0.025:
            labels.append("SPAM")
            if r < 0.5:
                labels.append("UNREAD")
        elif r < 0.003:
            labels.append("CHAT")
        elif r < (0.45 if pos else 0.08):
            labels.append("DRAFT" if r < 0.006 else "SENT")
        else:
            labels.append(CATEGORIES[int(p_cat * p_cat * 5)])
            if p_box < 0.35 + 0.55 * recency ** 3:
                labels.append("INBOX")
            if random_() < 0.08 + 0.5 * recency ** 8:
                labels.append("UNREAD")
        if 0.025 <= p_box < 0.05:
            labels.append("TRASH")
            if "INBOX" in labels:
                labels.remove("INBOX")
        if p_user < 0.3:
            labels.append(user_ids[int(p_user / 0.3 * len(user_ids))])
        if p_imp < 0.2:
            labels.append("IMPORTANT")
        if r > 0.97:
            labels.append("STARRED")
        if chats and chats(num):
            labels = ["CHAT"]
        if unlisted and unlisted(num):
            labels.append(UNLISTED_LABEL_IDS[num % len(UNLISTED_LABEL_IDS)])
        msg = Msg(num, tid, date, intern_labels(labels), base_hist + num)
        mb.msgs[num] = msg
        mb.keys.append(date << 24 | num)
        mb.threads.setdefault(tid, []).append(num)
        for lid in msg.labels:
            mb.label_counts[lid] = mb.label_counts.get(lid, 0) + 1
    mb.next_num = len(entries)
    mb.history_id = base_hist + len(entries) + rng.randint(1, 50)
    mb.history_floor = mb.history_id


def _every_nth(seed: int, rate: float, salt: int) -> Callable[[int], bool] | None:
    """A test for message numbers picking a `rate` share, every Nth from a seed's offset."""
    if rate <= 0:
        return None
    period = max(1, round(1 / rate))
    offset = (seed * 2_654_435_761 + salt) % period
    return lambda num: num % period == offset


# ----- rendering ------------------------------------------------------------------
def _person(rng: random.Random) -> tuple[str, str]:
    first = rng.choice(corpus.FIRST_NAMES)
    last = rng.choice(corpus.LAST_NAMES)
    local = re.sub(r"[^a-z]", "", (first + "." + last).lower().replace("é", "e").replace("ü", "u")
                   .replace("í", "i")) or "user"
    return f"{first} {last}", f"{local}@{rng.choice(corpus.DOMAINS)}"


def _addr(name: str, email: str) -> str:
    if name.isascii():
        return f'"{name}" <{email}>'
    return f"{_encoded_word(name, 'utf-8')} <{email}>"


@lru_cache(maxsize=4096)
def _encoded_word(text: str, charset: str) -> str:
    """RFC 2047 form of a header text (Header.encode is a large share of rendering)."""
    return Header(text, charset).encode()


def message_id(mb: Mailbox, num: int) -> str:
    return f"<gen.{mb.seed}.{num}@emulator.invalid>"


def _subject(seed: int, root: int) -> tuple[str, str]:
    """The thread's subject (decoded) and its header form."""
    rng = random.Random(seed * 7_919 + root * 31 + 1)
    cs = _pick_charset(rng)
    if cs in corpus.SUBJECTS_BY_CHARSET and rng.random() < 0.7:
        subject = rng.choice(corpus.SUBJECTS_BY_CHARSET[cs]).format(n=root)
        return subject, Header(subject, cs).encode()
    subject = rng.choice(corpus.SUBJECTS_ASCII).format(n=1000 + root)
    return subject, subject if subject.isascii() else Header(subject, "utf-8").encode()


@lru_cache(maxsize=1 << 14)
def _thread_headers(seed: int, root: int) -> tuple[str, str]:
    """Subject header and correspondent address shared by every message of a thread."""
    _, subject_header = _subject(seed, root)
    peer_name, peer_email = _person(random.Random(seed * 104_729 + root))
    return subject_header, _addr(peer_name, peer_email)


def _text(rng: random.Random, cs: str) -> str:
    sentences = corpus.TEXT_BY_CHARSET.get(cs, corpus.ENGLISH)
    paras = []
    for _ in range(rng.randint(1, 5)):
        paras.append(" ".join(rng.choice(sentences) for _ in range(rng.randint(1, 4))))
    return "Hello,\r\n\r\n" + "\r\n\r\n".join(paras) + "\r\n\r\n-- \r\nSent by the emulator\r\n"


def _encode_body(data: bytes, cs: str, rng: random.Random) -> tuple[str, str]:
    """(Content-Transfer-Encoding, encoded body) for text already encoded in charset cs."""
    if cs in ("us-ascii", "iso-2022-jp"):
        return "7bit", data.decode("ascii")
    if cs == "koi8-r" or (cs == "utf-8" and rng.random() < 0.5):
        return "base64", base64.encodebytes(data).decode("ascii").replace("\n", "\r\n")
    qp = binascii.b2a_qp(data).decode("ascii").replace("\r\n", "\n").replace("\n", "\r\n")
    return "quoted-printable", qp


def _html_of(text: str) -> str:
    paras = [p for p in text.split("\r\n\r\n") if p.strip()]
    return "<html><body>" + "".join(f"<p>{html.escape(p)}</p>" for p in paras) + "</body></html>"


def _snippet_of(text: str) -> str:
    return " ".join(text.split())[:200]


class Rendered(NamedTuple):
    """A generated message: raw bytes, snippet, and its format=full payload, built while
    rendering so serving format=full needs no MIME parse (None: parse `raw`)."""

    raw: bytes
    snippet: str
    payload: dict[str, Any] | None


def render(mb: Mailbox, msg: Msg) -> tuple[bytes, str]:
    """The raw RFC 2822 bytes of a generated message and its snippet."""
    rendered = render_full(mb, msg)
    return rendered.raw, rendered.snippet


def render_full(mb: Mailbox, msg: Msg, with_payload: bool = True) -> Rendered:
    """Raw bytes, snippet and payload tree of a generated message (pure: same seed, same
    bytes). The tree equals mime.payload(raw) (tests/emulator/test_generation.py checks
    it). Messages whose MIME is broken on purpose (bad boundary, unknown charset) get
    None, as does `with_payload=False`."""
    num = msg.num
    rng = random.Random(mb.seed * 1_000_003 + num)
    subject_header, peer = _thread_headers(mb.seed, msg.tid)
    members = mb.threads.get(msg.tid, [num])
    prior = [m for m in members if m != num and mb.msgs.get(m) is not None
             and mb.msgs[m].key < msg.key]
    owner = _addr(mb.email.split("@")[0].title(), mb.email)
    sent = "SENT" in msg.labels or "DRAFT" in msg.labels
    date = datetime.fromtimestamp(msg.date / 1000, tz=UTC)
    headers = [
        f"Delivered-To: {mb.email}",
        "MIME-Version: 1.0",
        f"Date: {format_datetime(date)}",
        f"Message-ID: {message_id(mb, num)}",
        f"Subject: {'Re: ' if prior else ''}{subject_header}",
        f"From: {owner if sent else peer}",
        f"To: {peer if sent else owner}",
    ]
    if prior:
        refs = " ".join(message_id(mb, m) for m in prior[-20:])
        headers.insert(4, f"In-Reply-To: {message_id(mb, prior[-1])}")
        headers.insert(5, f"References: {refs}")
    hostile = HOSTILE.get(num % 500)
    cs = _pick_charset(rng)
    text = _text(rng, cs)
    if prior:
        text = text + "\r\n> " + "earlier message quoted here"
    snippet = _snippet_of(text)
    kind = rng.random()
    body_lines: list[str] = []
    boundary = f"=_emu_{mb.seed}_{num}_"
    tree: dict[str, Any] | None = None
    if hostile == "nul_header":
        headers.append("X-Hostile: before\x00after")
    elif hostile == "long_header":
        headers.append("X-Long-Header: " + "x" * 20000)
    if hostile == "bad_boundary":
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}A"')
        body_lines = [f"--{boundary}B", "Content-Type: text/plain; charset=utf-8", "",
                      text.encode("utf-8").decode("latin-1"),
                      f"--{boundary}B", "Content-Type: text/html", "", "<p>broken"]
    elif hostile == "unknown_charset":
        headers.append('Content-Type: text/plain; charset="x-emulator-unknown"')
        headers.append("Content-Transfer-Encoding: 8bit")
        raw_text = "Caf\xe9 \xff\xfe weird bytes in an unknown charset.\r\n"
        body_lines = [raw_text]
        snippet = _snippet_of(raw_text)
    elif kind < 0.45:
        leaf = _text_leaf(text, cs, rng)
        headers += leaf.headers
        body_lines = [leaf.body]
        # The top-level body runs to the end of the message, which ends with CRLF.
        body = leaf.body if leaf.body.endswith("\r\n") else leaf.body + "\r\n"
        if with_payload:
            tree = _node("", "text/plain", headers, _leaf_body(leaf.data(body)))
    else:
        nested = kind >= 0.82  # multipart/mixed: the alternative is its part "0"
        alt_lines, alt_parts = _alternative(text, cs, rng, boundary + "alt", "0." if nested else "",
                                            with_payload)
        if not nested:
            headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}alt"')
            body_lines = alt_lines
            tree = _multipart("", "multipart/alternative", headers, alt_parts) if with_payload \
                else None
        else:
            alt_header = f'Content-Type: multipart/alternative; boundary="{boundary}alt"'
            headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}mix"')
            body_lines = ["This is a multi-part message in MIME format.", f"--{boundary}mix",
                          alt_header, ""]
            body_lines += alt_lines
            children = [_multipart("0", "multipart/alternative", [alt_header], alt_parts)]
            for a in range(1 + (rng.random() < 0.3)):
                att_lines, att_part = _attachment(rng, num, a, str(a + 1))
                body_lines += [f"--{boundary}mix", *att_lines]
                children.append(att_part)
            body_lines.append(f"--{boundary}mix--")
            tree = _multipart("", "multipart/mixed", headers, children) if with_payload else None
    raw = "\r\n".join(headers) + "\r\n\r\n" + "\r\n".join(body_lines)
    if not raw.endswith("\r\n"):
        raw += "\r\n"
    return Rendered(raw.encode("latin-1"), snippet, tree)


# ----- the payload tree of format=full, as mime.payload would parse it ----------------
class _Leaf(NamedTuple):
    headers: list[str]  # "Name: value" lines
    body: str  # the encoded body as written between the part's headers and the next line
    cte: str
    decoded: bytes  # the bytes that were encoded

    def data(self, body: str | None = None) -> bytes:
        """The part's content as the stdlib decodes it (get_payload(decode=True))."""
        text = self.body if body is None else body
        if self.cte == "base64":
            return self.decoded
        if self.cte == "quoted-printable":
            return binascii.a2b_qp(text.encode("ascii"))
        return text.encode("ascii")


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _parsed_headers(lines: list[str]) -> list[dict[str, str]]:
    """Header lines as the compat32 parser stores them, unfolded like mime._headers."""
    out = []
    for line in lines:
        name, _, value = line.partition(":")
        value = value.lstrip(" \t")
        out.append({"name": name, "value": _FOLD.sub("", value) if "\n" in value else value})
    return out


def _leaf_body(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "data": base64.urlsafe_b64encode(data).decode("ascii")} if data \
        else {"size": 0}


def _node(part_id: str, mime_type: str, headers: list[str], body: dict[str, Any],
          filename: str = "") -> dict[str, Any]:
    return {"partId": part_id, "mimeType": mime_type, "filename": filename,
            "headers": _parsed_headers(headers), "body": body}


def _multipart(part_id: str, mime_type: str, headers: list[str],
               children: list[dict[str, Any]]) -> dict[str, Any]:
    node = _node(part_id, mime_type, headers, {"size": 0})
    node["parts"] = children
    return node


def _text_leaf(text: str, cs: str, rng: random.Random, subtype: str = "plain") -> _Leaf:
    data = text.encode("ascii" if cs == "us-ascii" else cs)
    cte, body = _encode_body(data, cs, rng)
    return _Leaf([f'Content-Type: text/{subtype}; charset="{cs}"',
                  f"Content-Transfer-Encoding: {cte}"], body, cte, data)


def _alternative(text: str, cs: str, rng: random.Random, boundary: str, prefix: str,
                 with_payload: bool) -> tuple[list[str], list[dict[str, Any]]]:
    """Lines of a text + HTML multipart/alternative body, and its two payload parts
    (part ids `prefix`0 and `prefix`1)."""
    plain = _text_leaf(text, cs, rng)
    rich = _text_leaf(_html_of(text), cs, rng, "html")
    lines = [f"--{boundary}", *plain.headers, "", plain.body,
             f"--{boundary}", *rich.headers, "", rich.body, f"--{boundary}--", ""]
    parts = [_node(prefix + str(i), f"text/{kind}", leaf.headers, _leaf_body(leaf.data()))
             for i, (kind, leaf) in enumerate((("plain", plain), ("html", rich)))] \
        if with_payload else []
    return lines, parts


def _attachment(rng: random.Random, num: int, index: int,
                part_id: str) -> tuple[list[str], dict[str, Any]]:
    kind = rng.random()
    if kind < 0.3:
        name, ctype = f"report-{num}-{index}.csv", "text/csv"
        data = "\r\n".join(f"{i},{rng.randint(0, 10**6)},item {i}" for i in
                           range(rng.randint(3, 200))).encode()
    elif kind < 0.65:
        name, ctype = f"document-{num}.pdf", "application/pdf"
        data = b"%PDF-1.4\n" + rng.randbytes(rng.randint(200, 40000))
    else:
        name, ctype = f"photo_{num}_{index}.png", "image/png"
        data = b"\x89PNG\r\n\x1a\n" + rng.randbytes(rng.randint(100, 20000))
    if rng.random() < 0.15:
        name = "Résumé \u2013 " + name
        disp_name = "UTF-8''" + "".join(
            c if c.isascii() and (c.isalnum() or c in "._-") else "".join(
                f"%{b:02X}" for b in c.encode()) for c in name)
        disposition = f"Content-Disposition: attachment; filename*={disp_name}"
    else:
        disposition = f'Content-Disposition: attachment; filename="{name}"'
    encoded = base64.encodebytes(data).decode("ascii").replace("\n", "\r\n")
    headers = [f'Content-Type: {ctype}; name="{name}"' if name.isascii() else f"Content-Type: {ctype}",
               disposition, "Content-Transfer-Encoding: base64"]
    body = {"attachmentId": mime.attachment_id(num, part_id), "size": len(data)}
    return [*headers, "", encoded], _node(part_id, ctype, headers, body, name)


def new_generated_message(mb: Mailbox, rng: random.Random, date_ms: int,
                          labels: tuple[str, ...]) -> Msg:
    """A fresh generated message (not yet indexed); 30% are replies to a recent thread."""
    num = mb.next_num
    mb.next_num += 1
    tid = num
    if mb.keys and rng.random() < 0.3:
        recent = mb.keys[-min(len(mb.keys), 50):]
        cand = mb.msgs.get(rng.choice(recent) & 0xFFFFFF)
        if cand is not None and cand.raw is None:
            tid = cand.tid
    return Msg(num, tid, date_ms, intern_labels(labels), 0)
