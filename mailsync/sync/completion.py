"""When a run is done: the mirror holds everything its listing or history found."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from .. import metrics
from ..models import EmailMessage, SyncProgress
from .pending import MAX_FETCH_FAILURES, messages_to_fetch
from .runs import RELISTING_TYPES, SyncType, active_run, finish_run, observe_sync_lag, report_end

User = get_user_model()
Status = SyncProgress.Status


def refresh_counts(run: SyncProgress) -> None:
    messages = EmailMessage.objects.filter(user_id=run.user_id)
    listed = messages.count()
    # Until the listing ends, the profile's messagesTotal (set when the run began) is
    # the better total: the progress bar must not jump backwards as pages arrive.
    run.num_total = listed if run.listing_completed else max(listed, run.num_total)
    run.num_processed = listed - messages.filter(internal_date__isnull=True).count()


def complete_initial_sync_if_done(user_id: int) -> bool:
    """Stage 5: listed everything and fetched everything -> the mirror is current to
    the profile's history id. Exactly one caller wins the conditional update."""
    run = active_run(user_id, SyncType.INITIAL)
    if run is None or not run.listing_completed:
        return False
    if messages_to_fetch(user_id=user_id).exists():
        return False
    unfetched = EmailMessage.objects.filter(user_id=user_id, internal_date__isnull=True)
    now = timezone.now()
    stuck = list(unfetched.values_list("gmail_id", "last_fetch_error")[:5])
    with transaction.atomic():
        refresh_counts(run)
        if stuck:
            count = unfetched.count()
            message = (
                f"{count} message(s) could not be fetched after {MAX_FETCH_FAILURES} "
                f"attempts, e.g. {stuck[0][0]}: {stuck[0][1]}"
            )
            won = SyncProgress.objects.filter(pk=run.pk, status=Status.IN_PROGRESS).update(
                status=Status.FAILED,
                completed_at=now,
                num_total=run.num_total,
                num_processed=run.num_processed,
                error_message=message,
            )
            if won:
                metrics.messages_unavailable(count)
                report_end(user_id, run.pk, SyncType.INITIAL, Status.FAILED, message)
            return bool(won)
        won = SyncProgress.objects.filter(pk=run.pk, status=Status.IN_PROGRESS).update(
            status=Status.COMPLETED,
            completed_at=now,
            num_total=run.num_total,
            num_processed=run.num_processed,
            error_message="",
        )
        if won:
            observe_sync_lag(user_id, now)
            report_end(user_id, run.pk, SyncType.INITIAL, Status.COMPLETED, messages=run.num_total)
            User.objects.filter(pk=user_id).update(
                gmail_history_id=run.start_history_id,
                initial_sync_completed=True,
                last_full_sync_at=now,
            )
    return bool(won)


def complete_incremental_if_done(user_id: int) -> bool:
    """An incremental run (or health check) is complete when its pages are applied,
    its rescan is done and the messages they queued are fetched."""
    completed = False
    for run in SyncProgress.objects.filter(
        user_id=user_id, sync_type__in=RELISTING_TYPES, status=Status.IN_PROGRESS
    ):
        if not run.listing_completed:
            continue
        if run.fell_back_to_full and not run.rescan_completed:
            continue
        if messages_to_fetch(user_id=user_id).exists():
            return False
        completed |= bool(finish_run(run.pk, Status.COMPLETED, ""))
    return completed
