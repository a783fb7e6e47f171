"""A step is one bounded stage for one user; tasks and the inline runner run them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import transaction


@dataclass(frozen=True)
class Step:
    """A stage to run next: `STAGES[stage](user_id, *args)`."""

    stage: str
    user_id: int
    args: tuple = ()

    @property
    def priority(self) -> bool:
        return self.stage in PRIORITY_STAGES


# --- Enqueueing -----------------------------------------------------------------------------------
def enqueue(steps: Iterable[Step]) -> None:
    """Send steps to the workers once the current transaction has committed."""
    steps = list(steps)
    if steps:
        from .. import tasks

        transaction.on_commit(lambda: tasks.enqueue_steps(steps))


PRIORITY_STAGES = {
    "begin_initial_sync",
    "sync_labels",
    "list_page",
    "verify_unlisted",
    "incremental_sync",
    "rescan_label_page",
    "begin_health_check",
    "poll",
    "watch",
}
