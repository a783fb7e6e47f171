"""Incremental sync: apply Gmail's history from the stored history id."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from .. import counters, gmail, signals
from ..models import EmailMessage, MessageLabel, SyncProgress
from .batches import fill_batch_slots
from .completion import complete_incremental_if_done
from .history_ids import as_int, settled_fields
from .labels import (
    label_pks_for,
    labels_in,
    refresh_label_counters,
    refresh_label_list,
    set_labels,
)
from .resume import resume_steps
from .resync import history_expired
from .runs import finish_run, observe_sync_lag, start_initial_sync
from .steps import Step

User = get_user_model()
Status = SyncProgress.Status

HISTORY_PAGES_PER_STEP = 20


def incremental_sync(user_id: int, run_id: int) -> list[Step]:
    """Apply history pages from the stored history id, a bounded number per step.

    The user's history id moves only after the last page is applied, so a crash
    in between replays from the old id, which changes nothing twice.
    """
    run = SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).first()
    if run is None:
        return []
    if run.fell_back_to_full:
        return resume_steps(run)
    user = User.objects.get(pk=user_id)
    if not user.can_sync_incrementally:
        finish_run(run_id, Status.FAILED, "No complete mirror yet: starting the initial sync.")
        return resume_steps(start_initial_sync(user))
    client = gmail.GmailClient(user_id)
    if run.status == Status.PENDING:
        # Label creations, renames and deletions leave no history: labels.list each time.
        refresh_label_list(user_id, client)
        SyncProgress.objects.filter(pk=run_id).update(
            status=Status.IN_PROGRESS,
            start_history_id=user.gmail_history_id,
            updated_at=timezone.now(),
        )
        run.refresh_from_db()
    token = run.next_page_token
    touched: set[str] = set()
    applied_max = as_int(run.end_history_id)
    for _ in range(HISTORY_PAGES_PER_STEP):
        try:
            page = client.history_page(run.start_history_id, token)
        except gmail.HistoryExpired:
            return history_expired(user_id, run_id, client)
        counts = apply_history_page(user_id, page.records)
        touched |= labels_in(page.records)
        token = page.next_page_token
        applied_max = max([applied_max or 0, *_record_ids(page.records)]) or None
        SyncProgress.objects.filter(pk=run_id).update(
            num_added=F("num_added") + counts["added"],
            num_deleted=F("num_deleted") + counts["deleted"],
            num_relabelled=F("num_relabelled") + counts["relabelled"],
            next_page_token=token,
            end_history_id=str(applied_max or ""),
            updated_at=timezone.now(),
        )
        if not token:
            break
    refresh_label_counters(user_id, client, touched)
    if token:
        return [Step("incremental_sync", user_id, (run_id,))]
    now = timezone.now()
    observe_sync_lag(user_id, now)
    with transaction.atomic():
        # Not the answer's historyId: it counts records Gmail does not show yet.
        current = User.objects.select_for_update().get(pk=user_id)
        settled = settled_fields(current, applied_max, int(page.history_id), run.started_at, now)
        User.objects.filter(pk=user_id).update(last_incremental_sync_at=now, **settled)
        SyncProgress.objects.filter(pk=run_id).update(listing_completed=True, updated_at=now)
    steps = fill_batch_slots(user_id)
    complete_incremental_if_done(user_id)
    return steps


def _record_ids(records: list[dict]) -> list[int]:
    return [int(record["id"]) for record in records if str(record.get("id", "")).isdigit()]


def apply_history_page(user_id: int, records: list[dict]) -> dict[str, int]:
    """Apply one page of history records in one transaction; replaying it is harmless.

    Ids are never reused by Gmail, so a message deleted anywhere on the page is
    deleted. Label changes are applied in record order to messages we have; a
    message we do not have (or have not fetched yet) becomes an unfetched row, and
    its fetch brings its current labels.
    """
    deleted: set[str] = set()
    added: dict[str, tuple[str, int]] = {}  # id -> (thread id, listing order)
    label_ops: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for record in records:
        order = -int(record.get("id", 0) or 0)
        for item in record.get("messagesAdded", []):
            message = item.get("message", {})
            added[message["id"]] = (message.get("threadId", ""), order)
        for item in record.get("messagesDeleted", []):
            deleted.add(item.get("message", {})["id"])
        for key, op in (("labelsAdded", "add"), ("labelsRemoved", "remove")):
            for item in record.get(key, []):
                message = item.get("message", {})
                label_ops.setdefault(message["id"], []).append(
                    (op, tuple(item.get("labelIds", [])))
                )
                added.setdefault(message["id"], (message.get("threadId", ""), order))
    with transaction.atomic():
        counters.lock(user_id)
        lost = counters.states_of(user_id, Q(gmail_id__in=deleted))
        gone = EmailMessage.objects.filter(user_id=user_id, gmail_id__in=deleted)
        signals.deleted(
            user_id, gone.filter(internal_date__isnull=False).values_list("gmail_id", flat=True)
        )
        gone.delete()
        touched = {mid: v for mid, v in added.items() if mid not in deleted}
        existing = dict(
            EmailMessage.objects.filter(user_id=user_id, gmail_id__in=touched).values_list(
                "gmail_id", "internal_date"
            )
        )
        new = [
            EmailMessage(user_id=user_id, gmail_id=mid, thread_id=thread, listing_order=order)
            for mid, (thread, order) in touched.items()
            if mid not in existing
        ]
        EmailMessage.objects.bulk_create(new, ignore_conflicts=True)
        counters.add(
            user_id,
            messages=len(new) - lost.messages,
            fetched=-lost.fetched,
            unavailable=-lost.unavailable,
        )
        fetched = [mid for mid, date in existing.items() if date is not None and mid in label_ops]
        relabelled = _apply_label_ops(user_id, {mid: label_ops[mid] for mid in fetched})
        signals.changed(user_id, relabelled)
    return {
        "added": sum(1 for m in new if m.gmail_id in added and m.gmail_id not in label_ops),
        "deleted": lost.messages,
        "relabelled": len(relabelled),
    }


def _apply_label_ops(user_id: int, ops: dict[str, list[tuple[str, tuple[str, ...]]]]) -> set[str]:
    """Apply label additions and removals in record order; returns the Gmail ids of
    the messages whose labels changed."""
    if not ops:
        return set()
    pks = dict(
        EmailMessage.objects.filter(user_id=user_id, gmail_id__in=ops).values_list("gmail_id", "pk")
    )
    current: dict[int, set[str]] = {pk: set() for pk in pks.values()}
    for message_pk, label_gid in MessageLabel.objects.filter(message_id__in=current).values_list(
        "message_id", "label__gmail_id"
    ):
        current[message_pk].add(label_gid)
    changed: dict[int, set[str]] = {}
    for gmail_id, message_ops in ops.items():
        labels = set(current[pks[gmail_id]])
        for op, label_ids in message_ops:
            labels = labels | set(label_ids) if op == "add" else labels - set(label_ids)
        if labels != current[pks[gmail_id]]:
            changed[pks[gmail_id]] = labels
    if not changed:
        return set()
    label_pks = label_pks_for(user_id, set().union(*changed.values()))
    relabelled = set_labels(changed, label_pks)
    return {gmail_id for gmail_id, pk in pks.items() if pk in relabelled}
