"""Users and the state of their Gmail mirror."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser
from django.db import models


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

    class Meta(AbstractUser.Meta):
        indexes = [
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
