"""Which Gmail history id the mirror is current to, given that history.list's answer id
runs ahead of the records it shows.

Gmail's answer `historyId` is the mailbox's current id, and the newest records can be
missing from the answer for a while: storing that id would skip them for good. So:
- after records were applied, the stored id is the largest record id applied (every
  record below it was shown: the hidden ones are the newest; replays are idempotent);
- the answer's id is kept as a *candidate* with the time it was seen; a later pass that
  began at least MAILSYNC_HISTORY_SETTLE_SECONDS after it and showed every record above
  the stored id (a complete pass) proves that no record up to the candidate is missing
  (records that old are shown by then), and the candidate becomes the stored id.
A settled candidate matters for cheap polls: without it, a mailbox whose id moves without
visible records (Gmail counts more than it shows) would be asked from far back forever.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings


def as_int(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


def settled_fields(
    user,
    applied_max: int | None,
    answer_id: int,
    began_at: dt.datetime,
    now: dt.datetime,
) -> dict:
    """The user fields to write after a complete pass over history from the user's stored
    id: it began at `began_at` (before its first request), applied records up to
    `applied_max` (None: none) and its last answer said `answer_id`."""
    stored = as_int(user.gmail_history_id) or 0
    reached = max(stored, applied_max or 0)
    candidate = as_int(user.history_candidate_id)
    candidate_at = user.history_candidate_at
    settle = dt.timedelta(seconds=settings.MAILSYNC_HISTORY_SETTLE_SECONDS)
    if candidate is not None and candidate_at is not None and candidate_at <= began_at - settle:
        # Every record up to the candidate existed `settle` before this pass began, so
        # this complete pass showed those above the stored id: none is skipped.
        reached = max(reached, candidate)
        candidate = None
    if candidate is not None and candidate <= reached:
        candidate = None
    if candidate is None and answer_id > reached:
        # A candidate already waiting keeps its (older) time: it settles sooner.
        candidate, candidate_at = answer_id, now
    return {
        "gmail_history_id": str(reached),
        "history_candidate_id": str(candidate) if candidate is not None else "",
        "history_candidate_at": candidate_at if candidate is not None else None,
        # History answered: Gmail's history is there again (see resync.py).
        "history_unready_since": None,
    }
