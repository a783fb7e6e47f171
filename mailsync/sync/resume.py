"""What carries a run on, computed from the database alone."""

from __future__ import annotations

from ..models import SyncProgress
from .batches import fill_batch_slots
from .completion import complete_incremental_if_done, complete_initial_sync_if_done
from .resync import next_label_scan
from .steps import Step

Status = SyncProgress.Status
SyncType = SyncProgress.SyncType


def resume_steps(run: SyncProgress) -> list[Step]:
    """The steps that carry a run on from what the database says is left: used to
    run inline and by the watchdog when a run's tasks were lost."""
    user_id = run.user_id
    if not run.is_active:
        return []
    if run.sync_type == SyncType.LABELS:
        return [Step("sync_labels", user_id, (run.pk,))]
    if run.sync_type == SyncType.HEALTH and run.status == Status.PENDING:
        return [Step("begin_health_check", user_id, (run.pk,))]
    if run.sync_type == SyncType.INITIAL:
        if run.status == Status.PENDING or not run.start_history_id:
            return [Step("begin_initial_sync", user_id, (run.pk,))]
        if not run.listing_completed:
            return [Step("list_page", user_id, (run.pk,)), *fill_batch_slots(user_id)]
        if not run.unlisted_verified:
            return [Step("verify_unlisted", user_id, (run.pk,)), *fill_batch_slots(user_id)]
        steps = fill_batch_slots(user_id)
        complete_initial_sync_if_done(user_id)
        return steps
    if run.fell_back_to_full and not run.listing_completed:
        return [Step("list_page", user_id, (run.pk,)), *fill_batch_slots(user_id)]
    if run.fell_back_to_full and not run.unlisted_verified:
        return [Step("verify_unlisted", user_id, (run.pk,)), *fill_batch_slots(user_id)]
    if run.fell_back_to_full and not run.rescan_completed:
        return next_label_scan(user_id, run.pk, after="")
    if not run.listing_completed:
        return [Step("incremental_sync", user_id, (run.pk,))]
    steps = fill_batch_slots(user_id)
    complete_incremental_if_done(user_id)
    return steps
