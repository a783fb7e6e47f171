"""Gmail push through a live server: the emulator plays Pub/Sub (its OIDC tokens, its
certs); a real qcluster does the work."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_q.models import OrmQ

from gmail_emulator.oidc import Signer, push_claims
from mailsync import sync
from mailsync.models import EmailMessage, SyncProgress
from tests.cluster import cluster_env, wait_for
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()
TOPIC = "projects/test/topics/gmail"


@pytest.fixture
def push_settings(gmail_settings, emulator, live_server):
    """The app verifies tokens against the emulator's certs; the emulator pushes to the
    live server with its own tokens (aud = the push URL, as Pub/Sub's default)."""
    url = live_server.url + "/gmail/push/"
    gmail_settings.GMAIL_PUSH_TOPIC = TOPIC
    gmail_settings.GMAIL_PUSH_AUDIENCE = url
    gmail_settings.GMAIL_PUSH_SERVICE_ACCOUNT = emulator.config.push_service_account
    gmail_settings.GMAIL_PUSH_CERTS_URL = emulator.base_url + "oauth2/v1/certs"
    emulator.config.push_url = url
    return url


def push_env(emulator, url: str, **overrides: str) -> dict[str, str]:
    return cluster_env(
        emulator,
        GMAIL_PUSH_TOPIC=TOPIC,
        GMAIL_PUSH_AUDIENCE=url,
        MAILSYNC_INCREMENTAL_INTERVAL_MINUTES="1000",
        **overrides,
    )


def mirrored(connected_mailbox, count: int = 80):
    user, mailbox = connected_mailbox(count=count)
    run = sync.run_until_finished(sync.start_initial_sync(user))
    assert run.status == "completed", run.error_message
    user.refresh_from_db()
    return user, mailbox


def deliver(url: str, email: str, history_id: int, token: str | None) -> int:
    data = base64.b64encode(
        json.dumps({"emailAddress": email, "historyId": history_id}).encode()
    ).decode()
    body = {"message": {"data": data, "messageId": str(history_id)}, "subscription": "s"}
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_pushes_without_a_valid_token_are_refused_and_start_nothing(
    connected_mailbox, emulator, push_settings
):
    user, _ = mirrored(connected_mailbox)
    emulator.insert_message(user.email)
    latest = int(emulator.snapshot(user.email)["historyId"])
    queued, runs = OrmQ.objects.count(), SyncProgress.objects.count()
    valid = emulator.push_token(push_settings)
    head, claims, signature = valid.split(".")
    forged_signature = signature[:-6] + ("AAAAAA" if not signature.endswith("AAAAAA") else "BBBBBB")
    other_key = Signer().sign(push_claims(push_settings, emulator.config.push_service_account))

    refused = {
        "no token": deliver(push_settings, user.email, latest, None),
        "not bearer": deliver(push_settings, user.email, latest, ""),
        "wrong audience": deliver(
            push_settings, user.email, latest, emulator.push_token(audience="https://evil/")
        ),
        "wrong service account": deliver(
            push_settings,
            user.email,
            latest,
            emulator.push_token(push_settings, service_account="x@evil.iam.gserviceaccount.com"),
        ),
        "bad signature": deliver(
            push_settings, user.email, latest, f"{head}.{claims}.{forged_signature}"
        ),
        "another key": deliver(push_settings, user.email, latest, other_key),
    }

    assert refused == {
        "no token": 401,
        "not bearer": 401,
        "wrong audience": 403,
        "wrong service account": 403,
        "bad signature": 403,
        "another key": 403,
    }
    assert (OrmQ.objects.count(), SyncProgress.objects.count()) == (queued, runs)
    user.refresh_from_db()
    assert user.push_history_id is None
    assert user.sync_claimed_at is None
    # The same delivery with the emulator's valid token is accepted and starts a poll.
    assert deliver(push_settings, user.email, latest, valid) == 204
    assert OrmQ.objects.count() == queued + 1


def test_valid_pushes_are_acknowledged_without_calling_gmail(
    connected_mailbox, emulator, push_settings
):
    user, _ = mirrored(connected_mailbox)
    token = emulator.push_token(push_settings)
    queued = OrmQ.objects.count()
    emulator.reset_stats()
    known = int(user.gmail_history_id)
    assert deliver(push_settings, "nobody@example.com", known + 5, token) == 204
    assert deliver(push_settings, user.email, known, token) == 204  # already mirrored
    assert deliver(push_settings, user.email, known + 3, token) == 204
    assert deliver(push_settings, user.email, known + 3, token) == 204  # redelivered
    assert deliver(push_settings, user.email, known + 2, token) == 204  # older
    assert not [m for m in emulator.stats()["by_method"] if m.startswith("gmail.")]
    # The certificates are cached: at most one fetch for five deliveries.
    assert emulator.stats()["by_method"].get("oauth2.certs", 0) <= 1
    assert OrmQ.objects.count() == queued + 1
    user.refresh_from_db()
    assert user.push_history_id == known + 3


@pytest.mark.slow
def test_a_push_brings_new_mail_within_seconds(
    connected_mailbox, emulator, push_settings, clusters
):
    user, mailbox = mirrored(connected_mailbox)
    sync.run_inline([sync.Step("watch", user.pk)])
    user.refresh_from_db()
    assert user.push_state == "on"
    assert mailbox.watch is not None
    OrmQ.objects.all().delete()
    cluster = clusters.start(push_env(emulator, push_settings))
    _cluster_is_taking_tasks(cluster)

    new_id = emulator.insert_message(user.email)
    inserted = time.monotonic()
    arrived = EmailMessage.objects.filter(user=user, gmail_id=new_id, internal_date__isnull=False)
    wait_for(arrived.exists, 10, "the pushed message", [cluster])

    assert time.monotonic() - inserted < 10
    run = SyncProgress.objects.get(user=user, sync_type="incremental")
    wait_for(
        lambda: (
            not SyncProgress.objects.filter(
                pk=run.pk, status__in=["pending", "in_progress"]
            ).exists()
        ),
        20,
        "the run",
        [cluster],
    )
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert emulator.notifier.sent >= 1


@pytest.mark.slow
def test_fifty_pushes_in_a_second_start_one_incremental(
    connected_mailbox, emulator, push_settings, clusters
):
    user, _ = mirrored(connected_mailbox)
    emulator.config.push_url = None  # only the deliveries below
    token = emulator.push_token(push_settings)
    OrmQ.objects.all().delete()
    cluster = clusters.start(push_env(emulator, push_settings))
    _cluster_is_taking_tasks(cluster)
    emulator.reset_stats()

    # 50 new messages, each with the notification Gmail would send for it...
    history_ids = []
    for _ in range(50):
        emulator.insert_message(user.email)
        history_ids.append(int(emulator.snapshot(user.email)["historyId"]))
    # ...delivered within a second, in any order, from many connections (as Pub/Sub).
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:
        statuses = set(
            pool.map(lambda h: deliver(push_settings, user.email, h, token), history_ids)
        )
    assert statuses == {204}
    # A burst: the bound only says the deliveries overlapped the sync they start (it
    # was 1.5 s; a machine running ten times slower than usual took 2.6 s).
    assert time.monotonic() - started < 10

    def settled() -> bool:
        user.refresh_from_db()
        busy = SyncProgress.objects.filter(
            user=user, status__in=["pending", "in_progress"]
        ).exists()
        return not busy and user.sync_claimed_at is None and not OrmQ.objects.exists()

    wait_for(settled, 60, "the pushes to be handled", [cluster])
    runs = SyncProgress.objects.filter(user=user, sync_type="incremental")
    # One incremental, and at most one more pass for pushes that outran it.
    assert_exact_mirror(user, emulator.snapshot(user.email))
    assert 1 <= runs.count() <= 2, list(runs.values("status", "num_added"))
    assert emulator.stats()["by_method"]["gmail.users.history.list"] <= 8
    # (The runs' num_added may sum to less than 50: a thread fetched whole by the first
    # run can bring a message the second run's history then finds already mirrored.)


def _cluster_is_taking_tasks(cluster) -> None:
    """Wait until the cluster consumes the queue (a started cluster takes a few seconds)."""
    from django_q.tasks import async_task

    async_task("math.floor", 1.5)
    wait_for(lambda: not OrmQ.objects.exists(), 60, "the cluster to start", [cluster])
    assert timezone.now()
