"""What a Google sign-in sets in motion."""

from __future__ import annotations

import logging

from allauth.account.signals import user_logged_in
from django.dispatch import receiver

log = logging.getLogger(__name__)


@receiver(user_logged_in)
def start_sync_after_google_sign_in(sender, request, user, sociallogin=None, **kwargs) -> None:
    """A Google sign-in brings fresh tokens (allauth stored them already): clear any
    "sign in again" state and start the sync the mailbox needs. The first sign-in
    starts the initial sync; after a revocation this resumes where it stopped,
    because fetched messages are never downloaded twice."""
    if sociallogin is None or sociallogin.account.provider != "google":
        return
    from mailsync import sync

    type(user).objects.filter(pk=user.pk).update(gmail_auth_error="")
    user.gmail_auth_error = ""
    run = sync.start_sync(user)
    log.info("Google sign-in of %s started %s", user, run)
