"""Workers do not keep Django's debug log of every SQL statement."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_q.signals import pre_execute

from mailsync.models import EmailMessage

pytestmark = pytest.mark.django_db


def test_each_task_starts_with_an_empty_query_log(user_factory):
    user = user_factory()
    with CaptureQueriesContext(connection):  # forces the log on, as DEBUG does
        EmailMessage.objects.create(user=user, gmail_id="m1", body_text="x" * 10_000)
        assert len(connection.queries_log) > 0
        pre_execute.send(sender="django_q", func=None, task={})
        assert len(connection.queries_log) == 0
