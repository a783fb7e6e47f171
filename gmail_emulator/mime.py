"""Raw RFC 2822 bytes -> Gmail's MessagePart tree (format=full/metadata) and snippets.

Parsing uses the stdlib email package with the tolerant compat32 policy so hostile
messages (NUL bytes, broken boundaries, unknown charsets) still produce a payload.
"""

from __future__ import annotations

import base64
import html
import re
from email.message import Message
from email.parser import BytesHeaderParser, BytesParser
from email.policy import compat32
from typing import Any

_FOLD = re.compile(r"\r?\n(?=[ \t])")
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.S | re.I)


def b64url(data: bytes) -> str:
    """Gmail's base64url, with padding (as urlsafe_b64encode produces)."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def _clean(value: Any) -> str:
    value = str(value)
    if any("\udc80" <= ch <= "\udcff" for ch in value):
        value = value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return _FOLD.sub("", value)


def _headers(msg: Message, only: set[str] | None = None) -> list[dict[str, str]]:
    return [{"name": name, "value": _clean(value)} for name, value in msg._headers
            if only is None or name.lower() in only]


def parse(raw: bytes) -> Message:
    return BytesParser(policy=compat32).parsebytes(raw)


def attachment_id(msg_num: int, part_id: str) -> str:
    return "ANGjdJ" + b64url(f"{msg_num}:{part_id}".encode()).rstrip("=")


def parse_attachment_id(att_id: str) -> tuple[int, str] | None:
    if not att_id.startswith("ANGjdJ"):
        return None
    body = att_id[6:]
    try:
        num, part_id = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().split(":", 1)
        return int(num), part_id
    except (ValueError, UnicodeDecodeError):
        return None


def _part_bytes(part: Message) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if data is None:
        payload = part.get_payload()
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""
    return data


def payload(raw: bytes, msg_num: int) -> dict[str, Any]:
    """The MessagePart tree of format=full."""
    return _part(parse(raw), "", msg_num)


def _part(part: Message, part_id: str, msg_num: int) -> dict[str, Any]:
    filename = part.get_filename() or ""
    out: dict[str, Any] = {
        "partId": part_id,
        "mimeType": part.get_content_type(),
        "filename": _clean(filename),
        "headers": _headers(part),
    }
    if part.is_multipart():
        out["body"] = {"size": 0}
        children = part.get_payload()
        prefix = "" if part_id == "" else part_id + "."
        out["parts"] = [_part(child, f"{prefix}{i}", msg_num) for i, child in enumerate(children)]
        return out
    data = _part_bytes(part)
    if filename:
        out["body"] = {"attachmentId": attachment_id(msg_num, part_id), "size": len(data)}
    else:
        out["body"] = {"size": len(data), "data": b64url(data)} if data else {"size": 0}
    return out


def metadata_payload(raw: bytes, only: list[str] | None) -> dict[str, Any]:
    """The payload of format=metadata: top-level headers (optionally filtered) only."""
    msg = BytesHeaderParser(policy=compat32).parsebytes(raw)
    wanted = {h.lower() for h in only} if only else None
    return {"partId": "", "mimeType": msg.get_content_type(), "filename": "",
            "headers": _headers(msg, wanted), "body": {"size": 0}}


def metadata_of_tree(tree: dict[str, Any], only: list[str] | None) -> dict[str, Any]:
    """metadata_payload's answer, taken from an already built format=full tree."""
    wanted = {h.lower() for h in only} if only else None
    headers = tree["headers"] if wanted is None else [
        h for h in tree["headers"] if h["name"].lower() in wanted]
    return {"partId": "", "mimeType": tree["mimeType"], "filename": "", "headers": headers,
            "body": {"size": 0}}


def find_part(raw: bytes, part_id: str) -> bytes | None:
    """Decoded bytes of the part at `part_id` (for attachments.get)."""
    part: Message = parse(raw)
    if part_id:
        for index in part_id.split("."):
            if not part.is_multipart():
                return None
            children = part.get_payload()
            i = int(index)
            if i >= len(children):
                return None
            part = children[i]
    if part.is_multipart():
        return None
    return _part_bytes(part)


def _decode_text(part: Message) -> str:
    data = _part_bytes(part)
    charset = part.get_content_charset() or "utf-8"
    try:
        return data.decode(charset, "replace")
    except LookupError:
        return data.decode("utf-8", "replace")


def snippet(raw: bytes) -> str:
    """First ~200 characters of the message text, whitespace collapsed, HTML unescaped."""
    msg = parse(raw)
    plain = html_text = None
    for part in msg.walk():
        if part.is_multipart() or part.get_filename():
            continue
        ctype = part.get_content_type()
        if ctype == "text/plain" and plain is None:
            plain = _decode_text(part)
        elif ctype == "text/html" and html_text is None:
            html_text = _decode_text(part)
    if plain is None and html_text is not None:
        plain = html.unescape(_TAGS.sub(" ", html_text))
    return " ".join((plain or "").split())[:200]


def header_value(raw: bytes, name: str) -> str | None:
    msg = BytesHeaderParser(policy=compat32).parsebytes(raw)
    value = msg.get(name)
    return None if value is None else _clean(value)
