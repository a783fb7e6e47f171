"""allauth customisation in one place (as django-allauth recommends)."""

from __future__ import annotations

from allauth.socialaccount.adapter import DefaultSocialAccountAdapter


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    """Google sign-in: the hooks that tie a login to the user's Gmail mirror."""
