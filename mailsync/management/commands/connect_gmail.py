"""Connect a Gmail mailbox without a browser: what "Sign in with Google" stores."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from accounts.google import GoogleTokenError, connect_google_account


class Command(BaseCommand):
    help = (
        "Create or update a user and their Google account and tokens exactly as a sign-in "
        "would (for headless set-ups and tests)."
    )

    def add_arguments(self, parser):
        parser.add_argument("email")
        parser.add_argument("--refresh-token", required=True)
        parser.add_argument("--access-token", default="")

    def handle(self, *args, email: str, refresh_token: str, access_token: str, **options):
        try:
            user, created = connect_google_account(email, refresh_token, access_token or None)
        except GoogleTokenError as exc:
            raise CommandError(str(exc)) from exc
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} user {user.pk} <{user.email}> with Google tokens.")
