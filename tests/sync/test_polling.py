"""Polling as the cheap safety net: the dispatcher selects due users in SQL, chunked and
claimed; a poll that finds nothing costs one history.list and records no run; one that
finds history is a normal recorded run; watches are renewed and stopped."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ, Success

from accounts.disconnect import disconnect_google
from mailsync import maintenance, polling, sync, watches
from mailsync.models import Label, SyncProgress
from mailsync.status import mailbox_status
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = pytest.mark.django_db

User = get_user_model()


@pytest.fixture
def mirrored(connected_mailbox):
    """A user with a complete mirror, as after the first sync."""

    def make(email: str = "alice@example.com", count: int = 60):
        user, mailbox = connected_mailbox(email, count=count)
        run = sync.run_until_finished(sync.start_initial_sync(user))
        assert run.status == "completed", run.error_message
        user.refresh_from_db()
        return user, mailbox

    return make


@pytest.fixture
def tasks_inline(monkeypatch):
    """Django-Q2 runs what is enqueued at once, in this process (its own sync mode)."""
    monkeypatch.setattr(Conf, "SYNC", True)


def gmail_calls(emulator) -> dict[str, int]:
    return {k: v for k, v in emulator.stats()["by_method"].items() if k.startswith("gmail.")}


def test_a_poll_that_finds_nothing_records_no_run_and_costs_one_call(mirrored, emulator):
    user, _ = mirrored()
    runs = SyncProgress.objects.count()
    before = user.last_incremental_sync_at or user.last_full_sync_at
    emulator.reset_stats()

    with CaptureQueriesContext(connection) as queries:
        sync.run_inline([sync.Step("poll", user.pk)])

    assert SyncProgress.objects.count() == runs
    assert gmail_calls(emulator) == {"gmail.users.history.list": 1}
    assert emulator.stats()["units"] == 2
    user.refresh_from_db()
    assert user.last_incremental_sync_at > before
    assert user.next_sync_at > timezone.now()
    assert user.sync_claimed_at is None
    writes = [
        q["sql"]
        for q in queries.captured_queries
        if q["sql"].startswith(("INSERT", "UPDATE", "DELETE"))
        and "quota" not in q["sql"].split("SET")[0]
    ]
    assert len(writes) == 1, writes
    assert "accounts_user" in writes[0]


def test_a_poll_that_finds_history_is_a_recorded_exact_run(mirrored, emulator):
    user, _ = mirrored()
    new_id = emulator.insert_message(user.email, label_ids=["INBOX", "UNREAD"])
    work = emulator.create_label(user.email, "Brand new")
    emulator.reset_stats()

    sync.run_inline([sync.Step("poll", user.pk)])

    run = SyncProgress.objects.get(user=user, sync_type="incremental")
    assert run.status == "completed", run.error_message
    assert run.num_added == 1
    assert_exact_mirror(user, emulator.snapshot(user.email))
    calls = gmail_calls(emulator)
    # labels.list finds the new label; labels.get only for it and the touched labels.
    assert calls["gmail.users.labels.list"] == 1
    assert calls.get("gmail.users.labels.get", 0) <= 3
    assert Label.objects.get(user=user, gmail_id=work).counts_refreshed_at is not None
    assert EmailMessage_fetched(user, new_id)


def EmailMessage_fetched(user, gmail_id: str) -> bool:
    from mailsync.models import EmailMessage

    return EmailMessage.objects.filter(
        user=user, gmail_id=gmail_id, internal_date__isnull=False
    ).exists()


def test_label_counters_are_refreshed_at_most_hourly(mirrored, emulator):
    user, _ = mirrored()
    emulator.insert_message(user.email, label_ids=["INBOX"])
    sync.run_inline([sync.Step("poll", user.pk)])  # INBOX was refreshed by the first sync
    emulator.insert_message(user.email, label_ids=["INBOX"])
    emulator.reset_stats()
    sync.run_inline([sync.Step("poll", user.pk)])
    assert "gmail.users.labels.get" not in gmail_calls(emulator)
    assert Label.objects.get(user=user, gmail_id="INBOX").counts_stale
    Label.objects.filter(user=user).update(
        counts_refreshed_at=timezone.now() - dt.timedelta(hours=2)
    )
    emulator.insert_message(user.email, label_ids=["INBOX"])
    sync.run_inline([sync.Step("poll", user.pk)])
    inbox = Label.objects.get(user=user, gmail_id="INBOX")
    assert not inbox.counts_stale
    assert inbox.messages_total == sum(
        "INBOX" in m["labelIds"] for m in emulator.snapshot(user.email)["messages"].values()
    )


def test_a_poll_whose_history_expired_falls_back_to_a_resync(mirrored, emulator):
    user, _ = mirrored()
    emulator.insert_message(user.email)
    emulator.expire_history(user.email)

    sync.run_inline([sync.Step("poll", user.pk)])

    run = SyncProgress.objects.get(user=user, sync_type="incremental")
    assert run.fell_back_to_full
    assert run.status == "completed", run.error_message
    assert_exact_mirror(user, emulator.snapshot(user.email))


def due_user(user_factory, minutes_ago: float, **fields):
    fields = {
        "initial_sync_completed": True,
        "label_sync_completed": True,
        "gmail_history_id": "100",
        **fields,
    }
    user = user_factory(**fields)
    User.objects.filter(pk=user.pk).update(
        next_sync_at=timezone.now() - dt.timedelta(minutes=minutes_ago)
    )
    return user


def test_the_dispatcher_claims_only_due_users_oldest_first_in_chunks(
    user_factory, settings, monkeypatch
):
    settings.MAILSYNC_INCREMENTAL_INTERVAL_MINUTES = 5
    monkeypatch.setattr(polling, "DISPATCH_CHUNK", 3)
    monkeypatch.setattr(polling, "POLLS_PER_TASK", 2)
    due = [due_user(user_factory, minutes_ago=100 - i) for i in range(7)]
    later = due_user(user_factory, minutes_ago=-3)
    refused = due_user(user_factory, minutes_ago=50, gmail_auth_error="revoked")
    never = user_factory()  # no mirror yet: never due
    busy = due_user(user_factory, minutes_ago=200)
    User.objects.filter(pk=busy.pk).update(sync_claimed_at=timezone.now())

    with CaptureQueriesContext(connection) as queries:
        started = maintenance.dispatch_incremental_syncs()

    assert started == 7
    polled = [pk for task in OrmQ.objects.all() for pk in task.task["args"][1]]
    assert sorted(polled) == sorted(u.pk for u in due)
    # Chunks of 3 due users (oldest first: busy, 0, 1 | 2, 3, 4 | 5, 6, refused), polls
    # of at most 2 per task.
    assert OrmQ.objects.count() == 4
    users = {u.pk: u for u in User.objects.all()}
    now = timezone.now()
    for user in due:
        assert users[user.pk].sync_claimed_at is not None
        assert users[user.pk].next_sync_at > now + dt.timedelta(minutes=4)
    assert users[later.pk].next_sync_at < now + dt.timedelta(minutes=4)  # untouched
    assert users[refused.pk].next_sync_at is None  # off the due list
    assert users[never.pk].next_sync_at is None
    assert users[busy.pk].next_sync_at > now  # moved on, but its pass is already running
    # One statement per chunk (4 chunks: 3 + 3 + 3 + 0 of the 9 due) plus one per task.
    claims = [q for q in queries.captured_queries if "UPDATE accounts_user" in q["sql"]]
    assert len(claims) == 4
    assert len(queries.captured_queries) == len(claims) + OrmQ.objects.count()
    # A second dispatcher in the same minute finds nothing due.
    assert maintenance.dispatch_incremental_syncs() == 0


def test_a_healthy_watch_polls_at_the_fallback_interval(user_factory, settings):
    settings.MAILSYNC_INCREMENTAL_INTERVAL_MINUTES = 5
    settings.MAILSYNC_PUSH_FALLBACK_MINUTES = 60
    watched = due_user(
        user_factory,
        minutes_ago=1,
        push_state="on",
        watch_expires_at=timezone.now() + dt.timedelta(days=6),
    )
    polled = due_user(user_factory, minutes_ago=1)
    maintenance.dispatch_incremental_syncs()
    watched.refresh_from_db()
    polled.refresh_from_db()
    assert watched.next_sync_at > timezone.now() + dt.timedelta(minutes=55)
    assert polled.next_sync_at < timezone.now() + dt.timedelta(minutes=6)


def test_watch_is_renewed_daily_and_stopped_on_disconnect(
    mirrored, emulator, settings, tasks_inline
):
    settings.GMAIL_PUSH_TOPIC = "projects/test/topics/gmail"
    user, mailbox = mirrored()
    sync.run_inline([sync.Step("watch", user.pk)])
    user.refresh_from_db()
    assert user.push_state == "on"
    assert user.push_summary == "on"
    assert user.watch_expires_at > timezone.now() + dt.timedelta(days=6)
    assert mailbox.watch is not None
    # The safety-net poll moved to the fallback interval (60 min).
    assert user.next_sync_at > timezone.now() + dt.timedelta(minutes=55)
    User.objects.filter(pk=user.pk).update(watch_expires_at=timezone.now() + dt.timedelta(hours=3))
    emulator.reset_stats()

    assert watches.renew_watches() == 1

    assert gmail_calls(emulator) == {"gmail.users.watch": 1}
    user.refresh_from_db()
    assert user.watch_expires_at > timezone.now() + dt.timedelta(days=6)
    assert watches.renew_watches() == 0  # nothing lapses within a day now

    disconnect_google(user.pk)

    assert gmail_calls(emulator).get("gmail.users.stop") == 1
    assert mailbox.watch is None
    user.refresh_from_db()
    assert user.push_state == ""
    assert user.next_sync_at is None


def test_a_failed_watch_leaves_the_user_on_polling_visibly(mirrored, emulator, settings):
    settings.GMAIL_PUSH_TOPIC = "projects/test/topics/gmail"
    user, _ = mirrored()
    emulator.script_fault(r"/watch$", count=1, status=400, reason="invalidArgument")

    sync.run_inline([sync.Step("watch", user.pk)])

    user.refresh_from_db()
    assert user.push_state == "failed"
    assert user.push_summary.startswith("failed: Gmail answered 400")
    assert mailbox_status(user)["stages"]["incremental"]["push"] == user.push_summary
    assert not polling.push_healthy(user)
    # The daily renewal tries it again.
    assert watches.renew_watches() == 1


def test_the_first_complete_mirror_is_watched(
    connected_mailbox, emulator, settings, tasks_inline, django_capture_on_commit_callbacks
):
    settings.GMAIL_PUSH_TOPIC = "projects/test/topics/gmail"
    user, mailbox = connected_mailbox(count=40)
    run = sync.start_initial_sync(user)
    with django_capture_on_commit_callbacks(execute=True):
        sync.run_until_finished(run)
    user.refresh_from_db()
    assert user.push_state == "on"
    assert mailbox.watch is not None
    assert user.next_sync_at is not None


def test_clean_up_works_through_any_backlog_in_chunks(user_factory, settings, monkeypatch):
    settings.MAILSYNC_KEEP_FINISHED_RUNS_DAYS = 30
    monkeypatch.setattr(maintenance, "CLEAN_UP_CHUNK", 2)
    old = timezone.now() - dt.timedelta(days=40)
    users = [user_factory() for _ in range(3)]
    runs = [
        SyncProgress.objects.create(user=user, sync_type="incremental", status="completed")
        for user in users
        for _ in range(3)
    ]
    SyncProgress.objects.filter(pk__in=[r.pk for r in runs]).update(started_at=old)
    recent = SyncProgress.objects.create(user=users[0], sync_type="incremental", status="failed")
    for n in range(5):
        Success.objects.create(
            id=f"{n:032x}", name=f"old{n}", func="x", started=old, stopped=old, success=True
        )

    removed = maintenance.clean_up()

    kept = set(SyncProgress.objects.values_list("pk", flat=True))
    # users[0]'s latest is the recent run; the others keep their latest old one.
    assert kept == {recent.pk, runs[5].pk, runs[8].pk}
    assert removed == {"runs": 7, "successes": 5, "failures": 0}


def test_a_poll_gmail_refuses_is_a_failed_run_and_an_outage_only_postpones(mirrored, emulator):
    user, _ = mirrored()
    emulator.script_fault(r"/history$", count=1, status=400, reason="invalidArgument")
    sync.run_inline([sync.Step("poll", user.pk)])
    failed = SyncProgress.objects.get(user=user, sync_type="incremental")
    assert failed.status == "failed"
    assert "Gmail refused a request" in failed.error_message

    emulator.script_fault(r"/history$", seconds=30, status=503)
    sync.run_inline([sync.Step("poll", user.pk)])
    emulator.clear_faults()
    assert SyncProgress.objects.filter(user=user, sync_type="incremental").count() == 1
    user.refresh_from_db()
    assert user.sync_claimed_at is None
    assert user.next_sync_at < timezone.now() + dt.timedelta(minutes=2)


def test_clean_up_hands_what_is_left_to_a_task_that_goes_on_where_it_stopped(
    user_factory, settings, monkeypatch
):
    settings.MAILSYNC_KEEP_FINISHED_RUNS_DAYS = 30
    monkeypatch.setattr(maintenance, "CLEAN_UP_CHUNK", 2)
    old = timezone.now() - dt.timedelta(days=40)
    user = user_factory()
    runs = [
        SyncProgress.objects.create(user=user, sync_type="incremental", status="completed")
        for _ in range(7)
    ]
    SyncProgress.objects.filter(pk__in=[r.pk for r in runs]).update(started_at=old)

    class Clock:  # each look at the clock is a second later: the budget lasts two chunks
        now = 0.0

        def monotonic(self) -> float:
            self.now += 1.0
            return self.now

    monkeypatch.setattr(maintenance, "time", Clock())
    first = maintenance.clean_up(budget_s=2.5)

    (task,) = OrmQ.objects.all()
    cursor = task.task["args"][0]
    assert first["runs"] == 4
    assert cursor == runs[3].pk
    monkeypatch.undo()
    settings.MAILSYNC_KEEP_FINISHED_RUNS_DAYS = 30
    second = maintenance.clean_up(after_run=cursor)
    assert second["runs"] == 2
    assert list(SyncProgress.objects.values_list("pk", flat=True)) == [runs[-1].pk]
