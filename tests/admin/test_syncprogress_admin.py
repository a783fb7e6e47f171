"""Sync runs in the console: progress at a glance, read-only."""

from __future__ import annotations

import pytest
from django.urls import reverse

from mailsync.models import SyncProgress

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:mailsync_syncprogress_changelist")
Status, SyncType = SyncProgress.Status, SyncProgress.SyncType


def test_changelist_shows_progress_counts_and_error(admin_client, google_user, run_factory):
    user = google_user()
    run_factory(
        user,
        status=Status.IN_PROGRESS,
        num_processed=40,
        num_total=160,
        num_added=3,
        num_deleted=2,
        num_relabelled=1,
    )
    run_factory(
        user,
        sync_type=SyncType.LABELS,
        status=Status.FAILED,
        error_message="<b>boom</b> " + "x" * 200,
    )

    html = admin_client.get(CHANGELIST).content.decode()

    assert 'aria-valuenow="25"' in html
    assert "40 / 160" in html
    assert "+3 -2 ~1" in html
    assert "&lt;b&gt;boom&lt;/b&gt;" in html
    assert "<b>boom</b>" not in html
    assert "x" * 100 not in html  # truncated


def test_filters_by_status_and_type(admin_client, google_user, run_factory):
    user = google_user()
    run_factory(user, sync_type=SyncType.INITIAL, status=Status.FAILED, error_message="first")
    run_factory(user, sync_type=SyncType.LABELS, status=Status.COMPLETED, error_message="second")

    failed = admin_client.get(CHANGELIST, {"status__exact": "failed"}).content.decode()
    labels = admin_client.get(CHANGELIST, {"sync_type__exact": "labels"}).content.decode()

    assert "first" in failed
    assert "second" not in failed
    assert "second" in labels
    assert "first" not in labels


def test_runs_are_read_only(admin_client, google_user, run_factory):
    run = run_factory(google_user(), status=Status.IN_PROGRESS)
    change_url = reverse("admin:mailsync_syncprogress_change", args=[run.pk])

    detail = admin_client.get(change_url)
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content

    assert admin_client.post(change_url, {"status": "completed"}).status_code == 403
    assert admin_client.get(reverse("admin:mailsync_syncprogress_add")).status_code == 403
    delete_url = reverse("admin:mailsync_syncprogress_delete", args=[run.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    run.refresh_from_db()
    assert run.status == Status.IN_PROGRESS


def test_a_run_says_how_many_messages_gmail_could_not_serve(admin_client, django_user_model):
    owner = django_user_model.objects.create_user(username="o", email="o@example.com")
    run = SyncProgress.objects.create(
        user=owner, sync_type="initial", status="completed", num_unavailable=2
    )
    listing = admin_client.get("/admin/mailsync/syncprogress/").content.decode()
    assert "2 messages Gmail could not serve" in listing
    detail = admin_client.get(f"/admin/mailsync/syncprogress/{run.pk}/change/").content.decode()
    assert "Num unavailable" in detail
    assert "admin/mailsync/syncprogress" in reverse("admin:mailsync_syncprogress_changelist")
