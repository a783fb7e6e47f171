"""What a mailbox's sync looks like right now, in one JSON-safe dict.

The progress page, its polled JSON endpoint, the admin and the command line all read
`mailbox_status(user)`, so they never disagree. It costs four queries whatever the size
of the mailbox: the mailbox totals (one row, kept by the sync), labels, the latest
run of each kind, and the user's Google token.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import OuterRef, Q, Subquery
from django.utils import timezone
from django.utils.timesince import timesince, timeuntil

from accounts.models import GoogleToken

from . import counters
from .models import Label, SyncProgress
from .sync.runs import RETRY_NOTE

REAUTH_MESSAGE = "Google refused access: sign in with Google again to resume."

# Stage states, also used as `data-state` on the page.
PENDING, RUNNING, DONE, FAILED = "pending", "running", "done", "failed"

# When several runs are active the page shows one: the one the user waits for most.
_DISPLAY_ORDER = (
    SyncProgress.SyncType.INITIAL,
    SyncProgress.SyncType.INCREMENTAL,
    SyncProgress.SyncType.LABELS,
)

# Gmail's label colours are hex codes from a fixed palette; anything else is dropped
# rather than written into a style attribute.
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{3,8}$")

# (substrings of a run's error_message, what the user reads). First match wins; the
# messages come from mailsync.sync and mailsync.gmail.
_ERROR_WORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        (
            "google refused access",
            "sign in with google",
            "invalid_grant",
            "refresh token",
            "revoked",
            "no google tokens",
        ),
        REAUTH_MESSAGE,
    ),
    (
        ("daily quota",),
        "Gmail's daily limit for this mailbox is used up: the sync is paused and resumes "
        "by itself later.",
    ),
    (
        ("quota", "rate limit", "ratelimit", "too many requests"),
        "Gmail asked us to slow down: the sync continues shortly.",
    ),
    (
        ("reset by an operator", "cancelled"),
        "The sync was cancelled because its state was reset.",
    ),
    (
        ("history",),
        "Gmail no longer had the change history we needed: the mailbox is being compared "
        "with Gmail again (nothing already copied is downloaded twice).",
    ),
    (
        ("stalled", "no progress"),
        "The sync stopped making progress and was stopped. Press Sync now to continue.",
    ),
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def format_duration(seconds: float | None) -> str:
    """Say how long `seconds` is the way a person would ("about 3 min")."""
    if seconds is None:
        return ""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"about {minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes} min" if minutes else f"about {hours} h"


def run_rate_and_eta(
    run: SyncProgress, now: datetime | None = None
) -> tuple[float | None, float | None]:
    """Messages this run downloaded from Gmail per second since it started, and the
    seconds left at that rate.

    Only downloads count (`num_fetched`): messages the mirror already had cost nothing,
    and counting them made a resync look 40 times faster than Gmail allows. The rate
    of a finished run is measured up to its completion; a finished run has no ETA.
    Either is None when it cannot be known yet (no time elapsed, nothing downloaded).
    """
    now = now or timezone.now()
    end = run.completed_at if (not run.is_active and run.completed_at) else now
    elapsed = (end - run.started_at).total_seconds()
    if elapsed <= 0 or run.num_fetched <= 0:
        return None, None
    rate = run.num_fetched / elapsed
    if not run.is_active or run.num_total < run.num_processed:
        return rate, None
    return rate, (run.num_total - run.num_processed) / rate


def run_title(run: SyncProgress) -> str:
    """What the run is, in the user's words."""
    if run.sync_type == SyncProgress.SyncType.INITIAL:
        return "Full resync" if run.resync else "First sync"
    return _RUN_TITLES.get(run.sync_type, run.get_sync_type_display().capitalize())


_RUN_TITLES = {
    SyncProgress.SyncType.INCREMENTAL: "Update",
    SyncProgress.SyncType.LABELS: "Label sync",
    SyncProgress.SyncType.HEALTH: "Health check",
}
_STATUS_WORDS = {
    SyncProgress.Status.PENDING: "starting",
    SyncProgress.Status.IN_PROGRESS: "running",
    SyncProgress.Status.COMPLETED: "done",
    SyncProgress.Status.FAILED: "failed",
}


def time_ago(when: datetime | None, now: datetime) -> str:
    """ "just now", "5 minutes ago", or "never"."""
    if when is None:
        return "never"
    if (now - when).total_seconds() < 60:
        return "just now"
    return f"{timesince(when, now)} ago"


def time_until(when: datetime, now: datetime) -> str:
    """ "due now", "in less than a minute", "in 4 minutes"."""
    seconds = (when - now).total_seconds()
    if seconds <= 0:
        return "due now"
    if seconds < 60:
        return "in less than a minute"
    return f"in {timeuntil(when, now)}"


def error_in_plain_words(error_message: str) -> str:
    """Turn a run's technical error into a sentence a mailbox owner understands."""
    if not error_message.strip():
        return ""
    if error_message.startswith(RETRY_NOTE):
        # A run waiting out a Gmail outage: "Retrying: Gmail answers 503 (...); next...".
        what = error_message[len(RETRY_NOTE) :].split(";")[0]
        return f"Gmail is having trouble ({what}): nothing is lost, the sync retries by itself."
    lowered = error_message.lower()
    for needles, words in _ERROR_WORDS:
        if any(needle in lowered for needle in needles):
            return words
    # Otherwise the engine's own sentence, without the technical tail.
    first_line = error_message.strip().splitlines()[0].split(", e.g. ")[0]
    if len(first_line) > 200:
        first_line = first_line[:199] + "…"
    return f"The last sync failed: {first_line}"


def run_summary(run: SyncProgress, now: datetime | None = None) -> dict[str, Any]:
    """One run as the page, the JSON endpoint and `sync_user --wait` show it."""
    now = now or timezone.now()
    rate, eta = run_rate_and_eta(run, now)
    return {
        "id": run.pk,
        "type": run.sync_type,
        "type_display": run.get_sync_type_display(),
        "title": run_title(run),
        "resync": run.resync,
        "status": run.status,
        "status_display": run.get_status_display(),
        "status_words": _STATUS_WORDS.get(run.status, run.status),
        "active": run.is_active,
        "percentage": run.percentage(),
        "num_processed": run.num_processed,
        "num_total": run.num_total,
        "num_fetched": run.num_fetched,
        "num_added": run.num_added,
        "num_deleted": run.num_deleted,
        "num_relabelled": run.num_relabelled,
        "listing_completed": run.listing_completed,
        "started_at": _iso(run.started_at),
        "updated_at": _iso(run.updated_at),
        "completed_at": _iso(run.completed_at),
        "rate": round(rate, 2) if rate is not None else None,
        "eta_seconds": round(eta) if eta is not None else None,
        "eta_display": format_duration(eta),
        "error_message": run.error_message,
        "error": error_in_plain_words(run.error_message),
    }


def _latest_runs(user) -> dict[str, SyncProgress]:
    """The latest run of each kind, in one query (an active run is always the latest)."""
    latest = {
        sync_type: Subquery(
            SyncProgress.objects.filter(user=OuterRef("user"), sync_type=sync_type)
            .order_by("-started_at", "-pk")
            .values("pk")[:1]
        )
        for sync_type in SyncProgress.SyncType.values
    }
    condition = Q()
    for subquery in latest.values():
        condition |= Q(pk=subquery)
    return {run.sync_type: run for run in SyncProgress.objects.filter(condition, user=user)}


# What Gmail's own interface calls its system labels (the API names them by id).
SYSTEM_LABEL_NAMES = {
    "INBOX": "Inbox",
    "SENT": "Sent",
    "DRAFT": "Drafts",
    "SPAM": "Spam",
    "TRASH": "Trash",
    "UNREAD": "Unread",
    "STARRED": "Starred",
    "IMPORTANT": "Important",
    "CHAT": "Chats",
    "CATEGORY_PERSONAL": "Primary",
    "CATEGORY_SOCIAL": "Social",
    "CATEGORY_PROMOTIONS": "Promotions",
    "CATEGORY_UPDATES": "Updates",
    "CATEGORY_FORUMS": "Forums",
}


NOT_LISTED_MARK = " (not listed by Gmail)"


def label_display_name(label: Label) -> str:
    if label.type == Label.Type.SYSTEM:
        name = SYSTEM_LABEL_NAMES.get(label.gmail_id, label.name)
    else:
        name = label.name
    # Messages carry it but Gmail does not list it (lieer#48): say so wherever it shows.
    return name + NOT_LISTED_MARK if label.not_listed else name


def _label_dict(label: Label) -> dict[str, Any]:
    return {
        "id": label.pk,
        "gmail_id": label.gmail_id,
        "name": label_display_name(label),
        "type": label.type,
        "text_color": label.text_color if _HEX_COLOR.match(label.text_color) else "",
        "background_color": (
            label.background_color if _HEX_COLOR.match(label.background_color) else ""
        ),
        "messages_total": label.messages_total,
        "messages_unread": label.messages_unread,
    }


def _progress(initial_run: SyncProgress | None, mirror: dict[str, Any]) -> dict[str, Any]:
    """The page's one progress figure.

    While a full sync runs, its own counts: its total starts at Gmail's count of the
    mailbox and only grows while the listing runs, so the bar never moves back as
    pages of ids arrive (the mirror's own fetched / listed did: 40 %, 20 %, 33 %).
    Otherwise the mirror: fetched of listed.
    """
    if initial_run is None:
        return {**mirror, "of_run": False}
    return {
        "done": initial_run.num_processed,
        "total": max(initial_run.num_total, initial_run.num_processed),
        "percentage": initial_run.percentage(),
        "state": RUNNING,
        "of_run": True,
    }


def _next_step(user, reauth: bool, active_run, latest_run, total: int) -> str:
    """What the user should do now that nothing runs, or ""."""
    if reauth or active_run is not None or user.initial_sync_completed:
        return ""
    if latest_run is None and not total:
        return "No sync has run yet: press Sync now to copy your mailbox."
    return (
        "The mirror needs a full sync before it can be kept up to date (its sync state "
        "was reset, or the last full sync did not finish): press Sync now to start it."
    )


def needs_reauth(user) -> bool:
    """Whether nothing can sync until the user signs in with Google again."""
    if user.gmail_auth_error:
        return True
    return not GoogleToken.objects.filter(account__user=user, account__provider="google").exists()


def mailbox_status(user) -> dict[str, Any]:
    """Everything about `user`'s mirror that the page, the admin and the CLI show.

    Keys: ``needs_reauth``, ``active`` (a run is going), ``progress`` (the one figure
    the page shows: ``done`` of ``total``, ``percentage``, ``state``), ``next_step``
    (what the user should do, "" when nothing), ``stages`` (``labels``, ``listing``,
    ``messages``, ``incremental``, each with a ``state`` of pending, running, done or
    failed, and its counts), ``active_run`` (the one shown), ``active_runs``,
    ``latest_run`` (see :func:`run_summary`), ``last_error`` (plain words, "" when
    none), ``labels`` (system labels first, then the user's, by name) and
    ``generated_at``. Times are ISO 8601 strings, with a ``*_display`` sentence
    beside them.
    """
    now = timezone.now()
    totals = counters.read(user.pk)  # kept by the sync: no counting of rows
    labels = list(Label.objects.filter(user=user).order_by("type", "name", "pk"))
    latest_by_type = _latest_runs(user)
    reauth = needs_reauth(user)

    active = {t: r for t, r in latest_by_type.items() if r.is_active}
    failed = {t: r for t, r in latest_by_type.items() if r.status == SyncProgress.Status.FAILED}
    active_run = next((active[t] for t in _DISPLAY_ORDER if t in active), None)
    latest_run = max(latest_by_type.values(), key=lambda r: (r.started_at, r.pk), default=None)

    initial = SyncProgress.SyncType.INITIAL
    incremental = SyncProgress.SyncType.INCREMENTAL
    label_type = SyncProgress.SyncType.LABELS
    # A message Gmail could not serve is done with, as far as progress goes.
    total, fetched = totals.messages, totals.fetched + totals.unavailable

    # Labels: their own run, or the initial sync that starts by reading them.
    if user.label_sync_completed:
        labels_state = DONE
    elif label_type in active or initial in active:
        labels_state = RUNNING
    elif label_type in failed or initial in failed or (reauth and latest_run):
        labels_state = FAILED
    else:
        labels_state = PENDING

    initial_run = latest_by_type.get(initial)
    listing_completed = user.initial_sync_completed or bool(
        initial_run and initial_run.listing_completed
    )
    if listing_completed:
        listing_state = DONE
    elif initial in active:
        listing_state = RUNNING
    elif initial in failed:
        listing_state = FAILED
    else:
        listing_state = PENDING

    if user.initial_sync_completed and not active and fetched >= total:
        messages_state = DONE
    elif (initial in active or incremental in active) and (fetched < total or not total):
        messages_state = RUNNING
    elif user.initial_sync_completed:
        messages_state = DONE
    elif initial in failed:
        messages_state = FAILED
    else:
        messages_state = PENDING
    if total:
        percentage = min(100, fetched * 100 // total)
    else:
        percentage = 100 if user.initial_sync_completed else 0
    progress = _progress(
        active.get(initial),
        {"done": fetched, "total": total, "percentage": percentage, "state": messages_state},
    )

    last_incremental = user.last_incremental_sync_at
    next_due = user.next_sync_at or (
        last_incremental + timedelta(minutes=settings.MAILSYNC_INCREMENTAL_INTERVAL_MINUTES)
        if last_incremental
        else None
    )
    if incremental in active:
        incremental_state = RUNNING
    elif incremental in failed:
        incremental_state = FAILED
    elif last_incremental:
        incremental_state = DONE
    else:
        incremental_state = PENDING
    if not user.initial_sync_completed:
        # Updates replay Gmail's history onto a complete mirror: none before a full sync.
        next_due = None
        next_due_display = (
            "after the next full sync" if user.last_full_sync_at else "after the first full sync"
        )
    elif next_due is None:
        next_due_display = f"within {settings.MAILSYNC_INCREMENTAL_INTERVAL_MINUTES} min"
    else:
        next_due_display = time_until(next_due, now)

    # A run that failed stays the error to show until a run of its kind starts again;
    # an active run may carry a note (paused for quota).
    last_failed = max(failed.values(), key=lambda r: (r.started_at, r.pk), default=None)
    if reauth:
        last_error = REAUTH_MESSAGE
    elif active_run and active_run.error_message:
        last_error = error_in_plain_words(active_run.error_message)
    elif last_failed:
        last_error = error_in_plain_words(last_failed.error_message) or "The last sync failed."
    else:
        last_error = ""

    return {
        "generated_at": now.isoformat(),
        "needs_reauth": reauth,
        "active": active_run is not None,
        "stages": {
            "labels": {
                "state": labels_state,
                "done": user.label_sync_completed,
                "count": len(labels),
                "system": sum(1 for label in labels if label.type == Label.Type.SYSTEM),
                "user": sum(1 for label in labels if label.type == Label.Type.USER),
            },
            "listing": {
                "state": listing_state,
                "listed": total,
                "completed": listing_completed,
                # While the first listing runs: Gmail's own count of the mailbox.
                "expected": (
                    initial_run.num_total
                    if initial in active and initial_run and not listing_completed
                    else None
                ),
            },
            "messages": {
                "state": messages_state,
                "fetched": fetched,
                "total": total,
                "remaining": total - fetched,
                "unavailable": totals.unavailable,
                "percentage": percentage,
            },
            "incremental": {
                "state": incremental_state,
                "last_at": _iso(last_incremental),
                "last_at_display": time_ago(last_incremental, now),
                "next_due_at": _iso(next_due),
                "next_due_display": next_due_display,
                "last_full_sync_at": _iso(user.last_full_sync_at),
                # Gmail push: "on", "off" or "failed: reason" (then the user is polled).
                "push": user.push_summary,
                # Gmail answers 404 for a fresh history id: re-listing waits (resync.py).
                "history_note": user.history_note,
            },
        },
        "progress": progress,
        "next_step": _next_step(user, reauth, active_run, latest_run, total),
        "active_run": run_summary(active_run, now) if active_run else None,
        "active_runs": [run_summary(active[t], now) for t in _DISPLAY_ORDER if t in active],
        "latest_run": run_summary(latest_run, now) if latest_run else None,
        "last_error": last_error,
        "labels": [_label_dict(label) for label in labels],
    }
