"""The users' console: sync columns, the sync actions and the reset confirmation."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from mailsync.models import SyncProgress

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:accounts_user_changelist")
Status, SyncType = SyncProgress.Status, SyncProgress.SyncType


def _act(admin_client, action: str, users, **extra):
    data = {"action": action, ACTION_CHECKBOX_NAME: [u.pk for u in users], **extra}
    return admin_client.post(CHANGELIST, data, follow=True)


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def _active(sync_type: str) -> set[int]:
    return set(
        SyncProgress.objects.filter(
            sync_type=sync_type, status__in=SyncProgress.ACTIVE_STATUSES
        ).values_list("user_id", flat=True)
    )


def test_changelist_shows_sync_state_and_active_runs_without_n_plus_1(
    admin_client, google_user, run_factory
):
    def page_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert admin_client.get(CHANGELIST).status_code == 200
        return len(queries)

    user = google_user(label_sync_completed=True)
    run_factory(user, status=Status.IN_PROGRESS, num_processed=25, num_total=100)
    few = page_queries()
    for _ in range(5):
        run_factory(google_user(), status=Status.IN_PROGRESS, num_processed=1, num_total=2)

    assert page_queries() == few
    html = admin_client.get(CHANGELIST).content.decode()
    assert 'class="sync-bar"' in html
    assert 'aria-valuenow="25"' in html
    assert "Active runs" in html


def test_initial_sync_queues_idle_users_and_skips_active_ones(
    admin_client, google_user, run_factory
):
    idle1, idle2, busy = google_user(), google_user(), google_user()
    existing = run_factory(busy, sync_type=SyncType.INITIAL, status=Status.IN_PROGRESS)

    response = _act(admin_client, "run_initial_sync", [idle1, idle2, busy])

    assert _messages(response) == ["Initial sync: queued 2 users, skipped 1 already running."]
    assert _active(SyncType.INITIAL) == {idle1.pk, idle2.pk, busy.pk}
    assert SyncProgress.objects.filter(user=busy).get() == existing


def test_incremental_sync_falls_back_to_initial_for_unsynced_users(
    admin_client, google_user, run_factory
):
    def synced_user():
        return google_user(
            initial_sync_completed=True, label_sync_completed=True, gmail_history_id="9"
        )

    synced, busy, resyncing, new = synced_user(), synced_user(), synced_user(), google_user()
    run_factory(busy, sync_type=SyncType.INCREMENTAL, status=Status.PENDING)
    run_factory(resyncing, sync_type=SyncType.INITIAL, status=Status.IN_PROGRESS)

    response = _act(admin_client, "run_incremental_sync", [synced, busy, resyncing, new])

    assert _messages(response) == [
        "Incremental sync: queued 2 users (1 as initial sync: no full sync yet), "
        "skipped 2 already running."
    ]
    assert _active(SyncType.INCREMENTAL) == {synced.pk, busy.pk}
    assert _active(SyncType.INITIAL) == {resyncing.pk, new.pk}
    assert SyncProgress.objects.count() == 4


def test_label_sync(admin_client, google_user, run_factory):
    idle, busy = google_user(), google_user()
    run_factory(busy, sync_type=SyncType.LABELS, status=Status.PENDING)
    run_factory(idle, sync_type=SyncType.INITIAL, status=Status.IN_PROGRESS)  # other kind

    response = _act(admin_client, "run_label_sync", [idle, busy])

    assert _messages(response) == ["Label sync: queued 1 user, skipped 1 already running."]
    assert _active(SyncType.LABELS) == {idle.pk, busy.pk}
    assert SyncProgress.objects.count() == 3


def test_health_check_waits_for_any_other_run(admin_client, google_user, run_factory):
    idle, busy = google_user(), google_user()
    run_factory(busy, sync_type=SyncType.INCREMENTAL, status=Status.IN_PROGRESS)

    response = _act(admin_client, "run_health_check", [idle, busy])

    assert _messages(response) == ["Health check: queued 1 user, skipped 1 already running."]
    assert _active(SyncType.HEALTH) == {idle.pk}


def test_reset_asks_for_confirmation_then_resets(
    admin_client, google_user, run_factory, message_factory
):
    user = google_user(
        initial_sync_completed=True, label_sync_completed=True, gmail_history_id="77"
    )
    message_factory(user)
    run = run_factory(user, sync_type=SyncType.INCREMENTAL, status=Status.IN_PROGRESS)

    response = _act(admin_client, "reset_sync_state", [user])

    assert response.status_code == 200
    assert "admin/accounts/user/reset_sync_confirmation.html" in [
        t.name for t in response.templates
    ]
    html = response.content.decode()
    assert user.email in html
    assert '<input type="hidden" name="post" value="yes">' in html
    assert '<input type="hidden" name="action" value="reset_sync_state">' in html
    user.refresh_from_db()
    assert user.gmail_history_id == "77"  # nothing changed yet

    response = _act(admin_client, "reset_sync_state", [user], post="yes")

    assert "Reset the sync state of 1 user" in _messages(response)[0]
    user.refresh_from_db()
    assert user.gmail_history_id is None
    assert not user.initial_sync_completed
    assert not user.label_sync_completed
    run.refresh_from_db()
    assert run.status == Status.FAILED
    assert user.email_messages.count() == 1
