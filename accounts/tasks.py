"""Django-Q2 task functions of the accounts app: thin callers of accounts.deletion."""

from __future__ import annotations

from . import deletion


def delete_user_data(user_id: int) -> None:
    """Delete for a while, then hand the rest to a new task (each task is bounded)."""
    if deletion.delete_for_a_while(user_id):
        deletion.enqueue_deletion(user_id)


def resume_data_deletions() -> int:
    """Scheduled: a deletion whose task was lost (a killed worker, a Redis broker that
    dropped it) carries on. A duplicate task only shares the work."""
    users = deletion.pending_deletions()
    for user_id in users:
        deletion.enqueue_deletion(user_id)
    return len(users)
