"""The initial (full) sync: profile and labels, then the listing page by page."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from .. import gmail
from ..models import EmailMessage, SyncProgress
from .batches import fill_batch_slots
from .completion import complete_initial_sync_if_done, refresh_counts
from .labels import import_labels
from .resync import next_label_scan
from .runs import RELISTING_TYPES
from .steps import Step

User = get_user_model()
Status = SyncProgress.Status

# listing_order of a message = page index * this + position on the page.
LISTING_ORDER_PAGE_STRIDE = 1000


def begin_initial_sync(user_id: int, run_id: int) -> list[Step]:
    """Stage 1: read the profile (its historyId is where incremental syncs will start)
    and import the labels, so messages find their labels when they arrive."""
    run = SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).first()
    if run is None:
        return []
    client = gmail.GmailClient(user_id)
    profile = client.get_profile()
    import_labels(user_id, client)
    User.objects.filter(pk=user_id).update(gmail_auth_error="")
    # A new full sync gives messages that failed before a fresh set of attempts.
    EmailMessage.objects.filter(user_id=user_id, fetch_failures__gt=0).update(fetch_failures=0)
    # An earlier attempt's history id is older, so replays more: keep it.
    SyncProgress.objects.filter(pk=run_id, start_history_id="").update(
        start_history_id=profile.history_id
    )
    SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).update(
        status=Status.IN_PROGRESS,
        num_total=max(profile.messages_total, run.num_total),
        updated_at=timezone.now(),
    )
    return [Step("list_page", user_id, (run_id,))]


def list_page(user_id: int, run_id: int) -> list[Step]:
    """Stage 2: list one page of message ids into unfetched rows; save the page token."""
    run = SyncProgress.objects.filter(pk=run_id, status=Status.IN_PROGRESS).first()
    if run is None or run.listing_completed:
        return fill_batch_slots(user_id)
    token = run.next_page_token
    page = gmail.GmailClient(user_id).list_message_ids(
        page_token=token, include_spam_trash=settings.MAILSYNC_INCLUDE_SPAM_TRASH
    )
    with transaction.atomic():
        run = SyncProgress.objects.select_for_update().get(pk=run_id)
        if run.next_page_token != token or run.listing_completed or not run.is_active:
            return []  # a duplicate delivery of this step already stored this page
        base = run.pages_listed * LISTING_ORDER_PAGE_STRIDE
        ids = [message_id for message_id, _ in page.ids]
        known = set(
            EmailMessage.objects.filter(user_id=user_id, gmail_id__in=ids).values_list(
                "gmail_id", flat=True
            )
        )
        EmailMessage.objects.bulk_create(
            [
                EmailMessage(
                    user_id=user_id,
                    gmail_id=message_id,
                    thread_id=thread_id,
                    listing_order=base + position,
                    listed_by_run=run_id,
                )
                for position, (message_id, thread_id) in enumerate(page.ids)
            ],
            ignore_conflicts=True,
        )
        # Rows we had before (a resync) are marked as still present in Gmail.
        EmailMessage.objects.filter(user_id=user_id, gmail_id__in=ids).exclude(
            listed_by_run=run_id
        ).update(listed_by_run=run_id)
        run.next_page_token = page.next_page_token
        run.pages_listed += 1
        run.num_added += len(set(ids) - known)
        run.listing_completed = not page.next_page_token
        if run.listing_completed:
            # Whatever this listing did not see is no longer in the mailbox.
            gone = EmailMessage.objects.filter(user_id=user_id).exclude(listed_by_run=run_id)
            run.num_deleted += gone.count()
            gone.delete()
        refresh_counts(run)
        run.save()
    steps = fill_batch_slots(user_id)
    if not run.listing_completed:
        steps.append(Step("list_page", user_id, (run_id,)))
    elif run.sync_type in RELISTING_TYPES:
        steps.extend(next_label_scan(user_id, run_id, after=""))
    else:
        complete_initial_sync_if_done(user_id)
    return steps
