"""`manage.py sync_user`: enqueue, follow with --wait, run --inline, exit codes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from mailsync.models import SyncProgress
from tests.cluster import ROOT, cluster_env, sync_user_process, wait_for
from tests.gmail_fixtures import assert_exact_mirror


@pytest.mark.django_db
def test_without_a_cluster_it_enqueues_and_returns(connected_mailbox, capsys):
    user, _ = connected_mailbox(count=5)
    call_command("sync_user", str(user.pk))
    out = capsys.readouterr().out
    run = SyncProgress.objects.get(user=user)
    assert f"First sync (run {run.pk}, initial) for {user.email}: starting" in out
    assert run.status == "pending"


@pytest.mark.django_db
def test_no_flag_chooses_incremental_once_the_initial_sync_is_done(connected_mailbox, capsys):
    user, _ = connected_mailbox(count=20)
    call_command("sync_user", user.email, "--inline")
    call_command("sync_user", user.email, "--inline")
    out = capsys.readouterr().out
    assert "Update (run " in out
    assert ", incremental)" in out
    assert SyncProgress.objects.get(user=user, sync_type="incremental").status == "completed"


@pytest.mark.django_db
def test_labels_only(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=5)
    call_command("sync_user", user.email, "--labels", "--inline")
    assert user.labels.count() == len(emulator.snapshot(user.email)["labels"])


@pytest.mark.django_db
def test_a_failed_run_is_an_error_with_its_message(connected_mailbox, emulator):
    user, mailbox = connected_mailbox(count=5)
    emulator.revoke_refresh_token(mailbox.refresh_token)
    emulator.config.token_lifetime_s = 0
    from accounts.models import GoogleToken

    GoogleToken.objects.filter(account__user=user).update(access_token="revoked-too")
    with pytest.raises(CommandError, match="sign in with Google again"):
        call_command("sync_user", user.email, "--full", "--inline")


@pytest.mark.django_db
def test_unknown_user():
    with pytest.raises(CommandError, match="no user"):
        call_command("sync_user", "nobody@example.com")


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_wait_follows_the_run_to_the_end(connected_mailbox, emulator, clusters):
    user, _ = connected_mailbox(count=600)
    env = cluster_env(emulator)
    clusters.start(env)
    result = sync_user_process(env, user.email, "--full", "--wait")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "600/600 (100%)" in result.stdout
    assert "completed: 600 messages, 600 downloaded from Gmail." in result.stdout
    assert "First sync" in result.stdout
    figures = [int(f) for f in re.findall(r"\((\d+)%\)", result.stdout)]
    assert figures == sorted(figures), figures  # one figure, never going back
    assert_exact_mirror(user, emulator.snapshot(user.email))


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_wait_exits_1_when_the_run_fails(connected_mailbox, emulator, clusters):
    user, mailbox = connected_mailbox(count=50)
    emulator.revoke_refresh_token(mailbox.refresh_token)
    from accounts.models import GoogleToken

    GoogleToken.objects.filter(account__user=user).update(access_token="revoked-too")
    env = cluster_env(emulator)
    clusters.start(env)
    result = sync_user_process(env, user.email, "--full", "--wait")
    assert result.returncode == 1
    assert "sign in with Google again" in result.stderr


@pytest.mark.django_db
def test_an_incremental_run_says_what_it_changed(connected_mailbox, emulator, capsys):
    user, _ = connected_mailbox(count=40)
    call_command("sync_user", user.email, "--inline")
    for _ in range(3):
        emulator.insert_message(user.email)
    victim = next(iter(emulator.snapshot(user.email)["messages"]))
    emulator.delete_message(user.email, victim)
    call_command("sync_user", user.email, "--incremental", "--inline")
    out = capsys.readouterr().out
    assert "completed: 3 added, 1 deleted, 0 relabelled" in out


@pytest.mark.django_db
def test_health_check_from_the_command_line(connected_mailbox, emulator, capsys):
    from mailsync.models import EmailMessage

    user, _ = connected_mailbox(count=30)
    call_command("sync_user", user.email, "--inline")
    EmailMessage.objects.filter(user=user).order_by("pk").first().delete()  # drift
    call_command("sync_user", user.email, "--health-check", "--inline")
    out = capsys.readouterr().out
    assert re.search(r"Run \d+ \(Health check\) completed: 1 added", out), out
    assert_exact_mirror(user, emulator.snapshot(user.email))


@pytest.mark.django_db(transaction=True)
def test_wait_without_a_worker_says_so(connected_mailbox, emulator, tmp_path):
    user, _ = connected_mailbox(count=5)
    env = cluster_env(emulator)
    errors = tmp_path / "stderr.log"
    with errors.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "sync_user", user.email, "--wait", "--patience", "1"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        # --patience 1: it says so after a second of waiting, and goes on waiting. The
        # bound is for a hang only: starting Django took more than 6 s on a slow machine.
        wait_for(lambda: "is qcluster running?" in errors.read_text(), 60, "the warning")
        still_waiting = process.poll() is None
    finally:
        process.kill()
        process.wait()
    stderr = errors.read_text()
    assert "No worker has picked this up in" in stderr
    assert "is qcluster running?" in stderr
    assert still_waiting, "the command must go on waiting for a worker after saying so"
