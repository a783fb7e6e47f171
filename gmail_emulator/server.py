"""HTTP front end: a threaded HTTP/1.1 keep-alive server that routes to the Emulator.

Paths are those of Google's hosts (gmail.googleapis.com, oauth2.googleapis.com,
accounts.google.com, www.googleapis.com) mounted under one base URL. Responses are
written in a single send with TCP_NODELAY so keep-alive clients never wait on Nagle.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import batch, control_api
from .errors import ApiError, ConnectionDrop

Response = tuple[int, dict[str, str], bytes]
OAUTH_AUTHORIZE = {"o/oauth2/v2/auth", "o/oauth2/auth"}
OAUTH_TOKEN = {"token", "o/oauth2/token", "oauth2/v4/token"}
OAUTH_REVOKE = {"revoke", "o/oauth2/revoke"}
USERINFO = {"v1/userinfo", "oauth2/v1/userinfo", "oauth2/v2/userinfo", "oauth2/v3/userinfo",
            "userinfo/v2/me"}
BATCH = {"batch", "batch/gmail/v1"}
# Google's signing certificates of its OIDC tokens (PEM by key id): here the emulator's
# own, which sign its push requests.
CERTS = {"oauth2/v1/certs"}
OAUTH_PATHS = OAUTH_AUTHORIZE | OAUTH_TOKEN | OAUTH_REVOKE | USERINFO


def _split_target(target: str) -> tuple[str, dict[str, list[str]]]:
    split = urlsplit(target)
    return unquote(split.path).lstrip("/"), parse_qs(split.query, keep_blank_values=True)


def _apply_override(method: str, params: dict[str, list[str]], headers: dict[str, str],
                    body: bytes) -> tuple[str, bytes]:
    """x-http-method-override: the client turns long GETs into form-encoded POSTs."""
    override = headers.get("x-http-method-override")
    if not override or method != "POST":
        return method, body
    if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        for key, values in parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).items():
            params.setdefault(key, []).extend(values)
        body = b""
    return override.upper(), body


def dispatch(emu: Any, method: str, path: str, params: dict[str, list[str]],
             headers: dict[str, str], body: bytes, base_url: str) -> Response:
    method, body = _apply_override(method, params, headers, body)
    if path.startswith("_emulator/v1/"):
        return control_api.handle(emu, method, path[len("_emulator/v1/"):], params, body)
    if path in BATCH and method == "POST":
        return handle_batch(emu, headers, body)
    if path in CERTS and method == "GET":
        certs = json.dumps(emu.oidc_certs()).encode()
        headers = {"Content-Type": "application/json", "Cache-Control": "public, max-age=3600"}
        return _count(emu, "oauth2.certs", (200, headers, certs))
    if path in OAUTH_PATHS:
        try:  # scripted faults apply to the OAuth endpoints too (a token endpoint 503)
            emu.take_scripted_fault("/" + path)
        except ApiError as exc:
            return _count(emu, _oauth_method(path), _error_response(exc))
        except ConnectionDrop:
            emu._count(_oauth_method(path), 0)
            raise
    if path in OAUTH_AUTHORIZE and method == "GET":
        return _count(emu, "oauth2.authorize", emu.oauth.authorize(params, base_url))
    if path in OAUTH_TOKEN and method == "POST":
        return _count(emu, "oauth2.token", emu.oauth.token(headers, body))
    if path in USERINFO and method == "GET":
        return _count(emu, "oauth2.userinfo", emu.oauth.userinfo(headers, params))
    if path in OAUTH_REVOKE and method == "POST":
        return emu.oauth.revoke(params, body)
    if path.startswith(("gmail/v1/", "upload/gmail/v1/")):
        return emu.handle_gmail(method, path, params, headers, body)
    err = ApiError(404, "notFound", f"Not Found: /{path}")
    return 404, {"Content-Type": "application/json"}, err.body_bytes()


def _oauth_method(path: str) -> str:
    for paths, method_id in (
        (OAUTH_AUTHORIZE, "oauth2.authorize"),
        (OAUTH_TOKEN, "oauth2.token"),
        (USERINFO, "oauth2.userinfo"),
        (OAUTH_REVOKE, "oauth2.revoke"),
    ):
        if path in paths:
            return method_id
    return "oauth2"


def _count(emu: Any, method_id: str, response: Response) -> Response:
    emu._count(method_id, response[0])
    return response


def _error_response(exc: ApiError) -> Response:
    out = {"Content-Type": "application/json"}
    out.update(exc.headers)
    return exc.code, out, exc.body_bytes()


def handle_batch(emu: Any, headers: dict[str, str], body: bytes) -> Response:
    try:
        emu.take_scripted_fault("/batch")
        parts = batch.parse(headers.get("content-type", ""), body)
    except ApiError as exc:
        return _error_response(exc)
    outer_auth = headers.get("authorization")
    jobs = []
    for part in parts:
        path, params = _split_target(part.target)
        part_headers = dict(part.headers)
        if outer_auth and "authorization" not in part_headers:
            part_headers["authorization"] = outer_auth
        method, part_body = _apply_override(part.method, params, part_headers, part.body)
        jobs.append((method, path, params, part_headers, part_body))
    results = emu.serve_calls(jobs)
    answers = [(part.content_id, status, hdrs, out)
               for part, (status, hdrs, out) in zip(parts, results, strict=True)]
    content_type, payload = batch.serialise(answers)
    return 200, {"Content-Type": content_type}, payload


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ESF"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        started = time.perf_counter()
        body = self._read_body()
        path, params = _split_target(self.path)
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            status, out_headers, out = dispatch(self.server.emu, self.command, path, params,
                                                headers, body, self.server.base_url)
        except ConnectionDrop:
            self._drop()
            return
        except Exception as exc:
            status, out_headers = 500, {"Content-Type": "application/json"}
            out = json.dumps({"error": {"code": 500, "message": str(exc), "errors": [],
                                        "status": "INTERNAL"}}).encode()
        self._send(status, out_headers, out)
        if self.server.emu.config.log_requests:
            ms = (time.perf_counter() - started) * 1000
            sys.stdout.write(f"{self.command} {self.path[:200]} {status} {ms:.1f}ms\n")
            sys.stdout.flush()

    def _drop(self) -> None:
        """A scripted network failure: close the connection without a byte of answer."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        if self.server.emu.config.log_requests:
            sys.stdout.write(f"{self.command} {self.path[:200]} dropped\n")
            sys.stdout.flush()

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Unknown"
        lines = [f"HTTP/1.1 {status} {phrase}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items() if k.lower() != "content-length"]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    emu: Any
    base_url: str


class EmulatorServer:
    """Owns the listening socket and the serve_forever thread."""

    def __init__(self, emu: Any, host: str, port: int) -> None:
        self.httpd = _Server((host, port), Handler)
        self.httpd.emu = emu
        real_host, real_port = self.httpd.server_address[:2]
        self.base_url = f"http://{real_host}:{real_port}/"
        self.httpd.base_url = self.base_url
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="gmail-emu-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
