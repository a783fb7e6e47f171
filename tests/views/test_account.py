"""The account page (issue 14): disconnect Google, delete the account and its data.

Google is the emulator over HTTP: the push watch, the revocation and a new sign-in
are real. Deletion runs as the Django-Q2 task function, here in this process."""

from __future__ import annotations

import pytest
import requests
from django.contrib.auth import SESSION_KEY, get_user_model
from django.urls import reverse
from django_q.models import OrmQ

from accounts import deletion, tasks
from accounts.models import GoogleToken
from mailsync import gmail, sync
from mailsync.models import EmailMessage, Label, SyncProgress
from mailsync.status import needs_reauth
from mailsync.tasks import run_stage

from .google_sign_in import sign_in_with_google

pytestmark = pytest.mark.django_db

ACCOUNT = reverse("account_settings")
DISCONNECT = reverse("account_disconnect_google")
DELETE = reverse("account_delete")
User = get_user_model()


@pytest.fixture
def synced(google_at_emulator, client):
    """Sign in as `email` through Google and mirror the mailbox inline."""

    def make(email: str, count: int = 12):
        mailbox = google_at_emulator.add_mailbox(email, count=count)
        client.logout()
        sign_in_with_google(client, email)
        user = User.objects.get(email=email)
        sync.run_inline(sync.resume_steps(sync.active_run(user.pk, "initial")))
        user.refresh_from_db()
        assert user.initial_sync_completed
        return user, mailbox

    return make


def grant_refused(emulator, refresh_token: str) -> bool:
    """Whether Google's token endpoint now answers invalid_grant for this token."""
    answer = requests.post(
        emulator.base_url + "token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": emulator.client_id,
            "client_secret": emulator.client_secret,
        },
        timeout=10,
    )
    return answer.status_code == 400 and answer.json()["error"] == "invalid_grant"


def queued_deletions() -> int:
    return sum(1 for task in OrmQ.objects.all() if task.func() == "accounts.tasks.delete_user_data")


def test_the_page_needs_a_sign_in_and_is_linked_from_the_header(client, google_user):
    assert client.get(ACCOUNT)["Location"].startswith(reverse("account_login"))
    client.force_login(google_user(email="erin@example.com"))

    page = client.get(ACCOUNT).content.decode()

    assert 'id="google-status" data-connected="true"' in page
    assert "erin@example.com" in page
    assert f'href="{ACCOUNT}" id="account-link"' in client.get("/").content.decode()
    assert f'href="{DELETE}"' in page


def test_disconnect_keeping_the_mirror_then_sign_in_again_resumes(
    client, synced, google_at_emulator
):
    user, _mailbox = synced("erin@example.com")
    other, _ = synced("olga@example.com", count=5)
    client.logout()
    sign_in_with_google(client, "erin@example.com")
    gmail.GmailClient(user.pk).watch("projects/p/topics/mail")
    assert google_at_emulator.mailbox(user.email).watch is not None
    running = sync.start_incremental_sync(user)
    refresh = GoogleToken.objects.get(account__user=user).refresh_token
    kept = EmailMessage.objects.filter(user=user).count()

    response = client.post(DISCONNECT, {"mirror": "keep"})

    assert response.status_code == 302
    running.refresh_from_db()
    assert running.status == "failed"
    assert "Disconnected from Google by the user" in running.error_message
    assert google_at_emulator.mailbox(user.email).watch is None  # users.stop
    assert grant_refused(google_at_emulator, refresh)  # revoked at Google
    assert not GoogleToken.objects.filter(account__user=user).exists()
    user.refresh_from_db()
    assert needs_reauth(user)
    assert EmailMessage.objects.filter(user=user).count() == kept
    assert 'data-connected="false"' in client.get(ACCOUNT).content.decode()
    # The other user is untouched.
    assert GoogleToken.objects.filter(account__user=other).exists()
    assert not needs_reauth(other)

    sign_in_with_google(client, "erin@example.com")

    user.refresh_from_db()
    assert not needs_reauth(user)
    resumed = sync.active_runs(user).get()
    assert resumed.sync_type == "incremental"  # the kept mirror is brought up to date
    sync.run_inline(sync.resume_steps(resumed))
    resumed.refresh_from_db()
    assert resumed.status == "completed", resumed.error_message
    assert User.objects.filter(email="erin@example.com").count() == 1


def test_disconnect_deleting_the_mirror(client, synced, django_capture_on_commit_callbacks):
    user, _ = synced("erin@example.com")
    other, _ = synced("olga@example.com", count=5)
    client.logout()
    sign_in_with_google(client, "erin@example.com")
    others = EmailMessage.objects.filter(user=other).count()

    with django_capture_on_commit_callbacks(execute=True):
        client.post(DISCONNECT, {"mirror": "delete"})

    user.refresh_from_db()
    assert user.data_deletion == "mirror"
    assert not user.initial_sync_completed
    assert user.gmail_history_id is None
    assert queued_deletions() == 1
    tasks.delete_user_data(user.pk)
    assert not EmailMessage.objects.filter(user=user).exists()
    assert not Label.objects.filter(user=user).exists()
    user.refresh_from_db()
    assert user.data_deletion == ""
    assert user.is_active
    assert EmailMessage.objects.filter(user=other).count() == others
    # Signing in again starts a new full sync.
    sign_in_with_google(client, "erin@example.com")
    assert sync.active_runs(user).get().sync_type == "initial"


def test_signing_in_while_the_mirror_is_deleted_waits_for_the_deletion(client, synced):
    user, _ = synced("erin@example.com")
    client.post(DISCONNECT, {"mirror": "delete"})

    sign_in_with_google(client, "erin@example.com")

    assert not sync.active_runs(user).exists()  # it would download what is being deleted
    tasks.delete_user_data(user.pk)
    assert sync.active_runs(user).get().sync_type == "initial"


def test_disconnect_needs_a_choice_and_a_post(client, google_user):
    user = google_user()
    client.force_login(user)

    assert client.get(DISCONNECT).status_code == 405
    client.post(DISCONNECT, {})
    assert GoogleToken.objects.filter(account__user=user).exists()


def test_delete_account_asks_then_signs_out_and_deletes_everything_in_the_background(
    client, synced, google_at_emulator, django_capture_on_commit_callbacks
):
    user, _ = synced("erin@example.com")
    other, _ = synced("olga@example.com", count=5)
    client.logout()
    sign_in_with_google(client, "erin@example.com")
    refresh = GoogleToken.objects.get(account__user=user).refresh_token
    others = (
        EmailMessage.objects.filter(user=other).count(),
        Label.objects.filter(user=other).count(),
    )

    confirm = client.get(DELETE)
    assert confirm.status_code == 200
    assert 'id="confirm-delete-account"' in confirm.content.decode()
    assert User.objects.filter(pk=user.pk, is_active=True).exists()

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(DELETE)

    assert response["Location"] == reverse("account_login")
    assert SESSION_KEY not in client.session  # signed out at once
    assert client.get(ACCOUNT).status_code == 302
    user.refresh_from_db()
    assert not user.is_active
    assert user.data_deletion == "account"
    assert queued_deletions() == 1
    client.force_login(user)  # an inactive user's session is no session
    assert client.get(ACCOUNT).status_code == 302

    tasks.delete_user_data(user.pk)

    assert not User.objects.filter(pk=user.pk).exists()
    assert not EmailMessage.objects.filter(user_id=user.pk).exists()
    assert not SyncProgress.objects.filter(user_id=user.pk).exists()
    assert grant_refused(google_at_emulator, refresh)  # revoked at Google
    assert (
        EmailMessage.objects.filter(user=other).count(),
        Label.objects.filter(user=other).count(),
    ) == others
    assert GoogleToken.objects.filter(account__user=other).exists()


def test_deletion_goes_in_bounded_chunks_messages_first(
    google_user, message_factory, label_factory, run_factory
):
    user, other = google_user(), google_user()
    label = label_factory(user, "Work")
    for _ in range(7):
        message_factory(user, labels=[label])
    message_factory(other)
    run_factory(user, status="completed")
    GoogleToken.objects.filter(account__user=user).delete()  # disconnected before
    deletion.request_account_deletion(user)

    remaining = []
    while deletion.delete_chunk(user.pk, chunk_size=3):
        remaining.append(
            (
                EmailMessage.objects.filter(user_id=user.pk).count(),
                User.objects.filter(pk=user.pk).exists(),
            )
        )

    assert remaining == [(4, True), (1, True), (0, True)]  # messages first, the user last
    assert not User.objects.filter(pk=user.pk).exists()
    assert EmailMessage.objects.filter(user=other).count() == 1


def test_a_deletion_task_running_out_of_time_hands_over_to_a_new_task(google_user, message_factory):
    user = google_user()
    for _ in range(3):
        message_factory(user)
    GoogleToken.objects.filter(account__user=user).delete()
    deletion.request_account_deletion(user)

    assert deletion.delete_for_a_while(user.pk, budget_s=0) is True
    assert User.objects.filter(pk=user.pk).exists()
    assert tasks.resume_data_deletions() == 1  # the schedule picks up a lost task too
    while deletion.delete_for_a_while(user.pk, budget_s=0):
        pass
    assert not User.objects.filter(pk=user.pk).exists()


def test_tasks_of_a_deleted_or_deactivated_user_end_quietly(google_user, caplog):
    user = google_user()
    run = sync.start_initial_sync(user)
    User.objects.filter(pk=user.pk).update(is_active=False)

    run_stage("begin_initial_sync", user.pk, run.pk)
    User.objects.filter(pk=user.pk).delete()
    run_stage("begin_initial_sync", user.pk, run.pk)
    run_stage("fetch_batch", user.pk, 0)

    assert "skipped" in caplog.text
