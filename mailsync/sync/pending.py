"""Which messages remain to be fetched, and how long a claim on them lasts."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from .. import counters
from ..models import EmailMessage


def lease_seconds() -> int:
    # Longer than any task may run: a live task never loses its claim or slot.
    return settings.MAILSYNC_TASK_MAX_SECONDS + 15


def messages_to_fetch(**filters):
    """Messages listed but not fetched yet, except those Gmail could not serve."""
    return EmailMessage.objects.filter(
        internal_date__isnull=True, unavailable_since__isnull=True, **filters
    )


def claimable_messages(now: dt.datetime, **filters):
    """Messages to fetch that no live claim (or retry wait) holds."""
    return messages_to_fetch(**filters).filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )


def retry_failed_messages(user_id: int) -> int:
    """Messages that failed, or that Gmail could not serve, get a fresh set of attempts."""
    with transaction.atomic():
        counters.lock(user_id)
        failed = EmailMessage.objects.filter(
            Q(fetch_failures__gt=0) | Q(unavailable_since__isnull=False),
            user_id=user_id,
            internal_date__isnull=True,
        )
        unavailable = failed.filter(unavailable_since__isnull=False).update(
            unavailable_since=None, fetch_failures=0, claimed_until=None
        )
        failed.update(fetch_failures=0, claimed_until=None)
        counters.add(user_id, unavailable=-unavailable)
    return unavailable


def release_claims(user_id: int, slots: list[int] | None = None) -> int:
    """Forget the claims of these slots' chains (all claims and retry waits when
    `slots` is None): their holders are known to be dead; the messages are claimable
    at once."""
    held = messages_to_fetch(user_id=user_id, claimed_until__isnull=False)
    if slots is not None:
        held = held.filter(claim_slot__in=slots)
    return held.update(claimed_until=None, claim_slot=None)
