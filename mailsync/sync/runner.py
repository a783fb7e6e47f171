"""Running steps: one at a time (a task), or all that follow, in this process."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

from django.utils import timezone

from .. import gmail
from ..log_format import event
from ..models import SyncProgress
from ..workers import current_holder
from .batches import fetch_batch
from .incremental import incremental_sync
from .initial import begin_initial_sync, list_page, verify_unlisted
from .labels import sync_labels
from .resume import resume_steps
from .resync import begin_health_check, rescan_label_page
from .runs import (
    access_revoked,
    fail_runs,
    note_failure,
    note_on_runs,
    resume_at,
    wait_or_resume_later,
    worth_retrying_now,
)
from .steps import Step


def poll(user_id: int, follow_up: int = 0) -> list[Step]:
    from ..polling import poll  # (polling starts runs: imported late)

    return poll(user_id, follow_up)


def watch(user_id: int) -> list[Step]:
    from ..watches import watch

    return watch(user_id)


DAILY_QUOTA_PAUSE_S = 3600.0


def run_inline(steps: Iterable[Step]) -> None:
    """Run steps and everything that follows from them in this process (no cluster)."""
    queue = deque(steps)
    while queue:
        queue.extend(run_step(queue.popleft()))


def run_until_finished(run: SyncProgress, timeout_s: float = 24 * 3600) -> SyncProgress:
    """Carry a run to its end in this process, waiting out Gmail's failures the way
    the watchdog would (`sync_user --inline`, tests). Returns the run, reloaded."""
    deadline = time.monotonic() + timeout_s
    while True:
        run_inline(resume_steps(run))
        run.refresh_from_db()
        if not run.is_active or run.retry_at is None or time.monotonic() > deadline:
            return run
        time.sleep(max(0.0, (run.retry_at - timezone.now()).total_seconds()))
        SyncProgress.objects.filter(pk=run.pk).update(retry_at=None)


def run_step(step: Step) -> list[Step]:
    """Run one stage, turning Gmail failures into run states. Returns what follows."""
    if step.stage in RUN_STAGES:  # (batch chains hold slots instead)
        SyncProgress.objects.filter(pk=step.args[0]).update(holder=current_holder())
    try:
        return STAGES[step.stage](step.user_id, *step.args)
    except gmail.AccessRevoked as exc:
        access_revoked(step.user_id, str(exc))
    except gmail.DailyQuotaExhausted as exc:
        from .. import quota

        quota.penalize(step.user_id, DAILY_QUOTA_PAUSE_S)
        note_on_runs(step.user_id, f"Paused: Gmail's daily quota is exhausted ({exc}).")
        event("run.paused", step.user_id, f"daily quota exhausted: {exc}", level=logging.WARNING)
        _resume_in(step.user_id, DAILY_QUOTA_PAUSE_S)
    except gmail.RateLimited as exc:
        if worth_retrying_now(exc):
            return [step]  # the next task waits its turn for the budget
        # A long pause (a long Retry-After): no task spins meanwhile; the watchdog
        # resumes the run from the database afterwards.
        note_on_runs(step.user_id, f"Paused for {exc.retry_after:.0f} s: {exc}", keep=True)
        event(
            "run.paused", step.user_id, f"for {exc.retry_after:.0f} s: {exc}", level=logging.WARNING
        )
        _resume_in(step.user_id, exc.retry_after)
    except gmail.TransientError as exc:
        # Gmail (or Google's token endpoint) fails as a whole: nothing is lost, the
        # run stays active, says why, and tries again later.
        if wait_or_resume_later(step.user_id, note_failure(step.user_id, exc)):
            return [step]
    except gmail.PermanentError as exc:
        fail_runs(step.user_id, f"Gmail refused a request: {exc}")
    return []


def _resume_in(user_id: int, seconds: float) -> None:
    resume_at(user_id, timezone.now() + dt.timedelta(seconds=seconds))


# --- The registry the tasks and the inline runner use ----------------------------------------------
STAGES: dict[str, Callable[..., list[Step]]] = {
    "begin_initial_sync": begin_initial_sync,
    "sync_labels": sync_labels,
    "list_page": list_page,
    "verify_unlisted": verify_unlisted,
    "fetch_batch": fetch_batch,
    "incremental_sync": incremental_sync,
    "rescan_label_page": rescan_label_page,
    "begin_health_check": begin_health_check,
    "poll": poll,
    "watch": watch,
}
# Stages whose first argument is the run they carry on: the worker running one is the
# run's holder (see mailsync/workers.py).
RUN_STAGES = set(STAGES) - {"fetch_batch", "poll", "watch"}
