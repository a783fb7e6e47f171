"""Turn one Gmail API message resource into the fields the mirror stores.

Everything here is a pure function of the JSON dict that ``users.messages.get``
returned: no database, no Django models, no Google client. That keeps the code
that handles attacker-controlled, frequently malformed mail testable in isolation
and lets the sync tasks call it from anywhere.

Design rules, because mail in the wild breaks every one of its standards:

* Never raise for a malformed message. A sync run must not stall on one odd
  message, and a partly readable message is more useful than none. The only
  exception is a resource without an ``id``: there is nothing to store it under,
  so :class:`MessageParseError` says so clearly.
* Every problem that loses or guesses data is recorded in
  ``ParsedMessage.parse_error`` so that it can be found and re-examined later.
* Every string that leaves this module is safe for PostgreSQL ``text``: no NUL
  characters and no lone surrogates (psycopg could not encode those).

Three resource shapes are accepted:

``full``
    ``payload`` is a MessagePart tree. Gmail has already undone the
    Content-Transfer-Encoding: ``body.data`` is base64url of the decoded bytes.
``raw``
    ``raw`` is base64url of the whole RFC 5322 message, parsed here with the
    stdlib ``email`` package.
``metadata`` / ``minimal``
    Headers only or nothing at all: the bodies stay empty, which is expected and
    therefore not reported as an error.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import parseaddr, parsedate_to_datetime
from functools import lru_cache
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

__all__ = [
    "MessageParseError",
    "ParsedMessage",
    "decode_header_value",
    "parse_message",
]

# --- Limits -----------------------------------------------------------------------

# A legitimate subject or From line is never this long; anything longer is spam,
# an attack or a broken generator, and storing megabytes of it in every row (and
# every list page) helps nobody.
MAX_HEADER_CHARS = 10_000
# RFC 5322 caps any line at 998 characters; a Message-ID longer than that is not a
# Message-ID, and ids are compared and indexed, so keep them bounded.
MAX_MESSAGE_ID_CHARS = 998
# Raw header values are cut to this many characters before decoding, so a
# pathological multi-megabyte header costs bounded work. Generous enough that
# the decoded value still reaches MAX_HEADER_CHARS even when fully encoded.
_MAX_RAW_HEADER_CHARS = 20 * MAX_HEADER_CHARS
# MIME trees are walked recursively; real mail nests a handful of levels. These
# bounds keep a hostile message from exhausting the stack or the CPU.
MAX_PART_DEPTH = 40
MAX_PARTS = 1_000
# parse_error lists reasons; cap it so a message with a thousand broken parts
# does not produce a megabyte of diagnostics.
MAX_PARSE_ERROR_CHARS = 2_000
# Columns of mailsync.models.EmailMessage with a hard length limit: a longer value
# would make the whole save fail, so it is dropped (and reported) instead.
MAX_THREAD_ID_CHARS = 64
MAX_HISTORY_ID_CHARS = 32
# PositiveIntegerField is a 32-bit signed integer in PostgreSQL.
_MAX_SIZE_ESTIMATE = 2**31 - 1

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class MessageParseError(ValueError):
    """The resource cannot be stored at all (it is not a dict or has no ``id``)."""


@dataclass(frozen=True)
class ParsedMessage:
    """The storable fields of one Gmail message.

    ``attachments`` holds metadata only (``filename``, ``mime_type``, ``size``,
    ``attachment_id``, ``part_id``); attachment bodies are never downloaded here.
    ``parse_error`` is ``""`` when everything was read cleanly, otherwise the
    reasons, ``"; "``-separated.
    """

    gmail_id: str
    thread_id: str
    label_ids: tuple[str, ...]
    internal_date: datetime
    history_id: str
    snippet: str
    size_estimate: int | None
    subject: str
    sender: str
    to: str
    cc: str
    date_header: datetime | None
    message_id_header: str
    body_text: str
    body_html: str
    attachments: list[dict[str, Any]] = field(default_factory=list)
    parse_error: str = ""
    sender_address: str = ""  # the From address alone, lower-cased: an indexed lookup


MAX_ADDRESS_CHARS = 320  # RFC 5321: 64 for the local part, @, 255 for the domain


@lru_cache(maxsize=4096)  # senders repeat; parseaddr was a tenth of parsing a message
def address_of(sender: str) -> str:
    """The address in a From header ("Ann <Ann@Example.com>" -> "ann@example.com"),
    lower-cased so that one lookup finds every spelling; "" when there is none."""
    address = parseaddr(sender)[1].strip().lower()
    return address if "@" in address and len(address) <= MAX_ADDRESS_CHARS else ""


# --- Text cleaning ----------------------------------------------------------------

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _clean_text(value: str) -> str:
    """Make ``value`` storable in PostgreSQL ``text``.

    PostgreSQL rejects NUL characters outright, and a lone surrogate (possible via
    a ``\\ud800`` JSON escape or a surrogateescape round trip) cannot be encoded
    as UTF-8 by the driver. Either would make the whole row fail to save.
    """
    if "\x00" in value:
        value = value.replace("\x00", "")
    return _SURROGATE_RE.sub("\ufffd", value)


class _Notes:
    """Collects parse_error reasons, de-duplicated and in first-seen order."""

    def __init__(self) -> None:
        self._items: dict[str, None] = {}

    def add(self, reason: str) -> None:
        self._items.setdefault(reason, None)

    def extend(self, reasons: Iterable[str]) -> None:
        for reason in reasons:
            self.add(reason)

    def render(self) -> str:
        text = _clean_text("; ".join(self._items))
        if len(text) > MAX_PARSE_ERROR_CHARS:
            text = text[: MAX_PARSE_ERROR_CHARS - 3] + "..."
        return text


# --- Charsets ---------------------------------------------------------------------

# Labels that Python does not know but mail uses, mapped to Python codec names.
_CHARSET_ALIASES = {
    "windows-874": "cp874",
    "x-sjis": "cp932",
    "x-gbk": "gb18030",
    "x-mac-roman": "mac-roman",
    "macintosh": "mac-roman",
    "ansi_x3.4-1968": "ascii",
    "unicode-1-1-utf-7": "utf-7",
}

# Decoders to try, in order, for a charset Python knows (keyed by the canonical
# codec name). Mail labelled with a legacy charset very often uses that
# charset's vendor superset (Windows "smart quotes" in ISO-8859-1, GBK characters
# in GB2312, ...), which is what every mail client and browser decodes it as.
_CHARSET_CANDIDATES: dict[str, tuple[str, ...]] = {
    "iso8859-1": ("cp1252", "latin-1"),
    "cp1252": ("cp1252", "latin-1"),
    "gb2312": ("gb18030",),
    "gbk": ("gb18030",),
    "euc_kr": ("cp949",),
    "shift_jis": ("cp932",),
    "tis-620": ("cp874",),
    "iso8859-11": ("cp874",),
    "iso8859-9": ("cp1254", "iso8859-9"),
    "iso2022_jp": ("iso2022_jp", "iso2022_jp_ext", "iso2022_jp_2"),
}

# When no usable charset is declared: UTF-8 is by far the most likely, then
# Windows-1252; latin-1 maps every byte and so always succeeds (never loses data).
_UNLABELLED_CANDIDATES = ("utf-8", "cp1252", "latin-1")

# Python text codecs that are not charsets: decoding attacker bytes with them
# would interpret escape sequences or do other surprising things.
_UNSAFE_CODECS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "idna", "punycode", "undefined", "unicode-internal"}
)


def _lookup_charset(label: str) -> str | None:
    """Canonical Python codec name for a MIME charset label, or None if unusable."""
    if len(label) > 64:
        return None
    label = _CHARSET_ALIASES.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    # base64, rot13, zlib... are registered codecs but not text encodings.
    if not getattr(info, "_is_text_encoding", True) or info.name in _UNSAFE_CODECS:
        return None
    return info.name


def _normalize_charset_label(charset: str | None) -> str:
    if not charset:
        return ""
    label = charset.strip().strip("\"'").strip().lower()
    # RFC 2231 allows a language suffix in encoded words: =?utf-8*en?Q?...?=
    return label.split("*", 1)[0]


def _decode_bytes(data: bytes, charset: str | None, where: str) -> tuple[str, list[str]]:
    """Decode ``data`` declared as ``charset``; never raises.

    Returns the text and the reasons (for parse_error) when the charset was
    unknown or bytes had to be replaced.
    """
    notes: list[str] = []
    if not data:
        # Nothing decoded, nothing to report (format=metadata has no body data).
        return "", notes
    label = _normalize_charset_label(charset)
    candidates: tuple[str, ...]
    if not label:
        candidates = _UNLABELLED_CANDIDATES
    else:
        codec = _lookup_charset(label)
        if codec is None:
            notes.append(f"{where}: unknown charset {label[:64]!r}, decoded as utf-8/latin-1")
            candidates = _UNLABELLED_CANDIDATES
        elif codec == "ascii":
            # "us-ascii" is the RFC default and is routinely slapped on 8-bit
            # (usually UTF-8) text by broken generators.
            candidates = _UNLABELLED_CANDIDATES
        else:
            candidates = _CHARSET_CANDIDATES.get(codec, (codec,))
    for candidate in candidates:
        try:
            return data.decode(candidate), notes
        except (UnicodeDecodeError, LookupError):
            continue
    try:
        text = data.decode(candidates[0], errors="replace")
    except (UnicodeError, LookupError):  # pragma: no cover - codec failing even in replace mode
        text = data.decode("latin-1")
    notes.append(f"{where}: invalid {label or candidates[0]} bytes replaced")
    return text, notes


def _repair_8bit(value: str, where: str, notes: list[str]) -> str:
    """Turn surrogate-escaped raw bytes (from the ``email`` parser) into text.

    Non-ASCII header bytes are legal UTF-8 under RFC 6532; anything else is a
    sender's legacy charset that we can only guess.
    """
    if not _SURROGATE_RE.search(value):
        return value
    raw = value.encode("ascii", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        notes.append(f"{where}: 8-bit data is not UTF-8, decoded as windows-1252/latin-1")
        text, _ = _decode_bytes(raw, "iso-8859-1", where)
        return text


# --- Base64 -----------------------------------------------------------------------

_B64_JUNK_RE = re.compile(r"[^A-Za-z0-9+/_\-]")
_B64_TO_STANDARD = str.maketrans("-_", "+/")


def _b64decode_lenient(data: str) -> tuple[bytes, bool]:
    """Decode base64 or base64url, with or without padding.

    Returns ``(bytes, clean)``; ``clean`` is False when characters had to be
    skipped or the length was impossible, in which case the bytes are a best
    effort (everything that could be decoded).
    """
    stripped = "".join(data.split())
    core = stripped.rstrip("=")
    cleaned = _B64_JUNK_RE.sub("", core)
    clean = cleaned == core
    if len(cleaned) % 4 == 1:
        # One dangling character carries fewer than 8 bits: nothing to decode.
        cleaned = cleaned[:-1]
        clean = False
    cleaned = cleaned.translate(_B64_TO_STANDARD)
    cleaned += "=" * (-len(cleaned) % 4)
    try:
        return base64.b64decode(cleaned, validate=True), clean
    except (binascii.Error, ValueError):  # pragma: no cover - input was sanitised above
        return b"", False


# --- Headers ----------------------------------------------------------------------

# An RFC 2047 encoded word. The encoded text may not contain "?" (nor, strictly,
# whitespace; broken mailers put spaces in it anyway, so those are accepted).
# Excluding "?" keeps the scan linear even for hostile input.
_ENCODED_WORD_RE = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?]*)\?=")
_FOLD_RE = re.compile(r"\r?\n(?=[ \t])")
_LINE_BREAK_RE = re.compile(r"[\r\n]+")


def _unfold(value: str) -> str:
    """RFC 5322 unfolding: a line break followed by whitespace is removed.

    Stray line breaks that are not folds (not legal, but seen) become spaces.
    """
    return _LINE_BREAK_RE.sub(" ", _FOLD_RE.sub("", value))


def _decode_encoded_word_bytes(encoding: str, text: str) -> tuple[bytes, bool]:
    if encoding in "bB":
        return _b64decode_lenient(text)
    # Q encoding: "_" is a space, =XX a byte. a2b_qp(header=True) does both.
    try:
        return binascii.a2b_qp(text.encode("utf-8", "surrogateescape"), header=True), True
    except (binascii.Error, ValueError):  # pragma: no cover - a2b_qp is lenient
        return text.encode("utf-8", "replace"), False


def _decode_header(value: object, where: str = "header") -> tuple[str, list[str]]:
    """Unfold and decode RFC 2047 encoded words; return text and problems found.

    Hand-written rather than ``email.header.decode_header`` because that function
    re-encodes unencoded text with ``raw-unicode-escape`` (so a literal ``\\u`` in
    a subject raises), gives no hook for unknown charsets, and decodes each word
    separately, which breaks multi-byte characters split across adjacent words.
    Adjacent words in the same charset are therefore joined before decoding, and
    whitespace between encoded words is dropped as RFC 2047 requires.
    """
    if value is None:
        return "", []
    if not isinstance(value, str):
        value = str(value)
    notes: list[str] = []
    value = _unfold(value)
    if "=?" not in value:
        return value.strip(), notes

    out: list[str] = []
    run: list[tuple[str, bytearray]] = []  # consecutive encoded words: (charset, bytes)

    def flush() -> None:
        for charset, data in run:
            text, problems = _decode_bytes(bytes(data), charset, where)
            out.append(text)
            notes.extend(problems)
        run.clear()

    pos = 0
    for match in _ENCODED_WORD_RE.finditer(value):
        between = value[pos : match.start()]
        if not (run and not between.strip()):
            flush()
            out.append(between)
        charset = _normalize_charset_label(match.group(1))
        data, clean = _decode_encoded_word_bytes(match.group(2), match.group(3))
        if not clean:
            notes.append(f"{where}: malformed encoded word")
        if run and run[-1][0] == charset:
            run[-1][1].extend(data)
        else:
            run.append((charset, bytearray(data)))
        pos = match.end()
    flush()
    out.append(value[pos:])
    return "".join(out).strip(), notes


def decode_header_value(value: str) -> str:
    """Decode a raw header value (RFC 2047 encoded words, folding) to plain text.

    Never raises: unknown charsets fall back to UTF-8/latin-1 and malformed
    encoded words are decoded as far as possible. Callers that need to know
    about such problems use :func:`parse_message`, which reports them.
    """
    text, _ = _decode_header(value)
    return _clean_text(text)


class _Headers:
    """Case-insensitive header lookup where the first occurrence wins.

    Only the first occurrence counts because that is what mail clients show, and
    a second Subject or From is a classic spoofing trick.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._values: dict[str, str] = {}
        for name, value in pairs:
            self._values.setdefault(name.strip().lower(), value)

    def get(self, name: str) -> str | None:
        return self._values.get(name.lower())

    def as_message(self) -> Message:
        """A header-only ``email`` Message, to reuse its MIME parameter parsing."""
        msg = Message()
        for name in ("content-type", "content-disposition"):
            value = self._values.get(name)
            if value is not None:
                msg[name] = _unfold(value)
        return msg


def _gmail_header_pairs(headers: object, where: str, notes: _Notes) -> list[tuple[str, str]]:
    """``[{name, value}]`` from the API into pairs, skipping unusable entries."""
    if headers is None:
        return []
    if not isinstance(headers, list):
        notes.add(f"{where}: headers is not a list")
        return []
    pairs: list[tuple[str, str]] = []
    for header in headers:
        if not isinstance(header, dict) or not isinstance(header.get("name"), str):
            notes.add(f"{where}: skipped malformed header entry")
            continue
        value = header.get("value")
        # A header without a value is legal ("Subject:"), so no note for it.
        pairs.append((header["name"], value if isinstance(value, str) else ""))
    return pairs


# --- Bodies and attachments -------------------------------------------------------


@dataclass
class _BodyState:
    """What the MIME walk has found so far."""

    notes: _Notes
    body_text: str | None = None
    body_html: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    parts_seen: int = 0
    limit_reported: bool = False

    def admit_part(self, depth: int) -> bool:
        """Enforce the walk's bounds; report once when they cut the walk short."""
        self.parts_seen += 1
        if depth > MAX_PART_DEPTH or self.parts_seen > MAX_PARTS:
            if not self.limit_reported:
                self.notes.add(
                    f"MIME tree deeper than {MAX_PART_DEPTH} levels or larger than "
                    f"{MAX_PARTS} parts; the rest was skipped"
                )
                self.limit_reported = True
            return False
        return True

    def take_text(self, mime_type: str, decode: Callable[[], str]) -> None:
        """Keep the first text/plain and the first text/html body."""
        if mime_type == "text/plain" and self.body_text is None:
            self.body_text = decode()
        elif mime_type == "text/html" and self.body_html is None:
            self.body_html = decode()


def _child_part_id(parent: str, index: int) -> str:
    """Gmail numbering: root "", its children "0", "1", grandchildren "0.1"."""
    return f"{parent}.{index}" if parent else str(index)


def _decode_filename(raw_filename: str | None, where: str, notes: list[str]) -> str:
    """Filename from Gmail or from RFC 2231 parameters, RFC 2047 words decoded.

    Outlook and others put RFC 2047 encoded words inside the quoted filename
    parameter (not allowed, universally done).
    """
    if not raw_filename:
        return ""
    text, problems = _decode_header(raw_filename, where)
    notes.extend(problems)
    return text


def _is_attachment(
    mime_type: str, filename: str, disposition: str | None, has_attachment_id: bool
) -> bool:
    return bool(
        filename
        or disposition == "attachment"
        or has_attachment_id
        # A forwarded message is an attachment; its text is not this message's body.
        or mime_type == "message/rfc822"
    )


_T = TypeVar("_T")


def _attempt(getter: Callable[[], _T], default: _T, where: str, notes: list[str]) -> _T:
    """Call one ``email`` package accessor; on failure note it and use ``default``.

    The accessors raise on some junk (e.g. ValueError for a NUL in an RFC 2231
    charset), and each is tried separately so one bad parameter does not lose
    the others.
    """
    try:
        return getter()
    except Exception:  # the email package has odd failure modes on junk
        notes.append(f"{where}: unparseable Content-Type/Content-Disposition")
        return default


def _mime_params(
    msg: Message, where: str, notes: list[str]
) -> tuple[str, str | None, str | None, str]:
    """(mime type, charset, disposition, filename) of one MIME part."""
    mime_type = _attempt(msg.get_content_type, "text/plain", where, notes)
    charset = _attempt(msg.get_content_charset, None, where, notes)
    disposition = _attempt(msg.get_content_disposition, None, where, notes)
    filename = _attempt(lambda: msg.get_filename() or "", "", where, notes)
    if not isinstance(filename, str):  # pragma: no cover - defensive
        filename = ""
    return mime_type, charset, disposition, _repair_8bit(filename, where, notes)


# (Content-Type, Content-Disposition) -> _mime_params' answer, for answers without notes.
_MIME_PARAMS: dict[tuple[str | None, str | None], tuple[str, str | None, str | None, str]] = {}
_MIME_PARAMS_MAX = 2048
# A container's Content-Type with its boundary alone: each boundary is unique, so these
# are the remembered answers' misses (a fifth of parsing a message), and the answer is
# the type alone (no charset, disposition or filename), as the email package gives it.
_MULTIPART_WITH_BOUNDARY = re.compile(
    r"\s*(multipart/[A-Za-z0-9.+-]+)\s*;\s*boundary="
    r"(?:\"[ !#-\[\]-~]{1,200}\"|[A-Za-z0-9!#$%&'*+.^_`{|}~-]{1,200})\s*",
    re.IGNORECASE,
)


def _header_mime_params(
    headers: _Headers, where: str, notes: list[str]
) -> tuple[str, str | None, str | None, str]:
    """_mime_params of a part's headers. The same two header values always give the
    same answer, and most parts repeat a few ("text/plain; charset=UTF-8"): answers
    are remembered (the email package's parameter parsing was a third of parsing a
    message). An answer with notes is not: its notes name the part."""
    key = (headers.get("content-type"), headers.get("content-disposition"))
    if key[0] is not None and key[1] is None:
        multipart = _MULTIPART_WITH_BOUNDARY.fullmatch(key[0])
        if multipart is not None:
            return multipart[1].lower(), None, None, ""
    known = _MIME_PARAMS.get(key)
    if known is not None:
        return known
    found: list[str] = []
    params = _mime_params(headers.as_message(), where, found)
    if not found:
        if len(_MIME_PARAMS) >= _MIME_PARAMS_MAX:
            _MIME_PARAMS.clear()  # bounded: boundaries make most multipart values unique
        _MIME_PARAMS[key] = params
    notes.extend(found)
    return params


def _walk_full(part: object, part_id: str, depth: int, state: _BodyState) -> None:
    """Collect bodies and attachments from a ``format=full`` MessagePart tree."""
    where = f"part {part_id or 'root'}"
    if not isinstance(part, dict):
        state.notes.add(f"{where}: not an object, skipped")
        return
    if not state.admit_part(depth):
        return
    if isinstance(part.get("partId"), str):
        part_id = part["partId"]
        where = f"part {part_id or 'root'}"
    notes: list[str] = []
    headers = _Headers(_gmail_header_pairs(part.get("headers"), where, state.notes))
    header_type, charset, disposition, header_filename = _header_mime_params(headers, where, notes)
    mime_type = part.get("mimeType")
    if not isinstance(mime_type, str) or not mime_type.strip():
        mime_type = header_type
    mime_type = mime_type.strip().lower()

    body = part.get("body")
    if body is None:
        body = {}
    elif not isinstance(body, dict):
        notes.append(f"{where}: body is not an object")
        body = {}
    attachment_id = body.get("attachmentId")
    attachment_id = attachment_id if isinstance(attachment_id, str) else ""
    data = body.get("data")
    size = body.get("size")

    gmail_filename = part.get("filename")
    filename = _decode_filename(
        gmail_filename if isinstance(gmail_filename, str) and gmail_filename else header_filename,
        where,
        notes,
    )

    children = part.get("parts")
    if mime_type.startswith("multipart/") and not children and isinstance(data, str) and data:
        # A multipart whose boundary never occurs has no parts, only its body
        # text: shown as plain text, as in the raw format (see _walk_raw).
        notes.append(f"{where}: multipart body without its boundary, kept as plain text")
        mime_type = "text/plain"
    if mime_type.startswith("multipart/") or (children and mime_type != "message/rfc822"):
        if children is None:
            children = []
        if not isinstance(children, list):
            notes.append(f"{where}: parts is not a list")
            children = []
        state.notes.extend(notes)
        for index, child in enumerate(children):
            _walk_full(child, _child_part_id(part_id, index), depth + 1, state)
        return

    def decoded_bytes() -> bytes:
        if data is None:
            return b""
        if not isinstance(data, str):
            notes.append(f"{where}: body data is not a string")
            return b""
        raw, clean = _b64decode_lenient(data)
        if not clean:
            notes.append(f"{where}: malformed base64 body data")
        return raw

    if _is_attachment(mime_type, filename, disposition, bool(attachment_id)):
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            size = len(decoded_bytes()) if isinstance(data, str) else 0
        if (
            mime_type in ("text/plain", "text/html")
            and not filename
            and disposition != "attachment"
            and not data
        ):
            # Gmail may return a body part only as an attachmentId (the API
            # allows it for any part); it is then reachable only through
            # attachments.get, so list it as an attachment and say why the body
            # is missing.
            notes.append(f"{where}: {mime_type} body not inlined by Gmail, kept as attachment")
        state.attachments.append(
            {
                "filename": filename,
                "mime_type": mime_type,
                "size": size,
                "attachment_id": attachment_id,
                "part_id": part_id,
            }
        )
    else:
        state.take_text(
            mime_type,
            lambda: _decode_body(decoded_bytes(), charset, where, notes),
        )
    state.notes.extend(notes)


def _decode_body(data: bytes, charset: str | None, where: str, notes: list[str]) -> str:
    text, problems = _decode_bytes(data, charset, where)
    notes.extend(problems)
    return text


def _walk_raw(part: Message, part_id: str, depth: int, state: _BodyState) -> None:
    """Collect bodies and attachments from a stdlib ``email`` Message tree."""
    where = f"part {part_id or 'root'}"
    if not state.admit_part(depth):
        return
    notes: list[str] = []
    mime_type, charset, disposition, raw_filename = _mime_params(part, where, notes)
    filename = _decode_filename(raw_filename, where, notes)

    if mime_type.startswith("multipart/") and not part.is_multipart():
        # The boundary was never found, so the parser kept the whole body as one
        # string. Showing that text (MIME headers and all) beats showing nothing.
        notes.append(f"{where}: multipart body without its boundary, kept as plain text")
        mime_type = "text/plain"
    if mime_type != "message/rfc822" and part.is_multipart():
        state.notes.extend(notes)
        payload = part.get_payload()
        for index, child in enumerate(payload if isinstance(payload, list) else []):
            if isinstance(child, Message):
                _walk_raw(child, _child_part_id(part_id, index), depth + 1, state)
        return

    def payload_bytes() -> bytes:
        if part.is_multipart():  # message/rfc822: the payload is the parsed message
            return part.as_bytes(policy=policy.compat32)
        payload = part.get_payload(decode=True)
        return payload if isinstance(payload, bytes) else b""

    if _is_attachment(mime_type, filename, disposition, False):
        try:
            size = len(payload_bytes())
        except Exception:  # re-serialising a broken message part
            size = 0
        state.attachments.append(
            {
                "filename": filename,
                "mime_type": mime_type,
                "size": size,
                "attachment_id": "",
                "part_id": part_id,
            }
        )
    else:
        state.take_text(
            mime_type,
            lambda: _decode_body(payload_bytes(), charset, where, notes),
        )
    state.notes.extend(notes)


def _iter_defects(msg: Message, depth: int = 0) -> Iterator[str]:
    """Names of the defects the ``email`` parser recorded anywhere in the tree."""
    for defect in getattr(msg, "defects", ()):
        yield type(defect).__name__
    if depth < MAX_PART_DEPTH and msg.is_multipart():
        payload = msg.get_payload()
        for child in payload if isinstance(payload, list) else []:
            if isinstance(child, Message):
                yield from _iter_defects(child, depth + 1)


# --- Scalar fields ----------------------------------------------------------------


def _parse_internal_date(value: object) -> datetime | None:
    """``internalDate`` is epoch milliseconds as a decimal string."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        if not re.fullmatch(r"-?[0-9]{1,16}", value):
            return None
    if not isinstance(value, (str, int)):
        return None
    try:
        # Integer arithmetic: float seconds would lose millisecond precision.
        return _EPOCH + timedelta(milliseconds=int(value))
    except (OverflowError, ValueError):
        return None


def _parse_date_header(value: str) -> datetime | None:
    """Parse an RFC 5322 date into an aware UTC datetime; None if impossible.

    Normalised to UTC so the value can always be stored and compared, even for
    dates near year 1 or 9999 where another offset would overflow later.
    """
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
        if parsed is None:  # pragma: no cover - older Pythons
            return None
        if parsed.tzinfo is None:
            # "-0000" means "zone unknown" (RFC 5322 3.3); UTC is the only guess.
            parsed = parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def _string_field(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if value is None:
        return ""
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    return ""


_ENTITY_RE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def _unescape_snippet(snippet: str) -> str:
    """Undo the HTML escaping Gmail applies to snippets ("It&#39;s").

    Stored as plain text because templates escape on output; left escaped, users
    would see the entities. Only complete ``&...;`` entities are replaced, so a
    snippet that was not escaped (a URL with ``&para=1``) survives unchanged,
    unlike with plain ``html.unescape``.
    """
    return _ENTITY_RE.sub(lambda match: html.unescape(match.group(0)), snippet)


def _limited(value: str, limit: int, name: str, notes: _Notes, *, report: bool) -> str:
    if len(value) <= limit:
        return value
    if report:
        notes.add(f"{name} truncated from {len(value)} to {limit} characters")
    return value[:limit]


# --- Entry point ------------------------------------------------------------------


def _guarded(stage: str, notes: _Notes, func: Callable[[], None]) -> None:
    """Run one parsing stage; an unexpected exception becomes a parse_error note.

    Every known failure mode is handled explicitly. This is the safety net for
    the unknown ones, so that a single surprising message cannot stop a sync;
    it is logged with its traceback so the bug can still be found and fixed.
    """
    try:
        func()
    except Exception as exc:  # see docstring
        logger.warning("Unexpected error while parsing message (%s)", stage, exc_info=True)
        notes.add(f"internal error while parsing {stage}: {type(exc).__name__}")


def parse_message(message: dict[str, Any]) -> ParsedMessage:
    """Parse a Gmail ``users.messages.get`` resource of any format.

    Raises :class:`MessageParseError` only when ``message`` is not a dict or has
    no usable ``id``. Everything else is parsed as far as possible, and what
    could not be is described in ``parse_error``.
    """
    if not isinstance(message, dict):
        raise MessageParseError(f"message resource must be a dict, not {type(message).__name__}")
    gmail_id = message.get("id")
    if not isinstance(gmail_id, str) or not gmail_id.strip():
        raise MessageParseError("message resource has no 'id'")

    notes = _Notes()
    header_pairs: list[tuple[str, str]] = []
    state = _BodyState(notes=notes)

    raw = message.get("raw")
    payload = message.get("payload")

    def parse_raw() -> None:
        if not isinstance(raw, str):
            notes.add("raw is not a string")
            return
        data, clean = _b64decode_lenient(raw)
        if not clean:
            notes.add("malformed base64 in raw message")
        msg = BytesParser(policy=policy.compat32).parsebytes(data)
        header_notes: list[str] = []
        for name, value in msg.raw_items():
            if isinstance(value, str):
                header_pairs.append((name, _repair_8bit(value, f"header {name}", header_notes)))
        notes.extend(header_notes)
        _walk_raw(msg, "", 0, state)
        defects = sorted(set(_iter_defects(msg)))
        if defects:
            notes.add("MIME defects: " + ", ".join(defects))

    def parse_payload() -> None:
        if not isinstance(payload, dict):
            notes.add("payload is not an object")
            return
        header_pairs.extend(_gmail_header_pairs(payload.get("headers"), "payload", notes))
        _walk_full(payload, "", 0, state)

    if raw is not None:
        _guarded("raw message", notes, parse_raw)
    elif payload is not None:
        _guarded("payload", notes, parse_payload)
    # Neither: format=minimal. Empty bodies are the expected result, not an error.

    headers = _Headers(header_pairs)

    def header(name: str, limit: int, *, report: bool) -> str:
        raw_value = headers.get(name)
        if raw_value is None:
            return ""
        raw_value = raw_value[:_MAX_RAW_HEADER_CHARS]
        text, problems = _decode_header(raw_value, f"header {name}")
        notes.extend(problems)
        return _limited(_clean_text(text), limit, name, notes, report=report)

    subject = header("Subject", MAX_HEADER_CHARS, report=True)
    sender = header("From", MAX_HEADER_CHARS, report=True)
    # To and Cc are truncated silently: a mailing to thousands of visible
    # recipients is legitimate and fully readable, so it is not a parse error;
    # the cap only keeps the row to a sane size.
    to = header("To", MAX_HEADER_CHARS, report=False)
    cc = header("Cc", MAX_HEADER_CHARS, report=False)
    message_id_header = header("Message-ID", MAX_MESSAGE_ID_CHARS, report=True)

    raw_date = headers.get("Date")
    date_header = None
    if raw_date is not None and raw_date.strip():
        date_header = _parse_date_header(_unfold(raw_date[:_MAX_RAW_HEADER_CHARS]).strip())
        if date_header is None:
            notes.add("unparseable Date header")

    internal_date = _parse_internal_date(message.get("internalDate"))
    if internal_date is None:
        if date_header is not None:
            internal_date = date_header
            notes.add("internalDate missing or invalid, used the Date header")
        else:
            internal_date = _EPOCH
            notes.add("internalDate missing or invalid and no usable Date header, used the epoch")

    label_ids_value = message.get("labelIds")
    label_ids: tuple[str, ...] = ()
    if isinstance(label_ids_value, list):
        label_ids = tuple(_clean_text(label) for label in label_ids_value if isinstance(label, str))
    elif label_ids_value is not None:
        notes.add("labelIds is not a list")

    thread_id = _clean_text(_string_field(message, "threadId"))
    if len(thread_id) > MAX_THREAD_ID_CHARS:
        notes.add("threadId too long, dropped")
        thread_id = ""
    history_id = _clean_text(_string_field(message, "historyId"))
    if len(history_id) > MAX_HISTORY_ID_CHARS:
        notes.add("historyId too long, dropped")
        history_id = ""

    size_value = message.get("sizeEstimate")
    size_estimate: int | None = None
    if isinstance(size_value, int) and not isinstance(size_value, bool):
        size_estimate = size_value if 0 <= size_value <= _MAX_SIZE_ESTIMATE else None
    elif isinstance(size_value, str) and re.fullmatch(r"[0-9]{1,10}", size_value.strip()):
        size_estimate = min(int(size_value), _MAX_SIZE_ESTIMATE)

    snippet = _clean_text(_unescape_snippet(_string_field(message, "snippet")))

    attachments = [
        {
            key: _clean_text(value) if isinstance(value, str) else value
            for key, value in item.items()
        }
        for item in state.attachments
    ]

    return ParsedMessage(
        gmail_id=_clean_text(gmail_id),
        thread_id=thread_id,
        label_ids=label_ids,
        internal_date=internal_date,
        history_id=history_id,
        snippet=snippet,
        size_estimate=size_estimate,
        subject=subject,
        sender=sender,
        to=to,
        cc=cc,
        date_header=date_header,
        message_id_header=message_id_header,
        body_text=_clean_text(state.body_text or ""),
        body_html=_clean_text(state.body_html or ""),
        attachments=attachments,
        parse_error=notes.render(),
        sender_address=address_of(sender),
    )
