"""multipart/mixed batch requests: parse the parts, serialise the answers.

The answer format follows what googleapiclient.http.BatchHttpRequest parses: each part
is `application/http` with `Content-ID: <response-ORIGINAL>` and an inner HTTP response
(status line with a reason phrase, headers, CRLF CRLF, body).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from http import HTTPStatus

from .errors import bad_request

MAX_PARTS = 100


@dataclass
class Part:
    content_id: str | None
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def _split_head(block: bytes) -> tuple[list[bytes], bytes]:
    """Header lines and the rest of a block separated by the first empty line."""
    match = re.search(rb"\r?\n\r?\n", block)
    if match is None:
        return block.splitlines(), b""
    return block[:match.start()].splitlines(), block[match.end():]


def _headers(lines: list[bytes]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def parse(content_type: str, body: bytes) -> list[Part]:
    match = re.search(r'boundary="?([^";]+)"?', content_type or "", re.I)
    if not content_type.lower().startswith("multipart/") or not match:
        raise bad_request("Batch request must be multipart/mixed with a boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    chunks = body.split(delimiter)
    parts: list[Part] = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk.lstrip(b"\r\n") if chunk.startswith((b"\r\n", b"\n")) else chunk
        if chunk.endswith(b"\r\n"):
            chunk = chunk[:-2]
        elif chunk.endswith(b"\n"):
            chunk = chunk[:-1]
        outer_lines, inner = _split_head(chunk)
        outer = _headers(outer_lines)
        inner_lines, inner_body = _split_head(inner)
        if not inner_lines:
            raise bad_request("Batch part without an HTTP request")
        request_line = inner_lines[0].decode("latin-1").split()
        if len(request_line) < 2:
            raise bad_request("Malformed request line in batch part")
        parts.append(Part(outer.get("content-id"), request_line[0].upper(), request_line[1],
                          _headers(inner_lines[1:]), inner_body))
    if len(parts) > MAX_PARTS:
        raise bad_request(f"Too many requests in batch: received {len(parts)}, limit {MAX_PARTS}",
                          "badRequest")
    return parts


def response_id(content_id: str | None) -> str:
    if not content_id:
        return "<response->"
    inner = content_id.strip()
    if inner.startswith("<") and inner.endswith(">"):
        inner = inner[1:-1]
    return f"<response-{inner}>"


def serialise(answers: list[tuple[str | None, int, dict[str, str], bytes]]) -> tuple[str, bytes]:
    """(Content-Type, body) of the multipart/mixed batch answer."""
    boundary = "batch_" + secrets.token_hex(12)
    out: list[bytes] = []
    for content_id, status, headers, body in answers:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        head = [f"--{boundary}", "Content-Type: application/http",
                f"Content-ID: {response_id(content_id)}", "",
                f"HTTP/1.1 {status} {reason}"]
        for name, value in headers.items():
            head.append(f"{name}: {value}")
        head.append(f"Content-Length: {len(body)}")
        out.append(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode())
    return f"multipart/mixed; boundary={boundary}", b"".join(out)
