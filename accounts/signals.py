"""What a Google sign-in sets in motion."""

from __future__ import annotations

import logging

from allauth.account.signals import user_logged_in
from django.dispatch import receiver

from .google import save_tokens

log = logging.getLogger(__name__)


@receiver(user_logged_in)
def start_sync_after_google_sign_in(sender, request, user, sociallogin=None, **kwargs) -> None:
    """A Google sign-in brings fresh tokens: store them (encrypted; allauth keeps
    none, SOCIALACCOUNT_STORE_TOKENS is off), clear any "sign in again" state and
    start the sync the mailbox needs. The first sign-in starts the initial sync;
    after a revocation or a disconnection this resumes where it stopped, because
    fetched messages are never downloaded twice."""
    if sociallogin is None or sociallogin.account.provider != "google":
        return
    from mailsync import sync

    if sociallogin.token is not None:
        token = sociallogin.token
        save_tokens(sociallogin.account, token.token, token.token_secret, token.expires_at)
    type(user).objects.filter(pk=user.pk).update(gmail_auth_error="")
    user.gmail_auth_error = ""
    user.refresh_from_db(fields=["data_deletion"])
    if user.data_deletion:
        # The old mirror is still being deleted: the sync starts when that is done
        # (accounts.deletion), or it would download messages the deletion removes.
        log.info("Google sign-in of %s: sync waits for the mirror deletion", user)
        return
    run = sync.start_sync(user)
    log.info("Google sign-in of %s started %s", user, run)
