"""Letting go of a user's Google account: on their request, or before deleting them.

Disconnecting stops everything that uses the Google grant (active sync runs fail
with the reason; Gmail push notifications stop), revokes the grant at Google and
forgets the tokens. The Google account (its `sub`) stays linked, so signing in
with Google again lands in the same account, stores new tokens and resumes.
"""

from __future__ import annotations

import logging

from django.contrib.auth import get_user_model
from django.db import transaction

from .google import revoke_at_google
from .models import GoogleToken

log = logging.getLogger(__name__)

DISCONNECTED = "Disconnected from Google by the user: sign in with Google to reconnect."
# A disconnection calls Gmail once (users.stop): it waits this long at most for quota.
STOP_WATCH_MAX_WAIT_S = 5.0


def disconnect_google(user_id: int, reason: str = DISCONNECTED) -> bool:
    """Stop the user's syncs and push watch, revoke the grant at Google, forget the
    tokens. Idempotent. Returns whether Google confirmed the revocation."""
    from mailsync import sync
    from mailsync.models import BatchSlot

    User = get_user_model()
    with transaction.atomic():
        # The "sign in again" state keeps schedules and the watchdog away from the user.
        User.objects.filter(pk=user_id).update(
            gmail_auth_error=reason, next_sync_at=None, sync_claimed_at=None
        )
        sync.fail_runs(user_id, f"Stopped: {reason}")
        BatchSlot.objects.filter(user_id=user_id).update(leased_until=None)
    _stop_watch(user_id)
    revoked = False
    for token in GoogleToken.objects.filter(account__user_id=user_id):
        revoked = revoke_at_google(token) or revoked
        token.delete()
    log.info("user %s disconnected from Google (revoked at Google: %s)", user_id, revoked)
    return revoked


def _stop_watch(user_id: int) -> None:
    """No more push notifications for the mailbox (ignored when it fails or has no
    watch: a watch also lapses by itself within 7 days)."""
    from mailsync import watches

    watches.stop(user_id, max_wait_s=STOP_WATCH_MAX_WAIT_S)
