"""Google's token endpoint fails while real clusters sync: a hiccup, not a revocation."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from accounts.models import GoogleToken
from mailsync import sync
from tests.cluster import cluster_env
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_a_token_endpoint_outage_does_not_disconnect_the_user(
    connected_mailbox, emulator, clusters, command, schedules
):
    user, _ = connected_mailbox(count=150)
    assert sync.run_until_finished(sync.start_initial_sync(user)).status == "completed"
    new = [emulator.insert_message(user.email) for _ in range(40)]
    GoogleToken.objects.filter(account__user=user).update(
        access_token="long-expired", expires_at=timezone.now() - dt.timedelta(hours=1)
    )
    # Three 503s, then a connection dropped without an answer, then it recovers.
    emulator.script_fault("^/token$", count=3, status=503)
    emulator.script_fault("^/token$", count=2, status=0)
    env = cluster_env(emulator, MAILSYNC_OUTAGE_RETRY_SECONDS="1")
    clusters.start(env)

    follower = command(env, "sync_user", user.email, "--incremental", "--wait")

    assert follower.wait(timeout=180) == 0, follower.stdout[-2000:] + follower.stderr[-2000:]
    assert "completed: 40 added" in follower.stdout
    user.refresh_from_db()
    assert user.gmail_auth_error == ""  # never shown "sign in again"
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert all(emulator.stats()["fetches"].get(message_id) == 1 for message_id in new)
    # The endpoint really failed five times before it answered.
    assert emulator.stats()["by_method"]["oauth2.token"] >= 6
