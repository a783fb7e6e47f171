"""The Django-Q2 schedules this product runs, created idempotently.

Called from a data migration (with the historical Schedule model) so that every
`migrate` leaves exactly one row per schedule, never duplicates.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

# name, function, schedule type (I = every N minutes, D = daily), minutes, first run
# hour (UTC) for daily ones: the heavy daily work runs at night, not at deploy time.
SCHEDULES = [
    ("mailsync: incremental syncs", "mailsync.tasks.dispatch_incremental_syncs", "I", 1, None),
    ("mailsync: watchdog", "mailsync.tasks.resume_stalled_runs", "I", 1, None),
    ("mailsync: health check", "mailsync.tasks.start_health_checks", "D", None, 3),
    ("mailsync: clean-up", "mailsync.tasks.clean_up", "D", None, 4),
    ("mailsync: push watch renewal", "mailsync.tasks.renew_watches", "D", None, 5),
]


def _first_run(hour: int | None) -> dt.datetime:
    now = timezone.now()
    if hour is None:
        return now
    first = now.replace(hour=hour, minute=0, second=0, microsecond=0)
    return first if first > now else first + dt.timedelta(days=1)


def ensure_schedules(schedule_model) -> None:
    for name, func, schedule_type, minutes, hour in SCHEDULES:
        schedule_model.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": schedule_type,
                "minutes": minutes,
                "repeats": -1,
            },
            create_defaults={
                "func": func,
                "schedule_type": schedule_type,
                "minutes": minutes,
                "repeats": -1,
                "next_run": _first_run(hour),
            },
        )
