"""The console's front page links the task queue."""

from __future__ import annotations

import pytest
from django.urls import reverse

pytestmark = pytest.mark.django_db


def test_index_links_the_task_queue(admin_client):
    html = admin_client.get(reverse("admin:index")).content.decode()

    assert "Gmail mirror — operator console" in html
    for name in ("ormq", "failure", "schedule", "success"):
        assert f'href="{reverse(f"admin:django_q_{name}_changelist")}"' in html
    assert reverse("admin:mailsync_syncprogress_changelist") + "?status__exact=failed" in html
