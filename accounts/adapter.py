"""allauth customisation in one place (as django-allauth recommends)."""

from __future__ import annotations

import logging

from allauth.account.utils import filter_users_by_email
from allauth.core.exceptions import ImmediateHttpResponse
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from allauth.socialaccount.models import SocialLogin
from allauth.socialaccount.providers.base import AuthProcess
from django.http import HttpRequest
from django.shortcuts import render

from .google import attach_refusal
from .models import CreatedVia

log = logging.getLogger(__name__)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """Google sign-in: the hooks that tie a login to the user's Gmail mirror.

    Local sign-up is closed (SOCIALACCOUNT_ONLY), so accounts come from Google
    sign-in or from operators. A sign-in lands in the account of its Google id
    (`sub`); a new `sub` whose email address an existing account uses attaches to
    it only where `attach_refusal` allows (an operator's account); otherwise the
    sign-in is refused with a page that says why, and nobody is signed in.
    """

    def is_open_for_signup(self, request: HttpRequest, sociallogin: SocialLogin) -> bool:
        return True  # local sign-up is closed; a Google sign-in creates its account

    def pre_social_login(self, request: HttpRequest, sociallogin: SocialLogin) -> None:
        if sociallogin.state.get("process") == AuthProcess.CONNECT:
            # One Google account per user: a second one is never added to an account.
            self._refuse(request, sociallogin, "an account has one Google account only")
        if sociallogin.is_existing:
            return  # found by provider and sub: the account this Google account made
        for email in {address.email.lower() for address in sociallogin.email_addresses}:
            for user in filter_users_by_email(email):
                refusal = attach_refusal(user, sociallogin.account.uid)
                if refusal:
                    self._refuse(request, sociallogin, refusal)
                log.info("attaching Google account %s to %s", sociallogin.account.uid, user)
                sociallogin.connect(request, user)
                return

    def populate_user(self, request: HttpRequest, sociallogin: SocialLogin, data):
        user = super().populate_user(request, sociallogin, data)
        user.created_via = CreatedVia.GOOGLE
        return user

    def _refuse(self, request: HttpRequest, sociallogin: SocialLogin, reason: str) -> None:
        email = ", ".join(a.email for a in sociallogin.email_addresses) or "(no email)"
        log.warning(
            "refused Google sign-in of %s (sub %s): %s", email, sociallogin.account.uid, reason
        )
        response = render(
            request,
            "accounts/sign_in_refused.html",
            {"email": email, "reason": reason},
            status=403,
        )
        raise ImmediateHttpResponse(response)
