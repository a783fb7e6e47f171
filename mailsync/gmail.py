"""The one home of every Gmail API call.

Nothing else in the project imports googleapiclient (but gmail_batch.py, the wire
format of its batch requests, and gmail_errors.py, which reads its HttpError). Each function is one remote call (or one batch of
them) with its quota reserved first, and every failure is turned into one of the
exceptions of gmail_errors.py (importable from here), each saying what the caller
should do.
Reference: https://developers.google.com/gmail/api/reference/rest
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

import google_auth_httplib2
import httplib2
from django.conf import settings
from googleapiclient.discovery import build_from_document
from googleapiclient.errors import HttpError
from googleapiclient.http import HttpRequest

from . import metrics, quota
from .credentials import (
    NoGoogleAccount,
    credentials_for,
)
from .gmail_batch import LeanBatch
from .gmail_errors import (
    AccessRevoked,
    DailyQuotaExhausted,
    GmailError,
    HistoryExpired,
    NotFound,
    PermanentError,
    RateLimited,
    TransientError,
    backoff_delay,
    classify,
    most_urgent,
    transport_errors_named,
)

log = logging.getLogger(__name__)

HTTP_TIMEOUT_S = 30
MAX_ATTEMPTS = 5
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]+")
_TEMPLATE_ID = "mailsyncTemplateId"  # stands for the id in GmailClient._get's templates


# --- Typed results -----------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    email: str
    messages_total: int
    threads_total: int
    history_id: str


@dataclass(frozen=True)
class MessageIdPage:
    ids: list[tuple[str, str]]  # (message id, thread id), newest first
    next_page_token: str


@dataclass(frozen=True)
class HistoryPage:
    records: list[dict]
    next_page_token: str
    history_id: str


@dataclass
class BatchResult:
    found: dict[str, dict] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)  # 404: deleted since listed
    failed: dict[str, GmailError] = field(default_factory=dict)  # still failing after retries
    # Whether the probe part (a message Gmail served before) was served this time.
    probe_ok: bool | None = None


# --- The client ---------------------------------------------------------------------------------
@cache
def _discovery_document() -> dict:
    import googleapiclient.discovery_cache

    return json.loads(googleapiclient.discovery_cache.get_static_doc("gmail", "v1"))


class GmailClient:
    """Gmail calls on behalf of one user, within the shared quota budget.

    `max_wait_s` bounds how long one call may wait for quota or back off, so a
    task stays within MAILSYNC_TASK_MAX_SECONDS; past it the call raises
    RateLimited and the task ends, to be resumed.
    """

    def __init__(self, user_id: int, max_wait_s: float | None = None):
        self.user_id = user_id
        self.max_wait_s = (
            max_wait_s if max_wait_s is not None else settings.MAILSYNC_TASK_MAX_SECONDS / 3
        )
        try:
            credentials = credentials_for(user_id)
        except NoGoogleAccount as exc:
            raise AccessRevoked(str(exc)) from exc
        http = google_auth_httplib2.AuthorizedHttp(
            credentials, http=httplib2.Http(timeout=HTTP_TIMEOUT_S)
        )
        self.service = build_from_document(
            _discovery_document(),
            http=http,
            client_options={"api_endpoint": settings.GOOGLE_API_ROOT},
        )
        self.batch_uri = settings.GOOGLE_API_ROOT + "batch/gmail/v1"
        self._templates: dict[tuple[str, str], HttpRequest] = {}  # see _get

    # -- plumbing --
    def _reserve(self, units: int) -> None:
        """Wait until the budget allows `units` (quota.reserve sleeps until then)."""
        reservation = quota.reserve(self.user_id, units, self.max_wait_s)
        if not reservation.granted:
            raise RateLimited(
                f"quota budget busy for {reservation.wait_s:.0f} s", retry_after=reservation.wait_s
            )
        if reservation.wait_s > 0:  # quota.reserve slept that long before granting
            metrics.quota_wait(reservation.wait_s)

    @contextmanager
    def _in_flight(self, parts: int) -> Iterator[None]:
        """Hold the user's permits for `parts` requests in flight, as Gmail counts them."""
        try:
            permits = quota.acquire_permits(self.user_id, parts, self.max_wait_s)
        except quota.PermitsBusy as exc:
            raise RateLimited(str(exc), retry_after=exc.wait_s, concurrency=True) from exc
        try:
            yield
        finally:
            quota.release_permits(permits)

    def _wait_or_raise(self, error: GmailError, attempt: int, deadline: float) -> None:
        if isinstance(error, RateLimited) and error.concurrency:
            delay = backoff_delay(attempt)  # the others finish soon; the budget is fine
        elif isinstance(error, RateLimited):
            quota.penalize(self.user_id, error.retry_after)
            delay = error.retry_after
        elif isinstance(error, TransientError):
            delay = backoff_delay(attempt)
        else:
            raise error
        if attempt + 1 >= MAX_ATTEMPTS or time.monotonic() + delay > deadline:
            raise error
        log.debug("user %s: %s; retrying in %.1f s", self.user_id, error, delay)
        time.sleep(delay)

    def _execute(self, method: str, make_request: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self.max_wait_s
        for attempt in range(MAX_ATTEMPTS):
            self._reserve(quota.COSTS[method])
            try:
                with self._in_flight(1), transport_errors_named():
                    data = make_request().execute(num_retries=0)
                metrics.gmail_call(method, 200, quota.COSTS[method])
                return data
            except HttpError as exc:
                error = classify(exc)
            except TransientError as exc:
                error = exc
            _count_failure(method, error, quota.COSTS[method])
            self._wait_or_raise(error, attempt, deadline)
        raise AssertionError("unreachable")

    # -- calls --
    def get_profile(self) -> Profile:
        """users.getProfile (1 unit)."""
        data = self._execute(
            "users.getProfile", lambda: self.service.users().getProfile(userId="me")
        )
        return Profile(
            email=data.get("emailAddress", ""),
            messages_total=int(data.get("messagesTotal", 0)),
            threads_total=int(data.get("threadsTotal", 0)),
            history_id=str(data["historyId"]),
        )

    def list_labels(self) -> list[dict]:
        """users.labels.list (1 unit): every label, without counters."""
        data = self._execute(
            "users.labels.list", lambda: self.service.users().labels().list(userId="me")
        )
        return list(data.get("labels", []))

    def get_labels(self, label_ids: Iterable[str]) -> BatchResult:
        """users.labels.get for many labels in batches (1 unit each): with counters."""
        labels = self.service.users().labels()
        return self._batch(
            [
                Part(label_id, "users.labels.get", partial(labels.get, userId="me", id=label_id))
                for label_id in label_ids
            ]
        )

    def list_message_ids(
        self,
        page_token: str = "",
        include_spam_trash: bool = True,
        label_id: str | None = None,
        max_results: int = 500,
    ) -> MessageIdPage:
        """users.messages.list (5 units): one page of ids, newest first."""
        params: dict[str, Any] = {
            "userId": "me",
            "maxResults": max_results,
            "includeSpamTrash": include_spam_trash,
        }
        if page_token:
            params["pageToken"] = page_token
        if label_id:
            params["labelIds"] = [label_id]
        data = self._execute(
            "users.messages.list", lambda: self.service.users().messages().list(**params)
        )
        ids = [(m["id"], m.get("threadId", "")) for m in data.get("messages", [])]
        return MessageIdPage(ids=ids, next_page_token=data.get("nextPageToken", ""))

    def get_messages(
        self, message_ids: Iterable[str], fmt: str | None = None, probe_id: str | None = None
    ) -> BatchResult:
        """users.messages.get for up to 100 ids in one batch (5 units each).

        `probe_id`, a message Gmail served before, is asked for too (format=minimal):
        `probe_ok` then says whether Gmail serves messages at all right now, which
        tells a message that fails alone from an outage."""
        return self.fetch(message_ids, (), fmt=fmt, probe_id=probe_id).messages

    def fetch(
        self,
        message_ids: Iterable[str],
        thread_ids: Iterable[str],
        fmt: str | None = None,
        probe_id: str | None = None,
    ) -> Fetched:
        """Messages (users.messages.get, 5 units each) and whole threads
        (users.threads.get, 10 units each: every message of the thread) in one batch
        request of up to 100 parts. threads.get has no raw form: a raw policy gets
        threads parsed (format=full). See `get_messages` for `probe_id`."""
        fmt = fmt or settings.MAILSYNC_MESSAGE_FORMAT
        parts = [
            Part(f"m:{mid}", "users.messages.get", partial(self._get, "messages", mid, fmt))
            for mid in dict.fromkeys(message_ids)
        ]
        thread_format = "full" if fmt == "raw" else fmt
        parts += [
            Part(f"t:{tid}", "users.threads.get", partial(self._get, "threads", tid, thread_format))
            for tid in dict.fromkeys(thread_ids)
        ]
        probing = probe_id is not None and f"m:{probe_id}" not in {p.key for p in parts}
        if probing:
            parts.append(
                Part(
                    "probe",
                    "users.messages.get",
                    partial(self._get, "messages", probe_id, "minimal"),
                )
            )
        result = self._batch(parts)
        fetched = Fetched(messages=_keyed(result, "m:"), threads=_keyed(result, "t:"))
        if probing:
            fetched.messages.probe_ok = "probe" in result.found
        return fetched

    def _get(self, collection: str, gmail_id: str, fmt: str) -> HttpRequest:
        """The users.<collection>.get request for one id: a copy of a template that
        discovery built once per client and format, with the id in its URI.
        Building each request through discovery cost ~17 µs against ~1 µs: the
        cluster's CPU a message fell 7-8 % (issue 13, bench/README.md). Ids that are
        not plain [A-Za-z0-9_-] (Gmail's are hex) go through discovery, which quotes them."""
        if not _PLAIN_ID.fullmatch(gmail_id):
            return self._discovery_get(collection, gmail_id, fmt)
        template = self._templates.get((collection, fmt))
        if template is None:
            template = self._discovery_get(collection, _TEMPLATE_ID, fmt)
            self._templates[(collection, fmt)] = template
        return HttpRequest(
            template.http,
            template.postproc,
            template.uri.replace(_TEMPLATE_ID, gmail_id, 1),
            method=template.method,
            body=template.body,
            headers=dict(template.headers),
            methodId=template.methodId,
        )

    def _discovery_get(self, collection: str, gmail_id: str, fmt: str) -> HttpRequest:
        return getattr(self.service.users(), collection)().get(userId="me", id=gmail_id, format=fmt)

    def get_attachment(self, message_id: str, attachment_id: str) -> bytes:
        """users.messages.attachments.get (5 units): the decoded bytes of one attachment.
        https://developers.google.com/gmail/api/reference/rest/v1/users.messages.attachments/get
        """
        data = self._execute(
            "users.messages.attachments.get",
            lambda: (
                self.service.users()
                .messages()
                .attachments()
                .get(userId="me", messageId=message_id, id=attachment_id)
            ),
        )
        encoded = data.get("data", "")
        if not isinstance(encoded, str):
            raise PermanentError("attachments.get answered without data")
        try:
            return base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        except (binascii.Error, ValueError) as exc:
            raise PermanentError(f"attachments.get answered malformed data: {exc}") from exc

    def history_page(self, start_history_id: str, page_token: str = "") -> HistoryPage:
        """users.history.list (2 units). A 404 means the history expired."""
        params: dict[str, Any] = {
            "userId": "me",
            "startHistoryId": start_history_id,
            "maxResults": 500,
        }
        if page_token:
            params["pageToken"] = page_token
        try:
            data = self._execute(
                "users.history.list", lambda: self.service.users().history().list(**params)
            )
        except NotFound as exc:
            raise HistoryExpired(str(exc), status=404, reason=exc.reason) from exc
        # A page without records but with a nextPageToken is normal (lieer 24, 102).
        return HistoryPage(
            records=list(data.get("history", [])),
            next_page_token=data.get("nextPageToken", ""),
            history_id=str(data.get("historyId", start_history_id)),
        )

    def watch(self, topic_name: str, label_ids: list[str] | None = None) -> dict:
        """users.watch (100 units): push notifications to a Pub/Sub topic."""
        body: dict[str, Any] = {"topicName": topic_name}
        if label_ids:
            body["labelIds"] = label_ids
        return self._execute(
            "users.watch", lambda: self.service.users().watch(userId="me", body=body)
        )

    def stop_watch(self) -> None:
        """users.stop (50 units): no more push notifications for this mailbox. Best
        effort: the caller is letting go of the mailbox, so a failure is only logged."""
        try:
            self._execute("users.stop", lambda: self.service.users().stop(userId="me"))
        except GmailError as exc:
            log.info("user %s: stopping the push watch failed (ignored): %s", self.user_id, exc)

    # -- batches: only the failed parts are sent again --
    def _batch(self, parts: list[Part]) -> BatchResult:
        """Send parts in one batch request; parts that fail (429, 5xx) are sent again,
        alone, until they succeed or the wait would pass the deadline."""
        parts = list({part.key: part for part in parts}.values())
        if len(parts) > 100:
            raise ValueError("Gmail accepts at most 100 parts per batch")
        result = BatchResult()
        pending = parts
        deadline = time.monotonic() + self.max_wait_s
        for attempt in range(MAX_ATTEMPTS):
            if not pending:
                break
            try:
                errors = self._send_batch(pending, result)
            except RateLimited as exc:  # our budget or permits, not Gmail (see _send_batch)
                if not (result.found or result.gone):
                    raise
                # After parts were served, raising would lose them (and fetch them
                # again): the rest fails as refused parts do.
                result.failed.update({part.key: exc for part in pending})
                break
            pending = [part for part in pending if part.key in errors]
            if not pending:
                break
            worst = most_urgent(errors.values())
            try:
                self._wait_or_raise(worst, attempt, deadline)
            except GmailError:
                result.failed.update(errors)
                break
        return result

    def _send_batch(self, parts: list[Part], result: BatchResult) -> dict[str, GmailError]:
        """Send in requests of at most half quota.concurrency_limit() parts (each part
        is one request in flight for Gmail; see quota.request_parts), holding the
        user's permits meanwhile; return the parts that failed."""
        errors: dict[str, GmailError] = {}
        size = quota.request_parts(len(parts))
        requests = [parts[start : start + size] for start in range(0, len(parts), size)]
        # Units, then permits, then the request; one set of permits (the first and
        # largest request's) for the requests sent one after the other: a set per
        # request cost twice the store round trips (on SQLite, waits for its lock).
        self._reserve(_units(requests[0]))
        with self._in_flight(len(requests[0])):
            for number, request in enumerate(requests):
                if number:
                    try:
                        self._reserve(_units(request))
                    except RateLimited as exc:
                        # Raising would lose what the requests before brought (to be
                        # fetched again): the rest waits as refused parts do, and
                        # without cutting the pace (our budget said no, not Gmail).
                        refused = RateLimited(str(exc), exc.retry_after, concurrency=True)
                        errors.update({p.key: refused for r in requests[number:] for p in r})
                        break
                errors.update(self._send_one_batch(request, result))
        return errors

    def _send_one_batch(self, parts: list[Part], result: BatchResult) -> dict[str, GmailError]:
        methods = {part.key: part.method for part in parts}
        errors: dict[str, GmailError] = {}

        def on_part(request_id: str, response: dict | None, exc: HttpError | None) -> None:
            method = methods[request_id]
            if exc is None:
                metrics.gmail_call(method, 200, quota.COSTS[method])
                result.found[request_id] = response or {}
                return
            error = classify(exc)
            _count_failure(method, error, quota.COSTS[method])
            if isinstance(error, NotFound):
                result.gone.add(request_id)
            else:
                errors[request_id] = error

        batch = LeanBatch(callback=on_part, batch_uri=self.batch_uri)
        for part in parts:
            batch.add(part.request(), request_id=part.key)
        try:
            with transport_errors_named():
                batch.execute()
        except HttpError as exc:
            whole = classify(exc)
            _count_failure("batch", whole, 0)
            if isinstance(whole, (AccessRevoked, DailyQuotaExhausted, PermanentError)):
                raise whole from exc
            return {part.key: whole for part in parts if part.key not in result.found}
        except TransientError as whole:
            _count_failure("batch", whole, 0)
            return {part.key: whole for part in parts if part.key not in result.found}
        for error in errors.values():
            if isinstance(error, (AccessRevoked, DailyQuotaExhausted)):
                raise error
        return errors


@dataclass(frozen=True)
class Part:
    """One request of a batch: its key in the batch and in the BatchResult."""

    key: str
    method: str  # for its quota cost (quota.COSTS) and the metrics
    request: Callable[[], Any]


@dataclass
class Fetched:
    """A batch of messages and threads: each a BatchResult keyed by Gmail id."""

    messages: BatchResult
    threads: BatchResult


def _units(parts: list[Part]) -> int:
    return sum(quota.COSTS[part.method] for part in parts)


def _keyed(result: BatchResult, prefix: str) -> BatchResult:
    """The parts of `result` whose key starts with `prefix`, keyed without it."""
    cut = len(prefix)
    return BatchResult(
        found={k[cut:]: v for k, v in result.found.items() if k.startswith(prefix)},
        gone={k[cut:] for k in result.gone if k.startswith(prefix)},
        failed={k[cut:]: v for k, v in result.failed.items() if k.startswith(prefix)},
    )


def _count_failure(method: str, error: GmailError, units: int) -> None:
    metrics.gmail_call(
        method, error.status or "network", units, rate_limited=isinstance(error, RateLimited)
    )
