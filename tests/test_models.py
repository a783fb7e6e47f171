"""The database enforces the invariants the sync engine relies on."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from mailsync.models import EmailMessage, Label, SyncProgress

pytestmark = pytest.mark.django_db


def test_label_id_is_unique_per_user_not_globally(user_factory):
    alice, bob = user_factory(), user_factory()
    Label.objects.create(user=alice, gmail_id="INBOX", name="INBOX", type="system")
    # System label ids repeat across users.
    Label.objects.create(user=bob, gmail_id="INBOX", name="INBOX", type="system")
    with pytest.raises(IntegrityError), transaction.atomic():
        Label.objects.create(user=alice, gmail_id="INBOX", name="Inbox again", type="system")
    assert Label.objects.filter(gmail_id="INBOX").count() == 2


def test_message_id_is_unique_per_user(user_factory):
    alice, bob = user_factory(), user_factory()
    EmailMessage.objects.create(user=alice, gmail_id="m1")
    EmailMessage.objects.create(user=bob, gmail_id="m1")
    with pytest.raises(IntegrityError), transaction.atomic():
        EmailMessage.objects.create(user=alice, gmail_id="m1")


@pytest.mark.parametrize("active_status", ["pending", "in_progress"])
def test_second_active_run_of_same_type_is_refused(user_factory, active_status):
    user = user_factory()
    SyncProgress.objects.create(user=user, sync_type="initial", status=active_status)
    for other_status in ("pending", "in_progress"):
        with pytest.raises(IntegrityError), transaction.atomic():
            SyncProgress.objects.create(user=user, sync_type="initial", status=other_status)
    # Another type, another user, or a finished run are all fine.
    SyncProgress.objects.create(user=user, sync_type="incremental", status="pending")
    SyncProgress.objects.create(user=user_factory(), sync_type="initial", status="pending")
    SyncProgress.objects.create(user=user, sync_type="initial", status="completed")
    SyncProgress.objects.create(user=user, sync_type="initial", status="failed")


def test_deleting_a_user_deletes_their_mirror(user_factory):
    user, other = user_factory(), user_factory()
    for owner in (user, other):
        label = Label.objects.create(user=owner, gmail_id="Label_1", name="Work")
        message = EmailMessage.objects.create(user=owner, gmail_id="m1")
        message.labels.add(label)
        SyncProgress.objects.create(user=owner, sync_type="initial")
    user.delete()
    assert not Label.objects.filter(user_id=user.pk).exists()
    assert not EmailMessage.objects.filter(user_id=user.pk).exists()
    assert not SyncProgress.objects.filter(user_id=user.pk).exists()
    assert EmailMessage.objects.get(user=other).labels.count() == 1
    assert SyncProgress.objects.filter(user=other).count() == 1


def test_can_sync_incrementally_needs_both_flags_and_a_history_id(user_factory):
    user = user_factory()
    assert not user.can_sync_incrementally
    user.initial_sync_completed = user.label_sync_completed = True
    assert not user.can_sync_incrementally
    user.gmail_history_id = "12345"
    assert user.can_sync_incrementally


def test_percentage():
    run = SyncProgress(num_total=200, num_processed=50, status="in_progress")
    assert run.percentage() == 25
    assert SyncProgress(num_total=0, status="pending").percentage() == 0
    assert SyncProgress(num_total=0, status="completed").percentage() == 100
