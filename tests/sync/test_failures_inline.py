"""Gmail failing, as a whole or for one message: an exact mirror or a visible reason,
never a silent hole. Inline runs over real HTTP against the emulator."""

from __future__ import annotations

import pytest
from django.utils import timezone

from mailsync import counters, sync
from mailsync.models import EmailMessage, SyncProgress
from tests.gmail_fixtures import assert_exact_mirror, list_everything

pytestmark = pytest.mark.django_db

# messages.get and threads.get, plain or as batch parts: a Gmail outage.
MESSAGE_GET = r"^/gmail/v1/users/me/(messages|threads)/[0-9a-f]+$"


@pytest.fixture
def quick_retries(settings):
    settings.MAILSYNC_RETRY_BACKOFF_SECONDS = 0.01
    settings.MAILSYNC_MESSAGE_RETRY_SECONDS = 0.05
    settings.MAILSYNC_OUTAGE_RETRY_SECONDS = 0.05
    settings.MAILSYNC_TASK_MAX_SECONDS = 10  # waits above 2.5 s go to the watchdog
    return settings


def listed(user) -> SyncProgress:
    """Start a full sync and run it up to its listing (nothing fetched yet)."""
    return list_everything(user, fetch_chains=False)[0]


def assert_counts_exact(user) -> None:
    assert counters.read(user.pk) == counters.recount(user.pk)


def test_a_message_gmail_cannot_serve_does_not_block_the_mailbox(
    connected_mailbox, emulator, quick_retries
):
    user, _ = connected_mailbox(count=120)
    run = listed(user)
    poison_row = EmailMessage.objects.filter(user=user).order_by("listing_order")[7]
    poison = poison_row.gmail_id
    # Gmail fails it alone, and its thread with it.
    emulator.script_fault(
        rf"/(messages/{poison}|threads/{poison_row.thread_id})$",
        count=10**6,
        status=500,
        reason="backendError",
    )

    run = sync.run_until_finished(run, timeout_s=60)

    assert run.status == "completed", run.error_message
    assert run.num_unavailable == 1
    row = EmailMessage.objects.get(user=user, gmail_id=poison)
    assert row.unavailable_since is not None
    assert row.fetch_failures == quick_retries.MAILSYNC_UNAVAILABLE_AFTER_ATTEMPTS
    assert "500" in row.last_fetch_error
    assert EmailMessage.objects.filter(user=user, internal_date__isnull=False).count() == 119
    assert counters.read(user.pk).unavailable == 1
    assert_counts_exact(user)
    user.refresh_from_db()
    assert user.initial_sync_completed

    # Incremental syncs proceed meanwhile.
    emulator.insert_message(user.email)
    incremental = sync.run_until_finished(sync.start_incremental_sync(user), timeout_s=60)
    assert incremental.status == "completed", incremental.error_message
    assert incremental.num_unavailable == 1

    # The health check tries again, and Gmail serves it now.
    emulator.clear_faults()
    check = sync.run_until_finished(sync.start_health_check(user), timeout_s=60)
    assert check.status == "completed", check.error_message
    assert check.num_unavailable == 0
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert counters.read(user.pk).unavailable == 0
    assert_counts_exact(user)


def test_an_outage_uses_up_nothing_and_the_run_finishes_after_it(
    connected_mailbox, emulator, quick_retries
):
    quick_retries.MAILSYNC_OUTAGE_RETRY_SECONDS = 5  # above the in-task limit: watchdog
    user, _ = connected_mailbox(count=150)
    run = listed(user)
    emulator.script_fault(MESSAGE_GET, count=10**6, status=503, reason="backendError")

    sync.run_inline(sync.resume_steps(run))

    run.refresh_from_db()
    assert run.status == "in_progress"
    assert run.error_message.startswith("Retrying: Gmail answers 503")
    assert run.retry_at is not None
    assert run.retry_at > timezone.now()
    unfetched = EmailMessage.objects.filter(user=user, internal_date__isnull=True)
    assert unfetched.count() == 150
    assert not unfetched.exclude(fetch_failures=0).exists()  # nothing charged
    assert not unfetched.filter(unavailable_since__isnull=False).exists()

    emulator.clear_faults()
    SyncProgress.objects.filter(pk=run.pk).update(retry_at=timezone.now())  # time passes
    run = sync.run_until_finished(run, timeout_s=60)
    assert run.status == "completed", run.error_message
    assert run.error_message == ""
    assert run.num_unavailable == 0
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert_counts_exact(user)


def test_an_outage_during_an_incremental_sync_leaves_no_hole(
    connected_mailbox, emulator, quick_retries
):
    quick_retries.MAILSYNC_OUTAGE_RETRY_SECONDS = 5
    user, _ = connected_mailbox(count=200)
    assert sync.run_until_finished(sync.start_initial_sync(user)).status == "completed"
    for _ in range(60):
        emulator.insert_message(user.email)
    emulator.script_fault(MESSAGE_GET, count=10**6, status=503, reason="backendError")

    run = sync.start_incremental_sync(user)
    sync.run_inline(sync.resume_steps(run))
    run.refresh_from_db()
    assert run.is_active  # not "completed" with 60 empty rows
    assert "Gmail answers 503" in run.error_message

    # The next incremental trigger finds the run still going; after the outage it ends.
    assert sync.start_incremental_sync(user).pk == run.pk
    emulator.clear_faults()
    SyncProgress.objects.filter(pk=run.pk).update(retry_at=timezone.now())
    run = sync.run_until_finished(run, timeout_s=60)
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert_counts_exact(user)


def test_rate_limits_charge_no_message(connected_mailbox, emulator, quick_retries):
    user, _ = connected_mailbox(count=100)
    run = listed(user)
    emulator.script_fault(MESSAGE_GET, count=400, status=429, reason="rateLimitExceeded")
    run = sync.run_until_finished(run, timeout_s=120)
    assert run.status == "completed", run.error_message
    assert run.num_unavailable == 0
    assert not EmailMessage.objects.filter(user=user, fetch_failures__gt=0).exists()
    assert_exact_mirror(user, emulator.snapshot(user.email))


def test_a_listing_that_misses_a_message_deletes_nothing_gmail_still_has(
    connected_mailbox, emulator
):
    user, _ = connected_mailbox(count=80)
    assert sync.run_until_finished(sync.start_initial_sync(user)).status == "completed"
    kept = EmailMessage.objects.filter(user=user).order_by("listing_order")[3]
    gone_id = EmailMessage.objects.filter(user=user).order_by("listing_order")[5].gmail_id
    emulator.delete_message(user.email, gone_id)
    run = sync.start_health_check(user)
    steps = sync.run_step(sync.resume_steps(run)[0])  # labels, then the listing starts
    steps = sync.run_step(steps[0])  # the single listing page
    # As if the listing had skipped it: the resync must ask Gmail, not delete it.
    EmailMessage.objects.filter(pk=kept.pk).update(listed_by_run=None)
    sync.run_inline(steps)
    run = sync.run_until_finished(run)
    assert run.status == "completed", run.error_message
    assert EmailMessage.objects.filter(pk=kept.pk).exists()
    assert not EmailMessage.objects.filter(user=user, gmail_id=gone_id).exists()
    assert run.num_deleted == 1
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert_counts_exact(user)


def test_counts_equal_a_recount_through_initial_incremental_resync_and_deletes(
    connected_mailbox, emulator
):
    user, _ = connected_mailbox(count=300)
    sync.run_until_finished(sync.start_initial_sync(user))
    assert_counts_exact(user)
    assert counters.read(user.pk).messages == 300

    ids = list(emulator.snapshot(user.email)["messages"])
    for message_id in ids[:20]:
        emulator.delete_message(user.email, message_id)
    for _ in range(30):
        emulator.insert_message(user.email)
    for message_id in ids[20:30]:
        emulator.trash_message(user.email, message_id)
    assert sync.run_until_finished(sync.start_incremental_sync(user)).status == "completed"
    assert_counts_exact(user)
    assert counters.read(user.pk).fetched == 310

    for message_id in ids[40:45]:
        emulator.delete_message(user.email, message_id)
    emulator.insert_message(user.email)
    emulator.expire_history(user.email)
    fallback = sync.run_until_finished(sync.start_incremental_sync(user))
    assert fallback.status == "completed", fallback.error_message
    assert fallback.fell_back_to_full
    assert_counts_exact(user)
    assert_exact_mirror(user, emulator.snapshot(user.email))

    # A full resync of a mirror that drifted (rows Gmail no longer has).
    for message_id in ids[50:55]:
        emulator.delete_message(user.email, message_id)
    assert sync.run_until_finished(sync.start_initial_sync(user)).status == "completed"
    assert_counts_exact(user)
    assert_exact_mirror(user, emulator.snapshot(user.email))
