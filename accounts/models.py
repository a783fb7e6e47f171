"""Users and the state of their Gmail mirror."""

from __future__ import annotations

from allauth.socialaccount.models import SocialAccount
from django.contrib.auth.models import AbstractUser, UserManager
from django.db import models

from .encryption import EncryptedTextField


class CreatedVia(models.TextChoices):
    """How an account came to be: decides whether a Google sign-in may attach to it."""

    GOOGLE = "google", "Google sign-in"
    OPERATOR = "operator", "an operator"
    # Rows from before this was recorded that had no Google account, and anything
    # not created by one of the paths above: a Google sign-in never attaches to them.
    UNKNOWN = "unknown", "unknown"


class OperatorUserManager(UserManager):
    """`createsuperuser` creates operator accounts."""

    def create_superuser(self, username, email=None, password=None, **extra_fields):
        extra_fields.setdefault("created_via", CreatedVia.OPERATOR)
        return super().create_superuser(username, email, password, **extra_fields)


class User(AbstractUser):
    """A person whose Gmail mailbox is mirrored.

    The sync state lives here because it is one per mailbox and every stage reads it.
    """

    gmail_history_id = models.CharField(
        max_length=32,
        null=True,
        blank=True,
        help_text="Gmail history id the mirror is current to; incremental syncs start here.",
    )
    initial_sync_completed = models.BooleanField(default=False)
    label_sync_completed = models.BooleanField(default=False)
    last_full_sync_at = models.DateTimeField(null=True, blank=True)
    last_incremental_sync_at = models.DateTimeField(null=True, blank=True)
    gmail_auth_error = models.TextField(
        blank=True,
        default="",
        help_text="Set when Google refused our tokens: the user must sign in again.",
    )
    created_via = models.CharField(
        max_length=16,
        choices=CreatedVia.choices,
        default=CreatedVia.UNKNOWN,
        editable=False,
        help_text="How this account was created. A Google sign-in attaches only to an "
        "account created by Google sign-in with the same Google id, or by an operator.",
    )

    data_deletion = models.CharField(
        max_length=16,
        choices=[("", "none"), ("mirror", "the mirror"), ("account", "the whole account")],
        blank=True,
        default="",
        editable=False,
        help_text="What the user asked to delete and is being deleted in the background.",
    )

    objects = OperatorUserManager()

    class Meta(AbstractUser.Meta):
        indexes = [
            # The deletions still to finish: few rows, found without a scan.
            models.Index(
                fields=["data_deletion"],
                condition=~models.Q(data_deletion=""),
                name="user_pending_deletion_idx",
            ),
            # The console's "Needs sign-in" filter: the few users Google refused.
            models.Index(
                fields=["id"],
                condition=~models.Q(gmail_auth_error=""),
                name="user_needs_sign_in_idx",
            ),
        ]

    @property
    def can_sync_incrementally(self) -> bool:
        return bool(
            self.initial_sync_completed and self.label_sync_completed and self.gmail_history_id
        )

    def __str__(self) -> str:
        return self.email or self.username


class GoogleToken(models.Model):
    """The OAuth tokens of a user's Google account, encrypted at rest.

    allauth's SocialToken would keep them in plain text (SOCIALACCOUNT_STORE_TOKENS
    is off); they are captured at sign-in instead (accounts/signals.py). One row
    per Google account; its absence means the user must sign in with Google.
    """

    account = models.OneToOneField(
        SocialAccount, on_delete=models.CASCADE, related_name="google_token"
    )
    access_token = EncryptedTextField(blank=True, default="")
    refresh_token = EncryptedTextField(blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"Google tokens of account {self.account_id}"
