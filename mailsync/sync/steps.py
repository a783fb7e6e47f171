"""A step is one bounded stage for one user; tasks and the inline runner run them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
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


# How a running stage starts steps before it returns (see start_now): set by the task
# that runs it; unset inline, where what follows runs after the stage anyway.
_starter: ContextVar[Callable[[list[Step]], None] | None] = ContextVar("starter", default=None)


def start_now(steps: list[Step]) -> list[Step]:
    """Start these steps now, while the stage goes on (a listing that lists page after
    page starts the batch chains as the pages arrive), if the runner can: they are
    enqueued once the current transaction commits. Otherwise they are returned, for
    the stage to return with the rest."""
    starter = _starter.get()
    if starter is None or not steps:
        return steps
    transaction.on_commit(lambda: starter(steps))
    return []


@contextmanager
def starting_with(starter: Callable[[list[Step]], None]) -> Iterator[None]:
    """Within this block, start_now hands steps to `starter` (a task's enqueue)."""
    token = _starter.set(starter)
    try:
        yield
    finally:
        _starter.reset(token)


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
