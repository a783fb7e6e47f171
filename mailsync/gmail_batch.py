"""Gmail's batch requests, written and read without the email package (issue 13).

Part of `mailsync/gmail.py`, the one home of Gmail calls (only it uses this module).
googleapiclient's `BatchHttpRequest` builds each part as a MIME message with
`email.generator` and parses the multipart answer with `email.feedparser`: about
40 % of the CPU a CPU-bound sync spent on a batch outside our own code. The format
is simple (https://developers.google.com/gmail/api/guides/batch): parts separated
by a boundary, each an `application/http` request or response. `LeanBatch` writes
and reads it directly; everything else (credentials, the 401 retry, the callbacks
with `HttpError`s, the JSON decoding of each part) is googleapiclient's own. An
answer this reader does not understand is read by googleapiclient's parser instead.
"""

from __future__ import annotations

import re
import urllib.parse
import uuid

import httplib2
from googleapiclient import _auth
from googleapiclient.errors import BatchError, HttpError
from googleapiclient.http import BatchHttpRequest

_BOUNDARY = re.compile(rb'boundary="?([^";]+)"?', re.IGNORECASE)
_BLANK_LINE = re.compile(rb"\r?\n\r?\n")
_CONTENT_ID = re.compile(rb"^content-id:[ \t]*(.*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


class LeanBatch(BatchHttpRequest):
    """A BatchHttpRequest whose wire format is written and read by hand."""

    def _execute(self, http, order, requests) -> None:
        boundary = f"===============mailsync{uuid.uuid4().hex}=="
        credentials = None
        for request_id in order:
            if requests[request_id].http is not None:
                credentials = _auth.get_credentials_from_http(requests[request_id].http)
                break
        chunks = []
        for request_id in order:
            chunks.append(
                f"--{boundary}\r\nContent-Type: application/http\r\n"
                f"Content-Transfer-Encoding: binary\r\n"
                f"Content-ID: {self._id_to_header(request_id)}\r\n\r\n"
                f"{_request_text(requests[request_id], credentials)}\r\n"
            )
        chunks.append(f"--{boundary}--\r\n")
        resp, content = http.request(
            self._batch_uri,
            method="POST",
            body="".join(chunks),
            headers={"content-type": f'multipart/mixed; boundary="{boundary}"'},
        )
        if resp.status >= 300:
            raise HttpError(resp, content, uri=self._batch_uri)
        try:
            responses = _read_answer(resp.get("content-type", ""), content)
            self._responses.update(
                (self._header_to_id(content_id), answer) for content_id, answer in responses
            )
        except (ValueError, IndexError, BatchError):
            # Not the form Google and the emulator answer in: googleapiclient reads it.
            self._read_with_email_parser(resp, content)

    def _read_with_email_parser(self, resp, content: bytes) -> None:
        from email.parser import FeedParser

        parser = FeedParser()
        parser.feed(f"content-type: {resp['content-type']}\r\n\r\n" + content.decode("utf-8"))
        answer = parser.close()
        if not answer.is_multipart():
            raise BatchError("Response not in multipart/mixed format.", resp=resp, content=content)
        for part in answer.get_payload():
            response, body = self._deserialize_response(part.get_payload())
            self._responses[self._header_to_id(part["Content-ID"])] = (
                response,
                body.encode("utf-8") if isinstance(body, str) else body,
            )


def _request_text(request, credentials) -> str:
    """One part: the request line, its headers (credentials applied), its body."""
    url = urllib.parse.urlsplit(request.uri)
    target = url.path + (f"?{url.query}" if url.query else "")
    headers = dict(request.headers)
    if credentials is not None:
        _auth.apply_credentials(credentials, headers)
    headers.pop("content-type", None)
    content_type = request.headers.get("content-type", "application/json")
    lines = [f"{request.method} {target} HTTP/1.1", f"Content-Type: {content_type}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Host: {url.netloc}")
    body = request.body
    if body is not None:
        if isinstance(body, bytes):
            body = body.decode("utf-8")
        lines.append(f"content-length: {len(body.encode('utf-8'))}")
    return "\r\n".join(lines) + "\r\n\r\n" + (body or "")


def _read_answer(content_type: str, content: bytes) -> list[tuple[str, tuple]]:
    """(Content-ID, (httplib2.Response, body bytes)) of each part of a batch answer."""
    match = _BOUNDARY.search(content_type.encode("latin-1"))
    if match is None:
        raise ValueError("no boundary")
    chunks = content.split(b"--" + match.group(1))
    answers = []
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.removeprefix(b"\n")
        chunk = chunk[:-2] if chunk.endswith(b"\r\n") else chunk.removesuffix(b"\n")
        outer, inner = _BLANK_LINE.split(chunk, maxsplit=1)
        content_id = _CONTENT_ID.search(outer)
        if content_id is None:
            raise ValueError("a part without Content-ID")
        head, _, body = inner.partition(b"\r\n\r\n")
        if not _:
            head, _, body = inner.partition(b"\n\n")
        lines = head.decode("latin-1").splitlines()
        protocol, status, *reason = lines[0].split(" ", 2)
        fields = {"status": status}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                fields[name.strip().lower()] = value.strip()
        response = httplib2.Response(fields)
        response.reason = reason[0] if reason else ""
        response.version = int(protocol.split("/", 1)[1].replace(".", ""))
        answers.append((content_id.group(1).decode("latin-1"), (response, body)))
    if not answers:
        raise ValueError("no parts")
    return answers
