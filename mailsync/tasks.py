"""Django-Q2 task functions: thin callers of the sync stages.

Arguments are plain ids and strings (JSON-safe); every task runs one bounded
stage and enqueues the steps it returns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from django import db
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import InterfaceError, OperationalError
from django_q.tasks import async_task

from . import metrics, sync
from .sync.steps import starting_with

log = logging.getLogger(__name__)


# A database restart or failover drops every connection: the step is run again on a
# new one (steps are idempotent) instead of failing and leaving its run to the watchdog.
DATABASE_ATTEMPTS = 4


def run_stage(stage: str, user_id: int, *args) -> None:
    # A task queued before its user was deactivated or deleted ends quietly.
    if not _still_synced(user_id):
        log.info("user %s is deleted or inactive: %s skipped", user_id, stage)
        return
    step = sync.Step(stage, user_id, tuple(args))
    ok = False
    try:
        _run_with_database_retries(step)
        ok = True
    finally:
        metrics.task_ran(stage, ok)


def _run_with_database_retries(step: sync.Step) -> None:
    user_id = step.user_id
    for attempt in range(DATABASE_ATTEMPTS):
        try:
            with starting_with(enqueue_steps):
                steps = sync.run_step(step)
        except (OperationalError, InterfaceError):
            if attempt + 1 == DATABASE_ATTEMPTS:
                raise
            log.warning("%s: the database connection failed; retrying", step, exc_info=True)
            db.connections.close_all()
            time.sleep(2**attempt)
            continue
        except Exception:
            if not _still_synced(user_id):  # deleted while the step ran
                log.info("user %s was deleted during %s: stopped", user_id, step.stage)
                return
            raise
        enqueue_steps(steps)
        return


def _still_synced(user_id: int) -> bool:
    return get_user_model().objects.filter(pk=user_id, is_active=True).exists()


def enqueue_steps(steps: Iterable[sync.Step]) -> None:
    for step in steps:
        options = {"group": step.stage}
        if step.priority and settings.MAILSYNC_PRIORITY_CLUSTER:
            options["cluster"] = settings.MAILSYNC_PRIORITY_CLUSTER
        async_task(
            "mailsync.tasks.run_stage", step.stage, step.user_id, *step.args, q_options=options
        )


def _priority_options(group: str) -> dict:
    options = {"group": group}
    if settings.MAILSYNC_PRIORITY_CLUSTER:
        options["cluster"] = settings.MAILSYNC_PRIORITY_CLUSTER
    return options


# --- Many users' short stages in one task (the dispatcher, the watch renewal) ---------------------
def enqueue_polls(user_ids: list[int]) -> None:
    async_task(
        "mailsync.tasks.run_for_users", "poll", list(user_ids), q_options=_priority_options("poll")
    )


def enqueue_watches(user_ids: list[int]) -> None:
    async_task(
        "mailsync.tasks.run_for_users",
        "watch",
        list(user_ids),
        q_options=_priority_options("watch"),
    )


def run_for_users(stage: str, user_ids: list[int]) -> int:
    """Run a one-call stage (poll, watch) for each user, one after the other; what is
    left when a quarter of the task's time is spent goes to a new task. One user's
    failure is logged and does not stop the others."""
    deadline = time.monotonic() + settings.MAILSYNC_TASK_MAX_SECONDS / 4
    done = 0
    for user_id in user_ids:
        if time.monotonic() > deadline:
            async_task(
                "mailsync.tasks.run_for_users",
                stage,
                list(user_ids[done:]),
                q_options=_priority_options(stage),
            )
            break
        try:
            run_stage(stage, user_id)
        except Exception:
            log.exception("%s of user %s failed", stage, user_id)
        done += 1
    return done


# --- Scheduled maintenance (see mailsync/schedules.py) -----------------------------------------
def dispatch_incremental_syncs() -> int:
    from .maintenance import dispatch_incremental_syncs

    return dispatch_incremental_syncs()


def resume_stalled_runs() -> int:
    from .maintenance import resume_stalled_runs

    return resume_stalled_runs()


def start_health_checks() -> int:
    from .maintenance import start_health_checks

    return start_health_checks()


def renew_watches() -> int:
    from .watches import renew_watches

    return renew_watches()


def clean_up(after_run: int = 0) -> dict:
    from .maintenance import clean_up

    return clean_up(after_run=after_run)
