"""The Gmail emulator wired into Django settings, and the mirror comparison."""

from __future__ import annotations

import base64
import email
import json
import urllib.request
from email import policy

import pytest

from accounts.google import connect_google_account
from gmail_emulator import Emulator, EmulatorConfig
from mailsync.models import EmailMessage, Label, MessageLabel

# Unstable mode in tests: every quirk of real Gmail on (docs/emulator.md), with the
# history quirks short so a test waits well under a second for them to pass.
UNSTABLE_HISTORY_LAG_S = 0.3
UNSTABLE_FRESH_HISTORY_404_S = 0.6


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "unstable_too: run the test again with the emulator in --unstable mode"
    )


def pytest_generate_tests(metafunc) -> None:
    # Tests marked `unstable_too` run twice: against the kind emulator and against the
    # emulator with real Gmail's quirks on.
    if metafunc.definition.get_closest_marker("unstable_too"):
        metafunc.parametrize("gmail_mode", ["stable", "unstable"], indirect=True)


@pytest.fixture
def gmail_mode(request) -> str:
    return getattr(request, "param", "stable")


@pytest.fixture
def unstable(gmail_mode) -> bool:
    return gmail_mode == "unstable"


@pytest.fixture
def emulator_config(unstable) -> EmulatorConfig:
    # Tests are not about quota unless they say so: a budget far above Google's keeps
    # them fast; the app is told the same budget (see gmail_settings).
    if unstable:
        # The per-user concurrency limit stays Gmail's (25): the app must live with it.
        return EmulatorConfig(
            quota_user_per_minute=600_000,
            unstable=True,
            history_lag_s=UNSTABLE_HISTORY_LAG_S,
            fresh_history_404_s=UNSTABLE_FRESH_HISTORY_404_S,
        )
    return EmulatorConfig(quota_user_per_minute=600_000, concurrent_requests_per_user=1000)


def let_history_settle(emulator) -> None:
    """Wait until Gmail shows every history record and fresh ids stop 404ing (unstable
    mode; nothing to wait for in the stable one)."""
    import time

    cfg = emulator.config
    wait = max(cfg.history_lag_s, cfg.fresh_history_404_s)
    if wait:
        time.sleep(wait + 0.1)


@pytest.fixture
def emulator(emulator_config):
    emu = Emulator(emulator_config)
    with emu.serve():
        yield emu


@pytest.fixture
def gmail_settings(settings, emulator):
    """Point every Google URL of the app at the emulator."""
    settings.GMAIL_EMULATOR_URL = emulator.base_url
    settings.GOOGLE_API_ROOT = emulator.base_url
    settings.GOOGLE_TOKEN_URL = emulator.base_url + "token"
    settings.GOOGLE_USERINFO_URL = emulator.base_url + "oauth2/v2/userinfo"
    settings.GOOGLE_REVOKE_URL = emulator.base_url + "revoke"
    settings.GOOGLE_CLIENT_ID = emulator.client_id
    settings.GOOGLE_CLIENT_SECRET = emulator.client_secret
    settings.MAILSYNC_QUOTA_USER_PER_MINUTE = emulator.config.quota_user_per_minute
    settings.MAILSYNC_QUOTA_PROJECT_PER_MINUTE = emulator.config.quota_project_per_minute
    return settings


@pytest.fixture
def connected_mailbox(gmail_settings, emulator):
    """Make a generated mailbox and a user connected to it, as sign-in would."""

    def make(email: str = "alice@example.com", count: int = 200):
        mailbox = emulator.add_mailbox(email, count=count)
        user, _ = connect_google_account(email, mailbox.refresh_token, mailbox.access_token)
        return user, mailbox

    return make


def attachment_bytes(emulator, email_address: str, gmail_id: str, filename: str) -> bytes:
    """An attachment as Gmail has it: the message fetched raw over HTTP and read with the
    standard library, not with our parser."""
    token = emulator.issue_access_token(email_address)
    request = urllib.request.Request(
        f"{emulator.base_url}gmail/v1/users/me/messages/{gmail_id}?format=raw",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = json.loads(response.read())["raw"]
    message = email.message_from_bytes(
        base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)), policy=policy.default
    )
    return next(
        part.get_payload(decode=True) for part in message.walk() if part.get_filename() == filename
    )


def local_mirror(user) -> dict:
    """The database's view in the emulator snapshot's shape."""
    labels_of: dict[str, list[str]] = {}
    for message_id, label_id in MessageLabel.objects.filter(message__user=user).values_list(
        "message__gmail_id", "label__gmail_id"
    ):
        labels_of.setdefault(message_id, []).append(label_id)
    messages = {}
    for gmail_id, thread_id, internal_date in EmailMessage.objects.filter(user=user).values_list(
        "gmail_id", "thread_id", "internal_date"
    ):
        messages[gmail_id] = {
            "threadId": thread_id,
            "labelIds": sorted(labels_of.get(gmail_id, [])),
            "internalDate": (
                str(round(internal_date.timestamp() * 1000)) if internal_date else None
            ),
        }
    labels = sorted(
        (gid, name, kind)
        # Labels Gmail does not list are not in the snapshot's `labels` either; messages'
        # labelIds above include them.
        for gid, name, kind in Label.objects.filter(user=user, not_listed=False).values_list(
            "gmail_id", "name", "type"
        )
    )
    return {"messages": messages, "labels": labels}


def assert_exact_mirror(user, snapshot: dict) -> None:
    local = local_mirror(user)
    remote_messages = {
        mid: {**m, "labelIds": sorted(m["labelIds"])} for mid, m in snapshot["messages"].items()
    }
    missing = remote_messages.keys() - local["messages"].keys()
    extra = local["messages"].keys() - remote_messages.keys()
    assert not missing, f"{len(missing)} messages missing, e.g. {sorted(missing)[:3]}"
    assert not extra, f"{len(extra)} messages that Gmail does not have, e.g. {sorted(extra)[:3]}"
    wrong = [mid for mid in remote_messages if remote_messages[mid] != local["messages"][mid]]
    assert not wrong, (
        f"{len(wrong)} messages differ, e.g. {wrong[0]}: "
        f"gmail {remote_messages[wrong[0]]} local {local['messages'][wrong[0]]}"
    )
    remote_labels = sorted((lb["id"], lb["name"], lb["type"]) for lb in snapshot["labels"])
    assert local["labels"] == remote_labels


@pytest.fixture
def clusters():
    """Start qcluster processes with `clusters.start(env)`; all are stopped afterwards."""
    from tests.cluster import Cluster

    started: list[Cluster] = []

    class Starter(list):
        def start(self, env: dict[str, str]) -> Cluster:
            cluster = Cluster(env)
            started.append(cluster)
            return cluster

    yield Starter()
    for cluster in started:
        cluster.close()


def list_everything(user, run=None, fetch_chains: bool = True):
    """Start a full sync (or take `run`) and run it until its listing is complete,
    fetching nothing: returns the run and the steps that carry it on (the check of
    what the listing did not show, and, with `fetch_chains`, one fetch chain per
    batch slot, which those steps hold)."""
    from mailsync import sync
    from mailsync.models import BatchSlot

    run = run or sync.start_initial_sync(user)
    queue, rest = list(sync.resume_steps(run)), []
    while queue:
        step = queue.pop(0)
        if step.stage in ("fetch_batch", "verify_unlisted"):
            rest.append(step)
        else:
            queue.extend(sync.run_step(step))
    run.refresh_from_db()
    assert run.listing_completed, "the listing did not complete"
    # The fetch chains queued along the way are dropped: their slots are free again.
    BatchSlot.objects.filter(user=user).update(leased_until=None)
    verify = [step for step in rest if step.stage == "verify_unlisted"][:1]
    return run, verify + (sync.fill_batch_slots(user.pk) if fetch_chains else [])
