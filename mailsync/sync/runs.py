"""Sync runs: starting them (one active run per user and type), ending them, and
saying on them why they do not move."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from .. import gmail
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
            return SyncProgress.objects.create(user=user, sync_type=sync_type, **fields), True
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
        EmailMessage.objects.filter(user=user).update(claimed_until=None, fetch_failures=0)


def worth_retrying_now(exc: gmail.RateLimited) -> bool:
    return exc.retry_after <= settings.MAILSYNC_TASK_MAX_SECONDS


def access_revoked(user_id: int, message: str) -> None:
    log.warning("user %s: Google access refused: %s", user_id, message)
    User.objects.filter(pk=user_id).update(gmail_auth_error=message)
    fail_runs(user_id, f"Google refused access; sign in with Google again to resume. ({message})")
    BatchSlot.objects.filter(user_id=user_id).update(leased_until=None)


def fail_runs(user_id: int, message: str, sync_types: Iterable[str] | None = None) -> None:
    """End the user's active runs (of these types, or all) as failed, saying why."""
    runs = SyncProgress.objects.filter(user_id=user_id, status__in=SyncProgress.ACTIVE_STATUSES)
    if sync_types is not None:
        runs = runs.filter(sync_type__in=sync_types)
    runs.update(status=Status.FAILED, error_message=message, completed_at=timezone.now())


def note_on_runs(user_id: int, message: str, keep: bool = False) -> None:
    """Say on the user's active runs why they are not moving (`keep`: unless they
    already say why)."""
    runs = SyncProgress.objects.filter(user_id=user_id, status__in=SyncProgress.ACTIVE_STATUSES)
    if keep:
        runs = runs.filter(error_message="")
    runs.update(error_message=message, updated_at=timezone.now())


def finish_run(run_id: int, status: str, message: str) -> int:
    return SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).update(
        status=status, error_message=message, completed_at=timezone.now()
    )
