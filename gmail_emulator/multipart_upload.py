"""The media-upload form of messages.insert/import (`/upload/gmail/v1/...`).

google-api-python-client sends `uploadType=media` (the message itself) or
`uploadType=multipart` (multipart/related: JSON metadata, then the message).
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import bad_request


def parse(params: dict[str, list[str]], headers: dict[str, str], body: bytes) -> dict[str, Any]:
    kind = (params.get("uploadType") or ["media"])[0]
    if kind == "media":
        return {"_raw_bytes": body}
    if kind != "multipart":
        raise bad_request(f"Unsupported uploadType: {kind}")
    match = re.search(r'boundary="?([^";]+)"?', headers.get("content-type", ""))
    if not match:
        raise bad_request("multipart upload without boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    sections = [s for s in body.split(delimiter)[1:] if not s.startswith(b"--")]
    if len(sections) < 2:
        raise bad_request("multipart upload needs metadata and media parts")
    meta = _content(sections[0])
    media = _content(sections[1])
    try:
        out = json.loads(meta) if meta.strip() else {}
    except ValueError:
        raise bad_request("Invalid JSON metadata in upload") from None
    out["_raw_bytes"] = media
    return out


def _content(section: bytes) -> bytes:
    section = section.lstrip(b"\r\n")
    match = re.search(rb"\r?\n\r?\n", section)
    data = section[match.end():] if match else b""
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    return data
