"""Incremental sync from Gmail history, and the fallback when history expired."""

from __future__ import annotations

import random

import pytest

from mailsync import gmail, sync
from mailsync.models import EmailMessage, SyncProgress
from mailsync.sync import incremental
from tests.gmail_fixtures import assert_exact_mirror, let_history_settle

pytestmark = pytest.mark.django_db


def run(start) -> SyncProgress:
    progress = start
    sync.run_inline(sync.resume_steps(progress))
    progress.refresh_from_db()
    return progress


@pytest.fixture
def synced(connected_mailbox, emulator):
    user, _mailbox = connected_mailbox(count=400)
    initial = run(sync.start_initial_sync(user))
    assert initial.status == "completed", initial.error_message
    user.refresh_from_db()
    emulator.reset_stats()
    return user


def mutate(emulator, email: str, seed: int = 1) -> dict:
    """The acceptance mix: insert 50, delete 30, relabel 60, a label created and
    deleted, trash 10."""
    rnd = random.Random(seed)
    before = emulator.snapshot(email)["messages"]
    existing = sorted(before)
    rnd.shuffle(existing)
    to_delete, to_relabel, to_trash = existing[:30], existing[30:90], existing[90:100]
    inserted = [emulator.insert_message(email) for _ in range(50)]
    for message_id in to_delete:
        emulator.delete_message(email, message_id)
    temporary = emulator.create_label(email, f"Temporary {seed}")
    kept = emulator.create_label(
        email, f"Kept {seed}", color={"textColor": "#ffffff", "backgroundColor": "#000000"}
    )
    for n, message_id in enumerate(to_relabel):
        if n % 2:
            emulator.modify_message(email, message_id, add=[kept, "STARRED"])
        else:
            emulator.modify_message(email, message_id, add=[temporary], remove=["INBOX", "UNREAD"])
    emulator.delete_label(email, temporary)
    for message_id in to_trash:
        emulator.trash_message(email, message_id)
    after = emulator.snapshot(email)["messages"]
    relabelled = {
        mid
        for mid in to_relabel + to_trash
        if sorted(after[mid]["labelIds"]) != sorted(before[mid]["labelIds"])
    }
    return {"inserted": set(inserted), "relabelled": relabelled}


@pytest.mark.unstable_too
def test_incremental_sync_applies_every_kind_of_change(synced, emulator, unstable):
    user = synced
    changes = mutate(emulator, user.email)
    if unstable:
        # Gmail does not show the newest records yet, though its answer's historyId
        # counts them: a first pass applies what is shown, the next one the rest.
        first = run(sync.start_incremental_sync(user))
        assert first.status == "completed", first.error_message
        let_history_settle(emulator)
    progress = run(sync.start_incremental_sync(user))
    assert progress.sync_type == "incremental"
    assert progress.status == "completed", progress.error_message
    assert not progress.fell_back_to_full
    assert_exact_mirror(user, emulator.snapshot(user.email))
    # Only the 50 new messages were downloaded.
    assert set(emulator.stats()["fetches"]) == changes["inserted"]
    assert max(emulator.stats()["fetches"].values()) <= (2 if unstable else 1)
    if unstable:
        return
    assert progress.num_added == 50
    assert progress.num_deleted == 30
    assert progress.num_relabelled == len(changes["relabelled"])
    user.refresh_from_db()
    assert user.gmail_history_id == emulator.snapshot(user.email)["historyId"]
    assert user.last_incremental_sync_at is not None


@pytest.mark.unstable_too
def test_expired_history_falls_back_without_downloading_again(synced, emulator):
    user = synced
    mirrored = set(emulator.snapshot(user.email)["messages"])
    mutate(emulator, user.email, seed=1)
    emulator.expire_history(user.email)
    changes = mutate(emulator, user.email, seed=2)
    progress = run(sync.start_incremental_sync(user))
    assert progress.status == "completed", progress.error_message
    assert progress.fell_back_to_full
    assert_exact_mirror(user, emulator.snapshot(user.email))
    fetched = set(emulator.stats()["fetches"])
    assert changes["inserted"] <= fetched
    # Nothing we already had was downloaded again: only what is new since then.
    assert fetched == set(emulator.snapshot(user.email)["messages"]) - mirrored


def test_empty_history_pages_with_a_token_are_normal(synced, emulator):
    user = synced
    emulator.insert_message(user.email)
    emulator.force_empty_history_pages(user.email, 3)
    progress = run(sync.start_incremental_sync(user))
    assert progress.status == "completed", progress.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))


def test_replaying_a_page_changes_nothing(synced, emulator):
    user = synced
    emulator.config.empty_history_page_rate = 0.0
    mutate(emulator, user.email)
    page = gmail.GmailClient(user.pk).history_page(user.gmail_history_id)
    assert page.records
    sync.apply_history_page(user.pk, page.records)
    before = sorted(
        map(str, EmailMessage.objects.filter(user=user).values_list("gmail_id", "labels__gmail_id"))
    )
    sync.apply_history_page(user.pk, page.records)
    after = sorted(
        map(str, EmailMessage.objects.filter(user=user).values_list("gmail_id", "labels__gmail_id"))
    )
    assert before == after
    progress = run(sync.start_incremental_sync(user))
    assert progress.status == "completed"
    assert_exact_mirror(user, emulator.snapshot(user.email))


@pytest.mark.parametrize("recovery", ["resume", "new_run"])
def test_a_crash_between_pages_ends_in_the_exact_mirror(synced, emulator, monkeypatch, recovery):
    user = synced
    old_history_id = user.gmail_history_id
    mutate(emulator, user.email)
    emulator.force_empty_history_pages(user.email, 2)  # three pages at least
    monkeypatch.setattr(incremental, "HISTORY_PAGES_PER_STEP", 1)
    progress = sync.start_incremental_sync(user)
    follow_up = sync.run_step(sync.resume_steps(progress)[0])
    # The worker dies here: the follow-up step is lost.
    assert [step.stage for step in follow_up] == ["incremental_sync"]
    user.refresh_from_db()
    assert user.gmail_history_id == old_history_id  # moved only after the last page
    if recovery == "resume":  # what the watchdog does
        progress.refresh_from_db()
        sync.run_inline(sync.resume_steps(progress))
    else:  # an operator resets the run; a new one replays from the old id
        SyncProgress.objects.filter(pk=progress.pk).update(status="failed")
        progress = run(sync.start_incremental_sync(user))
    progress.refresh_from_db()
    assert progress.status == "completed", progress.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))


def test_incremental_before_initial_starts_the_initial_sync(connected_mailbox):
    user, _ = connected_mailbox(count=5)
    progress = sync.start_incremental_sync(user)
    assert progress.sync_type == "initial"
