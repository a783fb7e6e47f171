"""When a run is done: the mirror holds everything its listing or history found.

"Completed" means exact: every listed message is fetched, or Gmail could not serve
it (and the run says how many). While anything remains to fetch, the run stays active.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from .. import counters
from ..models import SyncProgress
from .pending import messages_to_fetch
from .runs import RELISTING_TYPES, SyncType, active_run, observe_sync_lag, report_end

User = get_user_model()
Status = SyncProgress.Status


def refresh_counts(run: SyncProgress, totals: counters.Totals | None = None) -> None:
    """Set the run's progress from the mailbox totals (no counting of rows)."""
    totals = totals or counters.read(run.user_id)
    # Until the listing ends, the profile's messagesTotal (set when the run began) is
    # the better total: the progress bar must not jump backwards as pages arrive.
    listed = totals.messages
    run.num_total = listed if run.listing_completed else max(listed, run.num_total)
    run.num_processed = totals.fetched + totals.unavailable


def complete_initial_sync_if_done(user_id: int) -> bool:
    """Stage 5: listed everything, checked what the listing did not show, and fetched
    everything Gmail can serve -> the mirror is current to the profile's history id.
    Exactly one caller wins the conditional update."""
    run = active_run(user_id, SyncType.INITIAL)
    if run is None or not (run.listing_completed and run.unlisted_verified):
        return False
    if messages_to_fetch(user_id=user_id).exists():
        return False
    now = timezone.now()
    with transaction.atomic():
        totals = counters.read(user_id)
        refresh_counts(run, totals)
        won = SyncProgress.objects.filter(pk=run.pk, status=Status.IN_PROGRESS).update(
            status=Status.COMPLETED,
            completed_at=now,
            num_total=run.num_total,
            num_processed=run.num_processed,
            num_unavailable=totals.unavailable,
            retry_at=None,
            error_message="",
        )
        if won:
            observe_sync_lag(user_id, now)
            report_end(
                user_id,
                run.pk,
                SyncType.INITIAL,
                Status.COMPLETED,
                messages=run.num_total,
                unavailable=totals.unavailable,
            )
            User.objects.filter(pk=user_id).update(
                gmail_history_id=run.start_history_id,
                initial_sync_completed=True,
                last_full_sync_at=now,
            )
    return bool(won)


def complete_incremental_if_done(user_id: int) -> bool:
    """An incremental run (or health check) is complete when its pages are applied,
    its rescan is done and every message it (or an earlier run) left is fetched, or
    Gmail could not serve it."""
    completed = False
    for run in SyncProgress.objects.filter(
        user_id=user_id, sync_type__in=RELISTING_TYPES, status=Status.IN_PROGRESS
    ):
        if not run.listing_completed:
            continue
        if run.fell_back_to_full and not (run.unlisted_verified and run.rescan_completed):
            continue
        if messages_to_fetch(user_id=user_id).exists():
            return False
        unavailable = counters.read(user_id).unavailable
        won = SyncProgress.objects.filter(pk=run.pk, status=Status.IN_PROGRESS).update(
            status=Status.COMPLETED,
            completed_at=timezone.now(),
            num_unavailable=unavailable,
            retry_at=None,
            error_message="",
        )
        if won:
            report_end(
                user_id,
                run.pk,
                run.sync_type,
                Status.COMPLETED,
                added=run.num_added,
                deleted=run.num_deleted,
                relabelled=run.num_relabelled,
                unavailable=unavailable,
            )
        completed |= bool(won)
    return completed
