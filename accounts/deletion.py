"""Deleting a user's mirror, or their whole account, in bounded chunks.

The request only marks what to delete (`User.data_deletion`) and signs the user
out; a Django-Q2 task (`accounts.tasks.delete_user_data`) then deletes, one chunk
per transaction: messages first (with their label links), then labels, runs and
sync state, then, for an account, the user (which takes their Google account,
email addresses and anything else that cascades). Every step is re-runnable, and
a schedule resumes deletions whose task was lost.
"""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from .disconnect import disconnect_google
from .models import GoogleToken

log = logging.getLogger(__name__)

MIRROR, ACCOUNT = "mirror", "account"
CHUNK_SIZE = 1000
ACCOUNT_DELETED = "Deleting the account at the user's request."


def request_mirror_deletion(user) -> None:
    """Forget the sync state now (the next sync is a full one) and delete the
    mirror in the background."""
    _request(user.pk, MIRROR)


def request_account_deletion(user) -> None:
    """Deactivate the account now (no sign-in, no schedule, no task picks it up) and
    delete everything of it in the background."""
    _request(user.pk, ACCOUNT)


def _request(user_id: int, what: str) -> None:
    from mailsync import sync

    User = get_user_model()
    fields = {
        "data_deletion": what,
        "gmail_history_id": None,
        "initial_sync_completed": False,
        "label_sync_completed": False,
    }
    if what == ACCOUNT:
        fields["is_active"] = False
    with transaction.atomic():
        User.objects.filter(pk=user_id).update(**fields)
        sync.fail_runs(user_id, "Stopped: the user asked to delete their data.")
        transaction.on_commit(lambda: enqueue_deletion(user_id))


def enqueue_deletion(user_id: int) -> None:
    from django_q.tasks import async_task

    async_task("accounts.tasks.delete_user_data", user_id, q_options={"group": "deletion"})


def delete_chunk(user_id: int, chunk_size: int = CHUNK_SIZE) -> bool:
    """Delete one bounded piece of what the user asked to delete. Returns whether
    there is more to do."""
    from mailsync.models import BatchSlot, EmailMessage, Label, QuotaBucket, SyncProgress
    from mailsync.quota import user_key

    User = get_user_model()
    user = User.objects.filter(pk=user_id).exclude(data_deletion="").first()
    if user is None:
        return False  # done before, or never asked
    if user.data_deletion == ACCOUNT and GoogleToken.objects.filter(account__user=user).exists():
        disconnect_google(user_id, ACCOUNT_DELETED)
        return True
    with transaction.atomic():
        ids = list(
            EmailMessage.objects.filter(user_id=user_id)
            .order_by("pk")
            .values_list("pk", flat=True)[:chunk_size]
        )
        if ids:
            EmailMessage.objects.filter(pk__in=ids).delete()  # and their label links
            return True
        Label.objects.filter(user_id=user_id).delete()
        SyncProgress.objects.filter(user_id=user_id).delete()
        BatchSlot.objects.filter(user_id=user_id).delete()
        QuotaBucket.objects.filter(key=user_key(user_id)).delete()
        if user.data_deletion == ACCOUNT:
            user.delete()
            log.info("deleted the account of user %s and all its data", user_id)
            return False
        User.objects.filter(pk=user_id).update(data_deletion="")
    log.info("deleted the mirror of user %s", user_id)
    _resume_sync_if_reconnected(user_id)
    return False


def _resume_sync_if_reconnected(user_id: int) -> None:
    """A user who signed in again while their old mirror was deleted: their sync
    waited for the deletion; it starts now."""
    from mailsync import sync

    user = get_user_model().objects.filter(pk=user_id, gmail_auth_error="").first()
    if user and GoogleToken.objects.filter(account__user=user).exists():
        sync.start_sync(user)


def delete_for_a_while(user_id: int, budget_s: float | None = None) -> bool:
    """Delete chunks until done or until the time budget is spent (a task stays
    well within MAILSYNC_TASK_MAX_SECONDS). Returns whether there is more to do."""
    budget_s = budget_s if budget_s is not None else settings.MAILSYNC_TASK_MAX_SECONDS / 4
    deadline = time.monotonic() + budget_s
    while delete_chunk(user_id):
        if time.monotonic() > deadline:
            return True
    return False


def pending_deletions() -> list[int]:
    return list(
        get_user_model().objects.exclude(data_deletion="").values_list("pk", flat=True)[:1000]
    )
