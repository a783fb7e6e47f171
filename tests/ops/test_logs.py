"""Logs: one line per event with the user and run ids; JSON lines for log shippers."""

from __future__ import annotations

import json
import logging

import pytest

from mailsync.log_format import TaskNoiseFilter
from mailsync.models import SyncProgress
from tests.cluster import cluster_env, sync_user_process


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_json_lines_carry_the_event_user_and_run(connected_mailbox, emulator):
    user, _ = connected_mailbox(count=5)
    env = cluster_env(emulator, LOG_FORMAT="json", LOG_LEVEL="INFO")

    result = sync_user_process(env, user.email, "--labels", "--inline")

    assert result.returncode == 0, result.stderr
    run = SyncProgress.objects.get(user=user, sync_type="labels")
    records = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    events = {r["event"]: r for r in records if "event" in r}
    assert {"run.started", "run.completed"} <= set(events)
    completed = events["run.completed"]
    assert completed["user_id"] == user.pk
    assert completed["run_id"] == run.pk
    assert completed["level"] == "INFO"
    assert completed["logger"] == "mailsync.events"
    assert completed["message"] == f"user {user.pk} run {run.pk}: labels sync completed"
    assert "time" in completed


def _record(message: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord("django-q", level, __file__, 1, message, None, None)


@pytest.mark.parametrize(
    "message",
    [
        "Processed 'mailsync.tasks.run_stage' (alpha-bravo-charlie)",
        "Process-1:2 processing alpha-bravo-charlie 'mailsync.tasks.run_stage' [fetch_batch]",
        "Enqueued [mailsync] 42",
        "Process-1 created task alpha-bravo from schedule [incremental syncs]",
        "Process-1:3 ready for work at 1234",
        "recycled worker Process-1:3",
    ],
)
def test_django_q_per_task_lines_become_debug(message):
    record = _record(message)

    kept = TaskNoiseFilter().filter(record)

    assert record.levelno == logging.DEBUG
    assert kept == logging.getLogger("django-q").isEnabledFor(logging.DEBUG)


@pytest.mark.parametrize(
    ("message", "level"),
    [
        ("Q Cluster mailsync starting.", logging.INFO),
        ("Failed 'mailsync.tasks.run_stage' (x) - boom", logging.ERROR),
        ("reincarnated worker Process-1:2 after timeout", logging.ERROR),
    ],
)
def test_start_stop_and_failures_keep_their_level(message, level):
    record = _record(message, level)

    assert TaskNoiseFilter().filter(record)
    assert record.levelno == level
