"""Resync: re-list every id and rescan label membership, when history expired (or
nightly, as the health check), downloading only what is new."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import counters, gmail, signals
from ..log_format import event
from ..models import EmailMessage, Label, MessageLabel, SyncProgress
from .batches import fill_batch_slots
from .completion import complete_incremental_if_done
from .labels import import_labels
from .pending import retry_failed_messages
from .runs import SyncType, finish_run, observe_sync_lag
from .steps import Step

User = get_user_model()
Status = SyncProgress.Status


def next_full_check_at(user) -> dt.datetime:
    """When expired history may make us re-list `user`'s mailbox again."""
    interval = dt.timedelta(minutes=settings.MAILSYNC_RESYNC_MIN_INTERVAL_MINUTES)
    return (user.history_resynced_at or timezone.now()) + interval


def resync_waits(user, now: dt.datetime) -> bool:
    """Whether a 404 for the user's history id waits instead of re-listing the mailbox.

    Right after a re-listing, Gmail can answer 404 for the fresh id it gave us for a
    while (lieer#301): re-listing every poll would re-list forever. Real expiry takes
    Gmail a week at least, so a 404 this soon after a re-listing is the fresh-id kind:
    we wait, keep polling history, and re-list at most every
    MAILSYNC_RESYNC_MIN_INTERVAL_MINUTES. The first 404 re-lists at once."""
    return user.history_resynced_at is not None and now < next_full_check_at(user)


def history_not_ready(user_id: int, now: dt.datetime, **fields: object) -> None:
    """Record that Gmail's history is not ready (the status page says so; the first
    time is kept), with `fields`, in one UPDATE."""
    User.objects.filter(pk=user_id).update(
        history_unready_since=Coalesce(F("history_unready_since"), Value(now)), **fields
    )


def history_expired(user_id: int, run_id: int, client: gmail.GmailClient) -> list[Step]:
    """An incremental run met a 404 for its history id: re-list the mailbox, unless a
    re-listing happened too recently (then the run ends with a note; polls go on)."""
    now = timezone.now()
    user = User.objects.get(pk=user_id)
    if not resync_waits(user, now):
        User.objects.filter(pk=user_id).update(history_resynced_at=now, history_unready_since=None)
        return fall_back_to_full_resync(user_id, run_id, client)
    history_not_ready(user_id, now)
    user.history_unready_since = user.history_unready_since or now
    event("run.history_not_ready", user_id, user.history_note, run_id, level=logging.WARNING)
    finish_run(run_id, Status.FAILED, user.history_note)
    return []


def fall_back_to_full_resync(
    user_id: int,
    run_id: int,
    client: gmail.GmailClient,
    note: str = "Gmail's history expired: re-listing the mailbox.",
) -> list[Step]:
    """History expired: re-list every id (new ones become unfetched rows, missing ones
    are deleted), then rescan label membership label by label. Nothing already
    fetched is downloaded again."""
    profile = client.get_profile()
    if note:
        event("run.fallback", user_id, note, run_id, level=logging.WARNING)
    SyncProgress.objects.filter(pk=run_id).update(
        fell_back_to_full=True,
        start_history_id=profile.history_id,
        next_page_token="",
        pages_listed=0,
        listing_completed=False,
        inbox_listed=True,  # a resync lists everything at once: most of it is there
        inbox_pages=0,
        unlisted_verified=False,
        rescan_completed=False,
        error_message=note,
        updated_at=timezone.now(),
    )
    return [Step("list_page", user_id, (run_id,))]


def begin_health_check(user_id: int, run_id: int) -> list[Step]:
    """A health check is the expired-history fallback on purpose: re-list the ids
    (queue the missing, delete the extra), refresh labels, rescan membership."""
    run = SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).first()
    if run is None:
        return []
    client = gmail.GmailClient(user_id)
    import_labels(user_id, client)
    # Messages Gmail could not serve get another chance; totals that drifted (they
    # should not) are put right.
    retry_failed_messages(user_id)
    counters.repair(user_id)
    SyncProgress.objects.filter(pk=run_id).update(status=Status.IN_PROGRESS)
    return fall_back_to_full_resync(user_id, run_id, client, note="")


def rescan_label_page(
    user_id: int, run_id: int, label_gmail_id: str, page_token: str, scan_started: str
) -> list[Step]:
    """One page of one label's message ids: the links Gmail has are marked as seen
    by this run; after the label's last page, links older than the scan that it
    did not see are removed (links made by fetches during the scan are current)."""
    run = SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).first()
    label = Label.objects.filter(user_id=user_id, gmail_id=label_gmail_id).first()
    if run is None or label is None:
        return next_label_scan(user_id, run_id, label_gmail_id)
    try:
        page = gmail.GmailClient(user_id).list_message_ids(
            page_token=page_token, include_spam_trash=True, label_id=label_gmail_id
        )
    except (gmail.NotFound, gmail.PermanentError):
        if not label.not_listed:
            raise
        # Gmail may refuse to list by a label id it does not list itself: its links are
        # then kept as fetches and history made them, not rescanned.
        return next_label_scan(user_id, run_id, label_gmail_id)
    with transaction.atomic():
        counters.lock(user_id)  # the lock order everywhere: counters, links, runs
        message_pks = list(
            EmailMessage.objects.filter(
                user_id=user_id, gmail_id__in=[mid for mid, _ in page.ids]
            ).values_list("pk", flat=True)
        )
        linked = set(
            MessageLabel.objects.filter(label=label, message_id__in=message_pks).values_list(
                "message_id", flat=True
            )
        )
        MessageLabel.objects.bulk_create(
            [
                MessageLabel(message_id=pk, label=label, seen_by_run=run_id)
                for pk in message_pks
                if pk not in linked
            ],
            ignore_conflicts=True,
        )
        # Fetched messages that lacked the label locally were relabelled.
        relabelled = set(
            EmailMessage.objects.filter(
                pk__in=set(message_pks) - linked, internal_date__isnull=False
            ).values_list("gmail_id", flat=True)
        )
        MessageLabel.objects.filter(label=label, message_id__in=message_pks).update(
            seen_by_run=run_id
        )
        if not page.next_page_token:
            stale = MessageLabel.objects.filter(
                label=label, linked_at__lt=dt.datetime.fromisoformat(scan_started)
            ).exclude(seen_by_run=run_id)
            relabelled.update(stale.values_list("message__gmail_id", flat=True))
            stale.delete()
        signals.changed(user_id, relabelled)
        SyncProgress.objects.filter(pk=run_id).update(
            num_relabelled=F("num_relabelled") + len(relabelled), updated_at=timezone.now()
        )
    if page.next_page_token:
        return [
            Step(
                "rescan_label_page",
                user_id,
                (run_id, label_gmail_id, page.next_page_token, scan_started),
            )
        ]
    return next_label_scan(user_id, run_id, label_gmail_id)


def next_label_scan(user_id: int, run_id: int, after: str) -> list[Step]:
    remaining = (
        Label.objects.filter(user_id=user_id, gmail_id__gt=after)
        .order_by("gmail_id")
        .values_list("gmail_id", flat=True)
    )
    following = remaining.first()
    if following is not None:
        started = timezone.now().isoformat()
        return [Step("rescan_label_page", user_id, (run_id, following, "", started))]
    # All labels rescanned: the listing part of the fallback is complete.
    run = SyncProgress.objects.get(pk=run_id)
    with transaction.atomic():
        if run.sync_type == SyncType.INCREMENTAL:
            # The re-listing made the mirror current to the profile's history id. A
            # health check leaves the id alone: replaying history over it is harmless.
            observe_sync_lag(user_id, timezone.now())
            User.objects.filter(pk=user_id).update(
                gmail_history_id=run.start_history_id, last_incremental_sync_at=timezone.now()
            )
        SyncProgress.objects.filter(pk=run_id).update(
            rescan_completed=True, error_message="", updated_at=timezone.now()
        )
    steps = fill_batch_slots(user_id)
    complete_incremental_if_done(user_id)
    return steps
