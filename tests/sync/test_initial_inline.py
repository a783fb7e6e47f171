"""The initial sync, run inline against the emulator over real HTTP."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from mailsync import counters, quota, sync
from mailsync.models import EmailMessage, SyncProgress
from tests.gmail_fixtures import assert_exact_mirror, list_everything

pytestmark = pytest.mark.django_db


def run_full(user) -> SyncProgress:
    run = sync.start_initial_sync(user)
    sync.run_inline(sync.resume_steps(run))
    run.refresh_from_db()
    return run


@pytest.mark.unstable_too
def test_initial_sync_mirrors_the_whole_mailbox(connected_mailbox, emulator):
    user, _mailbox = connected_mailbox(count=620)  # two listing pages
    profile_history_id = emulator.snapshot(user.email)["historyId"]

    run = run_full(user)

    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    user.refresh_from_db()
    assert user.initial_sync_completed
    assert user.label_sync_completed
    assert user.gmail_history_id == profile_history_id
    assert user.last_full_sync_at is not None
    assert run.num_total == run.num_processed == 620
    assert run.inbox_pages == 1  # the INBOX first, then the whole mailbox
    assert run.pages_listed == 3
    # Every message was fetched exactly once.
    assert set(emulator.stats()["fetches"].values()) == {1}


def test_messages_are_stored_with_headers_and_bodies(connected_mailbox):
    user, _ = connected_mailbox(count=80)
    run_full(user)
    fetched = EmailMessage.objects.filter(user=user)
    assert not fetched.filter(internal_date__isnull=True).exists()
    assert fetched.exclude(subject="").count() > 70
    assert fetched.exclude(sender="").count() > 70
    assert fetched.exclude(body_text="", body_html="").count() > 70
    assert fetched.exclude(attachments=[]).exists()


def test_labels_carry_their_metadata_and_counters(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=50)
    run_full(user)
    inbox = user.labels.get(gmail_id="INBOX")
    assert inbox.type == "system"
    assert inbox.messages_total is not None
    coloured = user.labels.filter(type="user").exclude(background_color="")
    assert coloured.exists()


def test_the_sync_command_runs_inline(connected_mailbox, emulator, capsys):
    user, _ = connected_mailbox(count=120)
    call_command("sync_user", user.email, "--inline")
    out = capsys.readouterr().out
    assert "completed: 120 messages" in out
    assert_exact_mirror(user, emulator.snapshot(user.email))


def test_triggering_twice_starts_one_run(connected_mailbox):
    user, _ = connected_mailbox(count=10)
    first = sync.start_initial_sync(user)
    second = sync.start_initial_sync(user)
    assert first.pk == second.pk
    assert SyncProgress.objects.filter(user=user, sync_type="initial").count() == 1


def test_failed_batch_parts_are_retried_alone(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=150)
    emulator.script_fault(r"/messages/[0-9a-f]+$", count=7, status=503, reason="backendError")
    run = run_full(user)
    assert run.status == "completed"
    assert_exact_mirror(user, emulator.snapshot(user.email))
    fetches = emulator.stats()["fetches"]
    assert sum(fetches.values()) <= 150 + 7


def test_rate_limited_parts_are_retried(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=100)
    emulator.script_fault(r"/messages/[0-9a-f]+$", count=20, status=429, reason="rateLimitExceeded")
    run = run_full(user)
    assert run.status == "completed"
    assert_exact_mirror(user, emulator.snapshot(user.email))


def test_a_message_deleted_after_listing_is_gone_not_an_error(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=60)
    run = sync.start_initial_sync(user)
    run, steps = list_everything(user, run)
    victim = EmailMessage.objects.filter(user=user).order_by("listing_order").first().gmail_id
    emulator.delete_message(user.email, victim)
    sync.run_inline(steps)
    run.refresh_from_db()
    assert run.status == "completed"
    assert not EmailMessage.objects.filter(user=user, gmail_id=victim).exists()
    assert_exact_mirror(user, emulator.snapshot(user.email))


def test_revoked_access_fails_the_run_visibly(connected_mailbox, emulator):
    user, mailbox = connected_mailbox(count=30)
    emulator.revoke_refresh_token(mailbox.refresh_token)
    run = run_full(user)
    assert run.status == "failed"
    assert "sign in with Google again" in run.error_message
    user.refresh_from_db()
    assert user.gmail_auth_error


def test_expired_access_token_is_refreshed_and_stored(connected_mailbox, emulator):
    from accounts.models import GoogleToken

    user, _mailbox = connected_mailbox(count=30)
    GoogleToken.objects.filter(account__user=user).update(access_token="expired-or-unknown")
    run = run_full(user)
    assert run.status == "completed", run.error_message
    token = GoogleToken.objects.get(account__user=user)
    assert token.access_token != "expired-or-unknown"
    assert token.expires_at is not None


@pytest.mark.unstable_too
def test_resync_keeps_fetched_messages_and_drops_deleted_ones(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=100)
    run_full(user)
    gone = next(iter(emulator.snapshot(user.email)["messages"]))
    emulator.delete_message(user.email, gone)
    emulator.reset_stats()
    run = run_full(user)
    assert run.status == "completed"
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert emulator.stats()["fetches"] == {}


def test_malformed_label_metadata_is_stored_safely(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=5)
    label_id = emulator.create_label(
        user.email,
        "Odd\x00 label",
        color={"textColor": "red;background:url(//evil.example)", "backgroundColor": "#16a765"},
    )
    run_full(user)
    label = user.labels.get(gmail_id=label_id)
    assert label.name == "Odd label"
    assert label.text_color == ""
    assert label.background_color == "#16a765"


def test_a_full_sync_supersedes_a_running_incremental_one(connected_mailbox):
    user, _ = connected_mailbox(count=10)
    run_full(user)
    incremental = sync.start_incremental_sync(user)
    assert incremental.sync_type == "incremental"
    full = sync.start_initial_sync(user)
    incremental.refresh_from_db()
    assert incremental.status == "failed"
    assert incremental.error_message == "Superseded by a full sync."
    assert full.sync_type == "initial"
    assert run_full(user).status == "completed"


def test_too_many_concurrent_requests_is_retried_without_cutting_the_budget(
    connected_mailbox, emulator, settings
):
    settings.MAILSYNC_RETRY_BACKOFF_SECONDS = 0.01
    # A batch of 50 goes as requests of 10 parts (quota.request_parts)...
    emulator.config.concurrent_requests_per_user = 8  # ...and 10 exceeds this...
    emulator.config.latency_ms = 40  # ...when its parts are served side by side
    user, _ = connected_mailbox(count=150)
    run = run_full(user)
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert emulator.stats()["by_status"].get("429", 0) > 0
    assert quota.pace(user.pk) == quota.user_ceiling()


def test_messages_held_by_a_dead_worker_are_fetched_when_its_lease_runs_out(
    connected_mailbox, emulator
):
    import datetime as dt

    from django.utils import timezone

    user, _ = connected_mailbox(count=30)
    run = sync.start_initial_sync(user)
    run, steps = list_everything(user, run)
    # A first listing leaves nothing unlisted to check; what that step starts is dropped.
    sync.run_step(next(step for step in steps if step.stage == "verify_unlisted"))
    # A worker claimed everything and was killed.
    lease_end = timezone.now() + dt.timedelta(seconds=60)
    held = EmailMessage.objects.filter(user=user)
    held.update(claimed_until=lease_end)
    fetch = next(step for step in steps if step.stage == "fetch_batch")
    # No task spins for a minute: the chain ends, and the run is to be resumed (by the
    # watchdog) when the lease runs out.
    assert sync.run_step(fetch) == []
    run.refresh_from_db()
    assert run.retry_at == lease_end
    held.update(claimed_until=timezone.now() - dt.timedelta(seconds=1))  # lease ran out
    run = sync.run_until_finished(run)
    assert run.status == "completed"
    assert_exact_mirror(user, emulator.snapshot(user.email))


def test_a_listing_task_lists_page_after_page_and_starts_the_chains_at_once(
    connected_mailbox, emulator, django_capture_on_commit_callbacks
):
    """In a task, the listing goes on from page to page (one task per page waited for
    the broker and for a worker) and hands the batch chains to the task's starter as
    soon as the first page gives them work."""
    from mailsync.sync.steps import starting_with

    user, _ = connected_mailbox(count=1300)  # the INBOX, then three pages of 500
    run = sync.start_initial_sync(user)
    (list_step,) = sync.run_step(next(iter(sync.resume_steps(run))))
    assert list_step.stage == "list_page"
    started: list[sync.Step] = []

    # (The starter runs after commit: the test's transaction never commits.)
    with django_capture_on_commit_callbacks(execute=True), starting_with(started.extend):
        follow = sync.run_step(list_step)

    run.refresh_from_db()
    assert run.listing_completed
    assert run.pages_listed == run.inbox_pages + 3
    assert [step.stage for step in follow] == ["verify_unlisted"]
    assert [step.stage for step in started] == ["fetch_batch"] * 4
    assert EmailMessage.objects.filter(user=user).count() == 1300
    sync.run_inline([*started, *follow])
    run.refresh_from_db()
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert set(emulator.stats()["fetches"].values()) == {1}


def test_inline_a_listing_returns_as_soon_as_chains_can_start(connected_mailbox):
    """With no task to start them from, the chains are returned with the next page:
    they run between the pages, not after the whole listing."""
    user, _ = connected_mailbox(count=1300)
    run = sync.start_initial_sync(user)
    (list_step,) = sync.run_step(next(iter(sync.resume_steps(run))))

    follow = sync.run_step(list_step)

    run.refresh_from_db()
    assert run.pages_listed == 1
    assert sorted(step.stage for step in follow) == ["fetch_batch"] * 4 + ["list_page"]


def test_the_first_batch_of_an_empty_mailbox_is_one_request(connected_mailbox, emulator, settings):
    """The first messages reach the mirror after one round trip; then batches are full."""
    settings.MAILSYNC_FETCH_TASK_SECONDS = 0  # one batch per task
    user, _ = connected_mailbox(count=400)
    run, steps = list_everything(user)
    emulator.reset_stats()

    def parts_fetched() -> int:
        by_method = emulator.stats()["by_method"]
        return sum(
            by_method.get(m, 0) for m in ("gmail.users.messages.get", "gmail.users.threads.get")
        )

    one_request = quota.request_parts(settings.MAILSYNC_BATCH_SIZE)
    assert one_request < settings.MAILSYNC_BATCH_SIZE
    first_chain = next(step for step in steps if step.stage == "fetch_batch")
    (fetch,) = sync.run_step(first_chain)
    # (A batch claims rows; a thread fetched whole is one part for several of them.)
    first = parts_fetched()
    assert 0 < first <= one_request
    (fetch,) = sync.run_step(fetch)  # the mailbox has fetched messages now: a full batch
    assert parts_fetched() - first > one_request

    sync.run_inline([fetch, *(step for step in steps if step is not first_chain)])
    run.refresh_from_db()
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))


def test_a_mailbox_that_fits_in_one_batch_is_fetched_in_one(connected_mailbox, settings):
    settings.MAILSYNC_FETCH_TASK_SECONDS = 0  # one batch per task
    user, _ = connected_mailbox(count=40)
    _, steps = list_everything(user)
    assert quota.request_parts(settings.MAILSYNC_BATCH_SIZE) < 40 < settings.MAILSYNC_BATCH_SIZE

    sync.run_step(next(step for step in steps if step.stage == "fetch_batch"))

    assert counters.read(user.pk).fetched == 40


AWKWARD = [
    ('Braces {a,b} and "quotes"', 'back\\slash, comma, "NULL", {"json": [1, 2]}'),
    ("NULL", "NULL"),
    ("Ünïcödé ✓ 中文 😀", "line one\r\nline two\ttab ' single ' quote"),
    ("", "a body with \\x00 spelled out and a lone \\ at the end \\"),
]


def test_a_batch_stores_awkward_text_as_it_came(connected_mailbox, emulator):
    """Every column of a batch goes to the database in one statement (arrays on
    PostgreSQL): quotes, braces, backslashes and "NULL" come back as they were."""
    from email.message import EmailMessage as Mime

    user, _ = connected_mailbox(count=5)
    ids = {}
    for subject, body in AWKWARD:
        mime = Mime()
        mime["From"] = "Odd <odd@example.com>"
        mime["To"] = "me@example.com"
        mime["Subject"] = subject
        mime.set_content(body)
        ids[emulator.insert_message(user.email, raw=mime.as_bytes())] = (subject, body)

    run = sync.run_until_finished(sync.start_initial_sync(user))

    assert run.status == "completed", run.error_message
    for gmail_id, (subject, body) in ids.items():
        message = EmailMessage.objects.get(user=user, gmail_id=gmail_id)
        assert message.subject == subject
        assert message.body_text.rstrip("\n") == body.replace("\r\n", "\n")
    assert_exact_mirror(user, emulator.snapshot(user.email))
