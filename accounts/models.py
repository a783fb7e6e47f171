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

    # --- Polling and push (mailsync/polling.py, mailsync/push.py) ---
    # When the next poll of the mailbox is due: the dispatcher selects due users by this
    # indexed column, oldest first, and moves it on when it enqueues their poll. NULL:
    # nothing to poll (no complete mirror, access refused, inactive).
    next_sync_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set while a poll or an incremental run of the user is queued or running: a push
    # that arrives meanwhile only records `push_history_id`. Stale after
    # MAILSYNC_STALLED_AFTER_SECONDS (a lost task cannot block the user for good).
    sync_claimed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The largest historyId a push announced: one more pass follows a run that ended
    # below it. Redelivering a notification changes nothing.
    push_history_id = models.BigIntegerField(null=True, blank=True, editable=False)
    push_state = models.CharField(
        max_length=8,
        choices=[("", "off"), ("on", "on"), ("failed", "failed")],
        blank=True,
        default="",
        editable=False,
        help_text="Gmail push (users.watch): off, on, or failed (then the user is polled).",
    )
    push_error = models.TextField(blank=True, default="", editable=False)
    watch_history_id = models.CharField(max_length=32, blank=True, default="", editable=False)
    # When the watch lapses; also set (to the failure time) when a watch failed, so the
    # daily renewal finds both through one index.
    watch_expires_at = models.DateTimeField(null=True, blank=True, editable=False)

    # --- Gmail's history quirks (mailsync/sync/history_ids.py, docs/architecture.md) ---
    # history.list's answer id runs ahead of the records it shows (they appear later),
    # so it is not stored at once: it waits here, and becomes `gmail_history_id` when a
    # pass at least MAILSYNC_HISTORY_SETTLE_SECONDS later shows nothing it lacks.
    history_candidate_id = models.CharField(max_length=32, blank=True, default="", editable=False)
    history_candidate_at = models.DateTimeField(null=True, blank=True, editable=False)
    # When expired history last made us re-list the mailbox: a fresh id can 404 for a
    # while after it (lieer#301), so another re-listing waits
    # MAILSYNC_RESYNC_MIN_INTERVAL_MINUTES, and polling goes on meanwhile.
    history_resynced_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Set while Gmail answers 404 for our id and the re-listing waits (shown to people).
    history_unready_since = models.DateTimeField(null=True, blank=True, editable=False)

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
            # The dispatcher: due users, oldest first (mailsync/polling.py).
            models.Index(
                fields=["next_sync_at"],
                condition=models.Q(next_sync_at__isnull=False),
                name="user_next_sync_idx",
            ),
            # The daily watch renewal: watches that lapse soon, or failed.
            models.Index(
                fields=["watch_expires_at", "id"],
                condition=models.Q(watch_expires_at__isnull=False),
                name="user_watch_expiry_idx",
            ),
        ]

    @property
    def can_sync_incrementally(self) -> bool:
        return bool(
            self.initial_sync_completed and self.label_sync_completed and self.gmail_history_id
        )

    @property
    def push_summary(self) -> str:
        """What the status page and the admin say: "on", "off" or "failed: reason"."""
        if self.push_state == "failed":
            return f"failed: {self.push_error}" if self.push_error else "failed"
        return self.push_state or "off"

    @property
    def history_note(self) -> str:
        """While Gmail answers 404 for the mirror's history id and the re-listing waits
        (mailsync/sync/resync.py): when the next full check may happen; else ""."""
        if not self.history_unready_since:
            return ""
        from mailsync.sync.resync import next_full_check_at

        when = next_full_check_at(self)
        return f"Gmail's history is not ready yet; next full check at {when:%Y-%m-%d %H:%M} UTC."

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
