"""Logging helpers: Django-Q2's per-task lines demoted to DEBUG, and our event lines.

Every meaningful event of a sync is one line with the user and run ids, both in the
text (for people) and as `extra` fields (for the JSON formatter, LOG_FORMAT=json).
"""

from __future__ import annotations

import logging
import re

# Django-Q2 writes these at INFO for every task it enqueues, takes, runs or schedules,
# and for every recycled worker: at fleet scale they drown everything else.
_TASK_NOISE = re.compile(
    r"^(Processed '|Enqueued \[|recycled worker )"
    r"|^\S+ (processing \S+ '|created task \S+ from schedule|ready for work at )"
)

events = logging.getLogger("mailsync.events")


class TaskNoiseFilter(logging.Filter):
    """Turns Django-Q2's per-task INFO lines into DEBUG records (dropped unless the
    logger is at DEBUG); start, stop, warnings and failures keep their level."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and _TASK_NOISE.search(record.getMessage()):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


def event(
    name: str,
    user_id: int | None,
    text: str,
    run_id: int | None = None,
    level: int = logging.INFO,
    **fields,
) -> None:
    """Log one event: "user 7 run 12: <text>", with event/user_id/run_id as fields."""
    prefix = f"user {user_id}" + (f" run {run_id}" if run_id is not None else "")
    events.log(
        level,
        "%s: %s",
        prefix,
        text,
        extra={"event": name, "user_id": user_id, "run_id": run_id, **fields},
    )
