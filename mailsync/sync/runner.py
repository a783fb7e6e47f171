"""Running steps: one at a time (a task), or all that follow, in this process."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable

from .. import gmail
from ..log_format import event
from .batches import fetch_batch
from .incremental import incremental_sync
from .initial import begin_initial_sync, list_page
from .labels import sync_labels
from .resync import begin_health_check, rescan_label_page
from .runs import access_revoked, fail_runs, note_on_runs, worth_retrying_now
from .steps import Step

DAILY_QUOTA_PAUSE_S = 3600.0


def run_inline(steps: Iterable[Step]) -> None:
    """Run steps and everything that follows from them in this process (no cluster)."""
    queue = deque(steps)
    while queue:
        queue.extend(run_step(queue.popleft()))


def run_step(step: Step) -> list[Step]:
    """Run one stage, turning Gmail failures into run states. Returns what follows."""
    try:
        return STAGES[step.stage](step.user_id, *step.args)
    except gmail.AccessRevoked as exc:
        access_revoked(step.user_id, str(exc))
    except gmail.DailyQuotaExhausted as exc:
        from .. import quota

        quota.penalize(step.user_id, DAILY_QUOTA_PAUSE_S)
        note_on_runs(step.user_id, f"Paused: Gmail's daily quota is exhausted ({exc}).")
        event("run.paused", step.user_id, f"daily quota exhausted: {exc}", level=logging.WARNING)
    except gmail.RateLimited as exc:
        if worth_retrying_now(exc):
            return [step]  # the next task waits its turn for the budget
        # A long pause (a daily limit, a long Retry-After): no task spins meanwhile;
        # the watchdog resumes the run from the database afterwards.
        note_on_runs(step.user_id, f"Paused for {exc.retry_after:.0f} s: {exc}", keep=True)
        event(
            "run.paused", step.user_id, f"for {exc.retry_after:.0f} s: {exc}", level=logging.WARNING
        )
    except gmail.PermanentError as exc:
        fail_runs(step.user_id, f"Gmail refused a request: {exc}")
    return []


# --- The registry the tasks and the inline runner use ----------------------------------------------
STAGES: dict[str, Callable[..., list[Step]]] = {
    "begin_initial_sync": begin_initial_sync,
    "sync_labels": sync_labels,
    "list_page": list_page,
    "fetch_batch": fetch_batch,
    "incremental_sync": incremental_sync,
    "rescan_label_page": rescan_label_page,
    "begin_health_check": begin_health_check,
}
