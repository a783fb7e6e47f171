"""Which messages remain to be fetched, and how long a claim on them lasts."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db.models import Q

from ..models import EmailMessage

MAX_FETCH_FAILURES = 5


def lease_seconds() -> int:
    # Longer than any task may run: a live task never loses its claim or slot.
    return settings.MAILSYNC_TASK_MAX_SECONDS + 15


def messages_to_fetch(**filters):
    """Unfetched messages that are still worth trying (fewer than MAX_FETCH_FAILURES)."""
    return EmailMessage.objects.filter(
        internal_date__isnull=True, fetch_failures__lt=MAX_FETCH_FAILURES, **filters
    )


def claimable_messages(now: dt.datetime, **filters):
    """Messages to fetch that no live claim holds."""
    return messages_to_fetch(**filters).filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )
