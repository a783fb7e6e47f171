"""The JSON endpoint the progress page polls, and the status it is built from."""

from __future__ import annotations

import datetime as dt

import pytest
from django.urls import reverse
from django.utils import timezone

from mailsync import sync
from mailsync.models import Label, SyncProgress
from mailsync.status import mailbox_status, run_rate_and_eta

pytestmark = pytest.mark.django_db

STATUS = reverse("mailsync:status")
HOME = reverse("mailsync:home")


def test_anonymous_is_sent_to_sign_in(client):
    response = client.get(STATUS)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("account_login"))


def test_owner_gets_counts_labels_and_fragments(
    client, google_user, label_factory, message_factory, run_factory
):
    user = google_user()
    inbox = label_factory(user, "INBOX", Label.Type.SYSTEM, messages_total=4, messages_unread=2)
    label_factory(user, "Work", background_color="#16a765", text_color="#ffffff")
    for _ in range(3):
        message_factory(user, labels=[inbox])
    message_factory(user, fetched=False)
    run = run_factory(user, status=SyncProgress.Status.IN_PROGRESS, num_processed=3, num_total=4)
    client.force_login(user)

    response = client.get(STATUS)

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    data = response.json()
    assert data["active"] is True
    assert data["stages"]["messages"] == {
        "state": "running",
        "fetched": 3,
        "total": 4,
        "remaining": 1,
        "unavailable": 0,
        "percentage": 75,
    }
    assert data["stages"]["listing"]["listed"] == 4
    assert data["active_run"]["id"] == run.pk
    assert data["active_run"]["percentage"] == 75
    assert [label["name"] for label in data["labels"]] == ["Inbox", "Work"]  # Gmail's own name
    assert data["labels"][0]["messages_unread"] == 2
    assert data["labels"][1]["background_color"] == "#16a765"
    assert data["needs_reauth"] is False
    assert data["last_error"] == ""
    assert set(data["html"]) == {"alerts", "progress", "stages", "labels"}
    assert 'data-percentage="75"' in data["html"]["progress"]
    assert "3 / 4 messages" in data["html"]["progress"]
    assert 'id="stage-messages"' in data["html"]["stages"]
    assert 'data-label-id="INBOX"' in data["html"]["labels"]


def test_another_users_mailbox_does_not_leak(
    client, google_user, label_factory, message_factory, run_factory
):
    alice, bob = google_user(), google_user()
    label_factory(alice, "Alice secret project")
    message_factory(alice)
    message_factory(alice, fetched=False)
    run_factory(alice, status=SyncProgress.Status.FAILED, error_message="alice's failure")
    label_factory(bob, "Bob's label")
    client.force_login(bob)

    data = client.get(STATUS).json()

    assert [label["name"] for label in data["labels"]] == ["Bob's label"]
    assert data["stages"]["messages"]["total"] == 0
    assert data["latest_run"] is None
    assert "Alice" not in str(data)
    assert "alice" not in str(data)


def test_hostile_label_colors_are_dropped(google_user, label_factory):
    user = google_user()
    label_factory(user, "x", background_color="red;x:url(//e)", text_color="#fff")

    label = mailbox_status(user)["labels"][0]

    assert label["background_color"] == ""
    assert label["text_color"] == "#fff"


def test_status_takes_few_queries_whatever_the_mailbox_size(
    google_user, label_factory, message_factory, run_factory, django_assert_num_queries
):
    user = google_user()
    labels = [label_factory(user, f"label {i}") for i in range(10)]
    for i in range(10):
        message_factory(user, labels=labels[:i], fetched=i % 2 == 0)
    for sync_type in SyncProgress.SyncType.values:
        run_factory(user, sync_type=sync_type, status=SyncProgress.Status.COMPLETED)
    run_factory(user, sync_type=SyncProgress.SyncType.INCREMENTAL)

    with django_assert_num_queries(4):
        data = mailbox_status(user)

    assert data["stages"]["messages"]["total"] == 10
    assert data["active_run"]["type"] == "incremental"


def test_incremental_next_due(google_user, settings):
    settings.MAILSYNC_INCREMENTAL_INTERVAL_MINUTES = 5
    last = timezone.now() - dt.timedelta(minutes=2)
    user = google_user(
        initial_sync_completed=True,
        label_sync_completed=True,
        gmail_history_id="100",
        last_incremental_sync_at=last,
    )

    incremental = mailbox_status(user)["stages"]["incremental"]

    assert incremental["state"] == "done"
    assert incremental["last_at"] == last.isoformat()
    assert incremental["next_due_at"] == (last + dt.timedelta(minutes=5)).isoformat()
    assert incremental["next_due_display"].startswith("in ")


def test_the_page_says_whether_push_is_on_and_why_it_failed(client, google_user):
    user = google_user(initial_sync_completed=True, label_sync_completed=True, gmail_history_id="1")
    client.force_login(user)
    assert 'id="incremental-push">off<' in client.get(HOME).content.decode()
    user.push_state, user.push_error = "failed", "Gmail answered 403 forbidden: no topic"
    user.save()
    page = client.get(HOME).content.decode()
    assert 'id="incremental-push">failed: Gmail answered 403 forbidden: no topic<' in page
    user.push_state = "on"
    user.next_sync_at = timezone.now() + dt.timedelta(minutes=60)
    user.save()
    incremental = mailbox_status(user)["stages"]["incremental"]
    assert incremental["push"] == "on"
    assert incremental["next_due_at"] == user.next_sync_at.isoformat()


def test_rate_and_eta_of_an_active_run(google_user, run_factory):
    user = google_user()
    run = run_factory(
        user,
        status=SyncProgress.Status.IN_PROGRESS,
        num_processed=100,
        num_fetched=100,
        num_total=300,
    )
    started = timezone.now() - dt.timedelta(seconds=50)
    SyncProgress.objects.filter(pk=run.pk).update(started_at=started)
    run.refresh_from_db()

    rate, eta = run_rate_and_eta(run, now=started + dt.timedelta(seconds=50))

    assert rate == pytest.approx(2.0)
    assert eta == pytest.approx(100.0)
    active = mailbox_status(user)["active_run"]
    assert active["rate"] == pytest.approx(2.0, rel=0.1)
    assert active["eta_seconds"] == pytest.approx(100, rel=0.1)


def test_finished_run_has_a_rate_but_no_eta(google_user, run_factory):
    run = run_factory(
        google_user(), status=SyncProgress.Status.COMPLETED, num_processed=10, num_fetched=10
    )
    run.completed_at = run.started_at + dt.timedelta(seconds=5)

    assert run_rate_and_eta(run) == (pytest.approx(2.0), None)


def test_revoked_access_is_said_in_plain_words(google_user, run_factory):
    user = google_user(gmail_auth_error="invalid_grant: Token has been expired or revoked.")
    run_factory(
        user,
        status=SyncProgress.Status.FAILED,
        error_message="Google refused access; sign in with Google again to resume. (invalid_grant)",
    )

    data = mailbox_status(user)

    assert data["needs_reauth"] is True
    assert data["last_error"] == "Google refused access: sign in with Google again to resume."
    assert data["latest_run"]["error"] == data["last_error"]


def test_the_rate_counts_downloads_only(google_user, run_factory):
    """A resync of a mirrored mailbox processes thousands of messages in seconds but
    downloads none: no rate, rather than 1900 messages/s."""
    run = run_factory(
        google_user(), status=SyncProgress.Status.IN_PROGRESS, num_processed=3000, num_total=3005
    )
    started = run.started_at
    now = started + dt.timedelta(seconds=2)

    assert run_rate_and_eta(run, now=now) == (None, None)
    run.num_fetched = 5
    assert run_rate_and_eta(run, now=now) == (pytest.approx(2.5), pytest.approx(2.0))


def test_a_starting_first_sync_says_so_without_a_zero_rate(client, google_user, run_factory):
    user = google_user()
    run_factory(user, status=SyncProgress.Status.PENDING)
    client.force_login(user)

    html = client.get(HOME).content.decode()

    assert '<span class="badge running" id="run-title">First sync · starting</span>' in html
    assert "messages/s" not in html
    assert "Pending" not in html
    assert "Initial sync" not in html


def test_a_full_resync_is_called_one(client, google_user, run_factory):
    user = google_user(last_full_sync_at=timezone.now() - dt.timedelta(days=1))
    client.force_login(user)
    run_factory(user, status=SyncProgress.Status.IN_PROGRESS, resync=True, num_fetched=0)

    html = client.get(HOME).content.decode()

    assert "Full resync · running" in html
    assert "First sync" not in html


def test_a_started_full_sync_knows_whether_it_is_a_resync(google_user):
    first = sync.start_initial_sync(google_user())
    again = sync.start_initial_sync(google_user(last_full_sync_at=timezone.now()))

    assert (first.resync, again.resync) == (False, True)


def test_one_progress_figure_while_the_first_sync_lists(
    client, google_user, run_factory, message_factory
):
    """200 of 500 listed ids are fetched, Gmail says the mailbox holds 3000: the page
    shows 200 / 3000 (6 %) and no other total."""
    user = google_user()
    for n in range(500):
        message_factory(user, fetched=n < 200)
    run_factory(user, status=SyncProgress.Status.IN_PROGRESS, num_processed=200, num_total=3000)
    client.force_login(user)

    data = client.get(STATUS).json()

    assert data["progress"] == {
        "done": 200,
        "total": 3000,
        "percentage": 6,
        "state": "running",
        "of_run": True,
    }
    page = "".join(data["html"].values())
    assert "200 / 3000 messages" in page
    assert "/ 500" not in page
    assert "of 500" not in page
    assert "this run" not in page
    assert 'data-percentage="6"' in page


def test_times_say_just_now_instead_of_zero_minutes(google_user, settings):
    settings.MAILSYNC_INCREMENTAL_INTERVAL_MINUTES = 1
    user = google_user(
        initial_sync_completed=True,
        label_sync_completed=True,
        gmail_history_id="7",
        last_incremental_sync_at=timezone.now() - dt.timedelta(seconds=20),
    )

    incremental = mailbox_status(user)["stages"]["incremental"]

    assert incremental["last_at_display"] == "just now"
    assert incremental["next_due_display"] == "in less than a minute"


def test_after_a_reset_the_page_says_what_to_do(client, google_user, message_factory, settings):
    """An operator's "Reset sync state": no "next due now" for an update that cannot
    run, and a clear next step with its button."""
    user = google_user(
        initial_sync_completed=True,
        label_sync_completed=True,
        gmail_history_id="7",
        last_full_sync_at=timezone.now() - dt.timedelta(hours=2),
        last_incremental_sync_at=timezone.now() - dt.timedelta(hours=1),
    )
    message_factory(user)
    sync.reset_sync_state(user)
    user.refresh_from_db()
    client.force_login(user)

    data = client.get(STATUS).json()

    assert data["stages"]["incremental"]["next_due_display"] == "after the next full sync"
    assert data["stages"]["messages"]["state"] == "pending"
    assert data["next_step"].startswith("The mirror needs a full sync")
    assert 'id="next-step-sync"' in data["html"]["alerts"]
    assert "due now" not in "".join(data["html"].values())


def test_nothing_to_do_means_no_next_step(google_user, run_factory):
    synced = google_user(initial_sync_completed=True)
    running = google_user()
    run_factory(running, status=SyncProgress.Status.IN_PROGRESS)

    assert mailbox_status(synced)["next_step"] == ""
    assert mailbox_status(running)["next_step"] == ""
    assert mailbox_status(google_user())["next_step"].startswith("No sync has run yet")
