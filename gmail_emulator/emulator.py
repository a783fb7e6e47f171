"""The Emulator: mailboxes, tokens, quota, faults and stats behind one object.

`handle_gmail` is the single pipeline every Gmail call (plain or batch part) goes
through: scripted faults, authentication, user check, daily limit, concurrency,
quota, latency, random faults, then the method itself. The HTTP server and the batch
code are thin layers on top of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from . import api, generator, multipart_upload
from .config import EmulatorConfig
from .errors import ApiError, ConnectionDrop, backend_error, bad_request
from .mailbox import Mailbox
from .oauth import OAuthServer
from .push import Notifier
from .quota import Quota, cost_of

log = logging.getLogger("gmail_emulator")
Response = tuple[int, dict[str, str], bytes]
GmailCall = tuple[str, str, dict[str, list[str]], dict[str, str], bytes]  # method, path, params, headers, body
JSON_HEADERS = {"Content-Type": "application/json; charset=UTF-8"}
# Compact and without the circular-reference check: a quarter less encoding time.
_JSON = json.JSONEncoder(check_circular=False, separators=(",", ":"))
DEFAULT_CLIENT_ID = "emulator-client-id.apps.googleusercontent.com"
DEFAULT_CLIENT_SECRET = "emulator-secret"
DEFAULT_SCOPE = ("https://www.googleapis.com/auth/gmail.readonly openid "
                 "https://www.googleapis.com/auth/userinfo.email")


class Emulator:
    """An in-process Gmail API + OAuth emulator; see docs/emulator.md."""

    def __init__(self, config: EmulatorConfig | None = None, *,
                 client_id: str = DEFAULT_CLIENT_ID,
                 client_secret: str = DEFAULT_CLIENT_SECRET) -> None:
        self.config = config or EmulatorConfig()
        self.client_id = client_id
        self.client_secret = client_secret
        self.rng = random.Random(self.config.seed ^ 0x5EED)
        self.mailboxes: dict[str, Mailbox] = {}
        self.oauth = OAuthServer(self)
        self.quota = Quota()
        self.notifier = Notifier(self)
        self.executor = ThreadPoolExecutor(max_workers=512, thread_name_prefix="gmail-emu-part")
        self._lock = threading.Lock()
        self._faults: list[ScriptedFault] = []
        self._stats_lock = threading.Lock()
        self.reset_stats()
        self.responses: deque[tuple[str, Any]] = deque(maxlen=self.config.record_responses_max)
        self._server: Any = None
        self._activity: Any = None
        self._oidc: Any = None

    # ----- mailboxes ------------------------------------------------------------------------
    def mailbox_emails(self) -> list[str]:
        return list(self.mailboxes)

    def mailbox(self, email: str) -> Mailbox:
        mb = self.mailboxes.get(email.lower())
        if mb is None:
            raise KeyError(f"no mailbox {email}")
        return mb

    def _new_mailbox(self, email: str, seed: int | None) -> Mailbox:
        email = email.lower()
        if email in self.mailboxes:
            raise ValueError(f"mailbox {email} exists")
        mb_seed = seed if seed is not None else self.config.seed * 1_000_003 + zlib.crc32(email.encode())
        rng = random.Random(mb_seed ^ 0xC0FFEE)
        id_base = (0x18C << 52) + ((mb_seed & 0xFFFFF) << 28)
        mb = Mailbox(email, mb_seed, id_base, 100_000 + rng.randint(0, 99_999), rng,
                     step_max=self.config.history_id_step_max)
        mb.init_system_labels()
        mb.refresh_token = self.oauth.tokens.issue_refresh(email, DEFAULT_SCOPE)
        mb.access_token = self.oauth.tokens.issue_access(email, mb.refresh_token,
                                                         self.config.token_lifetime_s)
        mb.listeners.append(self.notifier.changed)
        return mb

    def add_mailbox(self, email: str, count: int = 1000, seed: int | None = None) -> Mailbox:
        """A generated mailbox of `count` messages, deterministic for (config.seed, email)."""
        mb = self._new_mailbox(email, seed)
        until = self.config.generated_until_ms
        if until is None:
            until = int(time.time() // 86400 * 86400 * 1000)
        mb.generated_until_ms = until
        generator.populate(mb, count, until, self.config.generated_span_days,
                           self.config.chat_rate, self.config.unknown_label_rate)
        mb.mark_history_id()
        with self._lock:
            self.mailboxes[mb.email] = mb
        return mb

    def add_mailbox_from_mbox(self, email: str, path: str) -> Mailbox:
        """A mailbox filled from an mbox file (Google Takeout's X-Gmail-Labels honoured)."""
        from .mbox import load_mbox

        mb = self._new_mailbox(email, None)
        load_mbox(mb, path)
        mb.mark_history_id()
        with self._lock:
            self.mailboxes[mb.email] = mb
        return mb

    def issue_access_token(self, email: str, lifetime_s: float | None = None) -> str:
        mb = self.mailbox(email)
        life = self.config.token_lifetime_s if lifetime_s is None else lifetime_s
        return self.oauth.tokens.issue_access(mb.email, mb.refresh_token, life)

    # ----- Python mutations (each writes history like the API) ------------------------------
    def insert_message(self, email: str, label_ids: tuple[str, ...] | list[str] = ("INBOX", "UNREAD"),
                       raw: bytes | None = None) -> str:
        mb = self.mailbox(email)
        if raw is None:
            msg = api.insert_generated(mb, list(label_ids), self.rng)
        else:
            msg = api.insert_raw(mb, raw, list(label_ids))
        return mb.msg_id(msg.num)

    def modify_message(self, email: str, msg_id: str, add: Any = (), remove: Any = ()) -> None:
        self.mailbox(email).modify(msg_id, list(add), list(remove))

    def trash_message(self, email: str, msg_id: str) -> None:
        self.mailbox(email).trash(msg_id)

    def untrash_message(self, email: str, msg_id: str) -> None:
        self.mailbox(email).untrash(msg_id)

    def delete_message(self, email: str, msg_id: str) -> None:
        self.mailbox(email).delete(msg_id)

    def create_label(self, email: str, name: str, color: dict[str, str] | None = None) -> str:
        return self.mailbox(email).create_label(name, color).id

    def update_label(self, email: str, label_id: str, **fields: Any) -> None:
        self.mailbox(email).update_label(label_id, fields)

    def delete_label(self, email: str, label_id: str) -> None:
        self.mailbox(email).delete_label(label_id)

    def expire_history(self, email: str) -> None:
        self.mailbox(email).expire_history()

    def revoke_refresh_token(self, refresh_token: str) -> bool:
        return self.oauth.tokens.revoke(refresh_token)

    def script_fault(self, path_regex: str, count: int = 1, status: int = 503,
                     reason: str = "backendError", seconds: float | None = None) -> None:
        """Fail the next `count` requests whose path (no query) matches `path_regex`, or,
        with `seconds`, every matching request until that many seconds from now (`count`
        is then ignored). `status` 0 drops the connection without an answer (a network
        error for the client); otherwise the answer is Google's error body with `reason`."""
        if status != 0 and not 400 <= status <= 599:
            raise ValueError(f"fault status must be 0 (drop) or 400-599, not {status}")
        if seconds is not None and seconds <= 0:
            raise ValueError(f"fault seconds must be positive, not {seconds}")
        try:
            pattern = re.compile(path_regex)
        except re.error as exc:
            raise ValueError(f"bad path_regex {path_regex!r}: {exc}") from None
        until = None if seconds is None else time.monotonic() + seconds
        fault = ScriptedFault(pattern, count, status, reason, until)
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def set_daily_limit_exceeded(self, email: str, exceeded: bool = True) -> None:
        self.mailbox(email).daily_limit_exceeded = exceeded

    def force_empty_history_pages(self, email: str, n: int) -> None:
        mb = self.mailbox(email)
        with mb.lock:
            mb.forced_empty_pages = n

    def start_activity(self, per_minute: float) -> None:
        from .activity import Activity

        self.stop_activity()
        self._activity = Activity(self, per_minute)
        self._activity.start()

    def stop_activity(self) -> None:
        if self._activity is not None:
            self._activity.stop()
            self._activity = None

    # ----- Pub/Sub's OIDC tokens (push requests) ----------------------------------------------
    @property
    def oidc(self) -> Any:
        """The signer of push tokens; `cryptography` is loaded on first use only."""
        if self._oidc is None:
            from .oidc import Signer

            self._oidc = Signer()
        return self._oidc

    def push_token(self, url: str | None = None, audience: str | None = None,
                   service_account: str | None = None) -> str:
        """The token Pub/Sub would send to `url`: aud = `audience`, else the configured
        push_audience, else the push URL."""
        from .oidc import push_claims

        cfg = self.config
        aud = audience or cfg.push_audience or url or cfg.push_url or ""
        return self.oidc.sign(push_claims(aud, service_account or cfg.push_service_account))

    def oidc_certs(self) -> dict[str, str]:
        return self.oidc.certs()

    # ----- inspection ----------------------------------------------------------------------
    def snapshot(self, email: str) -> dict[str, Any]:
        mb = self.mailbox(email)
        with mb.lock:
            return {
                "historyId": str(mb.history_id),
                "messages": {mb.msg_id(m.num): {"threadId": mb.msg_id(m.tid),
                                                "labelIds": sorted(m.labels),
                                                "internalDate": str(m.date)}
                             for m in mb.msgs.values()},
                "labels": [{"id": lab.id, "name": lab.name, "type": lab.type}
                           for lab in mb.labels.values()],
            }

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            return {"requests": self._requests, "by_method": dict(self._by_method),
                    "by_status": dict(self._by_status), "fetches": dict(self._fetches),
                    "units": sum(self._units_by_method.values()),
                    "units_by_method": dict(self._units_by_method)}

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._requests = 0
            self._by_method: dict[str, int] = {}
            self._by_status: dict[str, int] = {}
            self._fetches: dict[str, int] = {}
            self._units_by_method: dict[str, int] = {}

    def _count_units(self, method_id: str, units: int) -> None:
        with self._stats_lock:
            self._units_by_method[method_id] = self._units_by_method.get(method_id, 0) + units

    def count_fetch(self, msg_id: str) -> None:
        with self._stats_lock:
            self._fetches[msg_id] = self._fetches.get(msg_id, 0) + 1

    def _count(self, method_id: str, status: int) -> None:
        with self._stats_lock:
            self._requests += 1
            self._by_method[method_id] = self._by_method.get(method_id, 0) + 1
            key = str(status)
            self._by_status[key] = self._by_status.get(key, 0) + 1

    # ----- the request pipeline ------------------------------------------------------------
    def take_scripted_fault(self, path: str) -> None:
        """Raise the first live scripted fault matching `path` (leading '/', no query):
        ApiError, or ConnectionDrop for status 0. The one check every path goes through."""
        if not self._faults:
            return
        now = time.monotonic()
        with self._lock:
            self._faults = [f for f in self._faults if f.live(now)]
            fault = next((f for f in self._faults if f.pattern.search(path)), None)
            if fault is None:
                return
            if fault.until is None:
                fault.remaining -= 1
        if fault.status == 0:
            raise ConnectionDrop(path)
        raise ApiError(fault.status, fault.reason,
                       headers={"Retry-After": "1"} if fault.status == 429 else None)

    def handle_gmail(self, method: str, path: str, params: dict[str, list[str]],
                     headers: dict[str, str], body: bytes) -> Response:
        """Serve one Gmail API call; `headers` keys are lower-case; path has no leading '/'."""
        return self.serve_calls([(method, path, params, headers, body)])[0]

    def serve_calls(self, calls: list[GmailCall]) -> list[Response]:
        """Serve Gmail calls that arrive together (one plain request, or a batch's parts).

        Every call is checked (faults, route, token, user, daily limit) and admitted
        against the per-user concurrency limit before any runs, because Gmail fans a
        batch's parts out at once: a 50-part batch is 50 requests in flight. Admitted
        calls then run in this thread, or side by side when latency is configured.
        """
        cfg = self.config
        done: list[_Outcome | None] = [None] * len(calls)
        admitted: list[tuple[int, _Prepared]] = []
        for i, call in enumerate(calls):
            prep = _Prepared()
            try:
                self._prepare(prep, *call)
                self.quota.enter(prep.email, cfg.concurrent_requests_per_user)
                admitted.append((i, prep))
            except ApiError as exc:
                done[i] = _Outcome(prep.method_id, exc.code, exc.body(), exc.headers)
            except ConnectionDrop:
                # The whole HTTP answer is lost (a batch's too): free the admitted slots.
                for _, admitted_prep in admitted:
                    self.quota.leave(admitted_prep.email)
                self._count(prep.method_id, 0)
                raise
            except Exception:
                log.exception("emulator error serving %s /%s", call[0], call[1])
                done[i] = _Outcome(prep.method_id, 500, backend_error(500).body(), {})
        if len(admitted) > 1 and (cfg.latency_ms > 0 or cfg.jitter_ms > 0):
            futures = [(i, self.executor.submit(self._run, prep)) for i, prep in admitted]
            for i, future in futures:
                done[i] = future.result()
        else:
            for i, prep in admitted:
                done[i] = self._run(prep)
        return [self._answer(outcome) for outcome in done if outcome is not None]

    def _prepare(self, prep: _Prepared, method: str, path: str, params: dict[str, list[str]],
                 headers: dict[str, str], body: bytes) -> None:
        """Route and authenticate one call into `prep` (ApiError if it is refused)."""
        try:
            self._route(prep, method, path, params, headers, body)
        except ApiError:
            self.take_scripted_fault("/" + path)  # a fault answers before a bad request
            raise
        self.take_scripted_fault("/" + path)
        prep.params = params
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else (
            params.get("access_token") or [None])[0]
        email = self.oauth.tokens.check(token)
        mb = self.mailboxes.get(email)
        if mb is None:
            raise ApiError(401, "authError", "Invalid Credentials")
        user = prep.args["user"]
        if user != "me" and user.lower() != email:
            raise ApiError(403, "forbidden", f"Delegation denied for {email}")
        if mb.daily_limit_exceeded:
            raise ApiError(403, "dailyLimitExceeded",
                           "Daily Limit Exceeded. The quota will be reset at midnight Pacific Time.")
        prep.email, prep.mb = email, mb

    @staticmethod
    def _route(prep: _Prepared, method: str, path: str, params: dict[str, list[str]],
               headers: dict[str, str], body: bytes) -> None:
        upload = api.UPLOAD_ROUTE.match(path)
        if upload and method == "POST":
            prep.method_id = "gmail.users.messages." + ("import" if upload["kind"] else "insert")
            prep.fn, prep.args = api.messages_insert, {"user": upload["user"]}
            prep.payload = multipart_upload.parse(params, headers, body)
            return
        found = api.route(method, path)
        if found is None:
            raise ApiError(404, "notFound", f"Method not found: {method} /{path}")
        prep.method_id, prep.fn, prep.args = found
        prep.payload = _json_body(body) if method in ("POST", "PUT", "PATCH") else {}

    def _run(self, prep: _Prepared) -> _Outcome:
        """Charge, delay, maybe fail, then run an admitted call; always leaves its slot."""
        cfg = self.config
        try:
            units = cost_of(prep.method_id)
            self.quota.charge(prep.email, units, cfg.quota_user_per_minute,
                              cfg.quota_project_per_minute, cfg.quota_window_s,
                              cfg.rate_limit_status)
            self._count_units(prep.method_id, units)
            delay = cfg.latency_ms + (self.rng.uniform(0, cfg.jitter_ms) if cfg.jitter_ms else 0)
            if delay > 0:
                time.sleep(delay / 1000)
            if cfg.fault_rate and self.rng.random() < cfg.fault_rate:
                raise backend_error(self.rng.choice((500, 503)))
            status, obj = prep.fn(api.Call(self, prep.mb, prep.params, prep.payload, prep.args))
            return _Outcome(prep.method_id, status, obj, {})
        except ApiError as exc:
            return _Outcome(prep.method_id, exc.code, exc.body(), exc.headers)
        except Exception:
            log.exception("emulator error serving %s", prep.method_id)
            return _Outcome(prep.method_id, 500, backend_error(500).body(), {})
        finally:
            self.quota.leave(prep.email)

    def _answer(self, outcome: _Outcome) -> Response:
        self._count(outcome.method_id, outcome.status)
        if outcome.body is None:
            return outcome.status, dict(outcome.headers), b""
        if self.config.record_responses and outcome.status < 300:
            self.responses.append((outcome.method_id, outcome.body))
        out = dict(JSON_HEADERS)
        out.update(outcome.headers)
        return outcome.status, out, _JSON.encode(outcome.body).encode()

    # ----- serving -------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background thread; returns the base URL (ends with '/')."""
        from .server import EmulatorServer

        if self._server is not None:
            raise RuntimeError("already serving")
        self._server = EmulatorServer(self, host, port)
        self._server.start()
        self.notifier.start()
        return self._server.base_url

    def stop(self) -> None:
        self.stop_activity()
        self.notifier.stop()
        if self._server is not None:
            self._server.stop()
            self._server = None

    @property
    def base_url(self) -> str | None:
        return self._server.base_url if self._server else None

    @contextlib.contextmanager
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        url = self.start(host, port)
        try:
            yield url
        finally:
            self.stop()


@dataclass
class ScriptedFault:
    pattern: re.Pattern[str]
    remaining: int
    status: int  # 0: drop the connection
    reason: str
    until: float | None  # time.monotonic() deadline of a timed fault

    def live(self, now: float) -> bool:
        return self.remaining > 0 if self.until is None else now < self.until


class _Prepared:
    """A Gmail call that passed the checks before admission."""

    __slots__ = ("args", "email", "fn", "mb", "method_id", "params", "payload")

    def __init__(self) -> None:
        self.method_id = "unknown"
        self.fn: Any = None
        self.args: dict[str, str] = {}
        self.payload: dict[str, Any] = {}
        self.params: dict[str, list[str]] = {}
        self.email = ""
        self.mb: Any = None


class _Outcome(NamedTuple):
    method_id: str
    status: int
    body: Any
    headers: dict[str, str]


def _json_body(body: bytes) -> dict[str, Any]:
    if not body or not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise bad_request("Invalid JSON payload received.") from None
    if not isinstance(value, dict):
        raise bad_request("Invalid JSON payload received. Expected an object.")
    return value


def utc_now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
