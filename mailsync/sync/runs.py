"""Sync runs: starting them (one active run per user and type), ending them, and
saying on them why they do not move."""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from .. import gmail, metrics, signals
from ..log_format import event
from ..models import BatchSlot, EmailMessage, SyncProgress
from .steps import Step, enqueue

log = logging.getLogger(__name__)

User = get_user_model()
Status = SyncProgress.Status
SyncType = SyncProgress.SyncType

RELISTING_TYPES = (SyncType.INCREMENTAL, SyncType.HEALTH)


# --- Starting runs ----------------------------------------------------------------------------
def active_runs(user) -> Iterable[SyncProgress]:
    return SyncProgress.objects.filter(user=user, status__in=SyncProgress.ACTIVE_STATUSES)


def active_run(user_id: int, sync_type: str) -> SyncProgress | None:
    return SyncProgress.objects.filter(
        user_id=user_id, sync_type=sync_type, status__in=SyncProgress.ACTIVE_STATUSES
    ).first()


def create_run(user, sync_type: str, **fields) -> tuple[SyncProgress, bool]:
    """The active run of this type, or a new one; the database refuses a second."""
    existing = active_run(user.pk, sync_type)
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            run = SyncProgress.objects.create(user=user, sync_type=sync_type, **fields)
        report_start(run)
        return run, True
    except IntegrityError:
        # Another trigger won the race: the unique constraint kept it to one run.
        return active_run(user.pk, sync_type), False


def start_initial_sync(user) -> SyncProgress:
    """Start a full sync (or return the one already running). It supersedes an active
    incremental sync or health check: the full sync re-lists everything, and the next
    incremental sync replays history from the point the full sync started."""
    run, created = create_run(user, SyncType.INITIAL, resync=user.last_full_sync_at is not None)
    if created:
        fail_runs(user.pk, "Superseded by a full sync.", sync_types=RELISTING_TYPES)
        enqueue([Step("begin_initial_sync", user.pk, (run.pk,))])
    return run


def start_sync(user) -> SyncProgress:
    """The sync a user needs now: incremental when possible, else the initial one."""
    if user.can_sync_incrementally:
        return start_incremental_sync(user)
    return start_initial_sync(user)


def start_incremental_sync(user) -> SyncProgress:
    """Apply what changed since the stored history id (or start the initial sync
    when there is no complete mirror to update yet)."""
    user.refresh_from_db()
    if not user.can_sync_incrementally:
        return start_initial_sync(user)
    # A re-listing run (initial or health check) must not overlap history replays:
    # rows the replay adds mid-listing would look deleted to it.
    for other in (SyncType.INITIAL, SyncType.HEALTH):
        if (running := active_run(user.pk, other)) is not None:
            return running
    run, created = create_run(user, SyncType.INCREMENTAL)
    if created:
        enqueue([Step("incremental_sync", user.pk, (run.pk,))])
    return run


def start_health_check(user) -> SyncProgress:
    """Compare the mirror with Gmail (ids, labels, label membership) and repair drift.
    Waits for any other run of the user to end (returns it instead)."""
    running = active_runs(user).exclude(sync_type=SyncType.HEALTH).first()
    if running is not None:
        return running
    run, created = create_run(user, SyncType.HEALTH)
    if created:
        enqueue([Step("begin_health_check", user.pk, (run.pk,))])
    return run


def start_label_sync(user) -> SyncProgress:
    run, created = create_run(user, SyncType.LABELS)
    if created:
        enqueue([Step("sync_labels", user.pk, (run.pk,))])
    return run


def reset_sync_state(user) -> None:
    """Forget where the mirror stands: the next sync is a full one. Messages stay."""
    with transaction.atomic():
        fail_runs(user.pk, "Cancelled: the sync state was reset by an operator.")
        User.objects.filter(pk=user.pk).update(
            gmail_history_id=None,
            initial_sync_completed=False,
            label_sync_completed=False,
            gmail_auth_error="",
        )
        BatchSlot.objects.filter(user=user).update(leased_until=None)
        EmailMessage.objects.filter(user=user, internal_date__isnull=True).update(
            claimed_until=None, fetch_failures=0
        )


def worth_retrying_now(exc: gmail.RateLimited) -> bool:
    return exc.retry_after <= settings.MAILSYNC_TASK_MAX_SECONDS


def access_revoked(user_id: int, message: str) -> None:
    event("access.revoked", user_id, f"Google refused access: {message}", level=logging.WARNING)
    User.objects.filter(pk=user_id).update(gmail_auth_error=message)
    fail_runs(user_id, f"Google refused access; sign in with Google again to resume. ({message})")
    BatchSlot.objects.filter(user_id=user_id).update(leased_until=None)


def fail_runs(user_id: int, message: str, sync_types: Iterable[str] | None = None) -> None:
    """End the user's active runs (of these types, or all) as failed, saying why."""
    runs = SyncProgress.objects.filter(user_id=user_id, status__in=SyncProgress.ACTIVE_STATUSES)
    if sync_types is not None:
        runs = runs.filter(sync_type__in=sync_types)
    ending = list(runs.values_list("pk", "sync_type"))
    runs.filter(pk__in=[pk for pk, _ in ending]).update(
        status=Status.FAILED, error_message=message, completed_at=timezone.now()
    )
    for run_id, sync_type in ending:
        report_end(user_id, run_id, sync_type, Status.FAILED, message)


def user_runs(user_id: int):
    return SyncProgress.objects.filter(user_id=user_id, status__in=SyncProgress.ACTIVE_STATUSES)


def note_on_runs(user_id: int, message: str, keep: bool = False) -> None:
    """Say on the user's active runs why they are not moving (`keep`: unless they
    already say why)."""
    runs = SyncProgress.objects.filter(user_id=user_id, status__in=SyncProgress.ACTIVE_STATUSES)
    if keep:
        runs = runs.filter(error_message="")
    runs.update(error_message=message, updated_at=timezone.now())


def finish_run(run_id: int, status: str, message: str) -> int:
    updated = SyncProgress.objects.filter(
        pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES
    ).update(status=status, error_message=message, completed_at=timezone.now())
    if updated:
        user_id, sync_type = SyncProgress.objects.values_list("user_id", "sync_type").get(pk=run_id)
        report_end(user_id, run_id, sync_type, status, message)
    return updated


# --- Reporting: one log line and the metrics for each start and end ---------------------------
def report_start(run: SyncProgress) -> None:
    metrics.run_started(run.sync_type)
    event(
        "run.started", run.user_id, f"{run.sync_type} sync started", run.pk, sync_type=run.sync_type
    )


# --- Waiting out Gmail's failures -------------------------------------------------------------
RETRY_NOTE = "Retrying: "
MAX_RETRY_DELAY_S = 600.0


def describe_failure(error: gmail.GmailError) -> str:
    """What a person reads on the run while it waits: "Gmail answers 503 (backendError)"."""
    if error.status:
        return f"Gmail answers {error.status}" + (f" ({error.reason})" if error.reason else "")
    return str(error).split(":")[0] or "Gmail cannot be reached"


def note_failure(user_id: int, error: gmail.GmailError) -> float:
    """Gmail failed as a whole (5xx, network, the token endpoint): say so on the user's
    active runs, visibly, and return how long to wait before the next attempt, longer
    after each failure in a row (exponential, capped, with jitter)."""
    runs = user_runs(user_id)
    in_a_row = runs.aggregate(most=Max("failures_in_a_row"))["most"] or 0
    base = settings.MAILSYNC_OUTAGE_RETRY_SECONDS
    delay = min(base * 2 ** min(in_a_row, 16), MAX_RETRY_DELAY_S) * random.uniform(0.8, 1.2)
    runs.update(
        failures_in_a_row=F("failures_in_a_row") + 1,
        error_message=f"{RETRY_NOTE}{describe_failure(error)}; next attempt in {delay:.0f} s.",
        updated_at=timezone.now(),
    )
    log.warning("user %s: %s; retrying in %.0f s", user_id, error, delay)
    return delay


def wait_or_resume_later(user_id: int, delay: float) -> bool:
    """A short wait is slept in this task (True: try again now); a long one is left to
    the watchdog, which resumes the user's runs at `retry_at` (False), so no task
    spins or holds a worker meanwhile."""
    if delay <= settings.MAILSYNC_TASK_MAX_SECONDS / 4:
        time.sleep(delay)
        return True
    resume_at(user_id, timezone.now() + dt.timedelta(seconds=delay))
    return False


def resume_at(user_id: int, when: dt.datetime) -> None:
    user_runs(user_id).update(retry_at=when, updated_at=timezone.now())


def clear_failure_notes(user_id: int) -> None:
    """Gmail answered again: the runs' "Retrying"/"Paused" notes go, the count restarts."""
    user_runs(user_id).filter(
        Q(failures_in_a_row__gt=0)
        | Q(error_message__startswith=RETRY_NOTE)
        | Q(error_message__startswith="Paused")
    ).update(failures_in_a_row=0, error_message="")


def report_end(
    user_id: int, run_id: int, sync_type: str, status: str, message: str = "", **fields
) -> None:
    """A run ended (status completed or failed): count it and say so in one line."""
    metrics.run_finished(sync_type, status)
    text = f"{sync_type} sync {status}" + (f": {message}" if message else "")
    level = logging.INFO if status == Status.COMPLETED else logging.WARNING
    event(f"run.{status}", user_id, text, run_id, level=level, sync_type=sync_type, **fields)
    signals.run_ended(user_id, run_id, sync_type, status, message)
    from ..polling import run_ended  # (polling starts runs: imported late)

    run_ended(user_id, sync_type, status)


def observe_sync_lag(user_id: int, now) -> None:
    """Call just before the user's last sync time moves to `now`: the sync lag is the
    time since the previous successful sync (none for a first full sync)."""
    previous = [
        at
        for at in User.objects.values_list("last_incremental_sync_at", "last_full_sync_at")
        .filter(pk=user_id)
        .first()
        or ()
        if at
    ]
    if previous:
        metrics.sync_lag((now - max(previous)).total_seconds())
