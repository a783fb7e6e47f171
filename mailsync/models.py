"""The mirror: labels, messages and the record of every sync run."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from .fields import CompressedTextField, TsVectorField


class Label(models.Model):
    """A Gmail label with all its metadata, as labels.get returns it."""

    class Type(models.TextChoices):
        SYSTEM = "system"
        USER = "user"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="labels"
    )
    gmail_id = models.CharField(max_length=255)
    name = models.CharField(max_length=1024)
    type = models.CharField(max_length=16, choices=Type.choices, default=Type.USER)
    text_color = models.CharField(max_length=16, blank=True, default="")
    background_color = models.CharField(max_length=16, blank=True, default="")
    message_list_visibility = models.CharField(max_length=32, blank=True, default="")
    label_list_visibility = models.CharField(max_length=32, blank=True, default="")
    messages_total = models.PositiveIntegerField(null=True, blank=True)
    messages_unread = models.PositiveIntegerField(null=True, blank=True)
    threads_total = models.PositiveIntegerField(null=True, blank=True)
    threads_unread = models.PositiveIntegerField(null=True, blank=True)
    # Counters come from labels.get (1 unit a label): an incremental run refreshes only
    # the labels its history touched (marked stale), each at most hourly.
    counts_stale = models.BooleanField(default=False)
    counts_refreshed_at = models.DateTimeField(null=True, blank=True)
    # Gmail puts label ids on messages that labels.list and labels.get do not know
    # (lieer#48). Such a label is kept, marked, while a message carries it: deleting it
    # would drop the messages' links, and the next batch would bring it back.
    not_listed = models.BooleanField(
        default=False, help_text="Not listed by Gmail: messages carry it, labels.list does not."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            # System label ids (INBOX, ...) repeat across users: unique per user only.
            models.UniqueConstraint(fields=["user", "gmail_id"], name="label_unique_per_user"),
        ]
        ordering = ["type", "name"]

    def __str__(self) -> str:
        return self.name


class EmailMessage(models.Model):
    """One Gmail message. `internal_date` NULL means listed but not fetched yet."""

    # No index of its own: every index of this table starts with the user.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="email_messages",
        db_index=False,
    )
    gmail_id = models.CharField(max_length=64)
    thread_id = models.CharField(max_length=64, blank=True, default="")
    labels = models.ManyToManyField(
        Label, related_name="messages", blank=True, through="MessageLabel"
    )
    # Ascending = the order Gmail listed the ids (newest first), so the batch tasks
    # fetch recent mail first. History additions get negative values (newer first).
    listing_order = models.BigIntegerField(default=0)
    # A batch task's claim: other tasks skip the row until the lease runs out, so a
    # crashed worker's messages become claimable again.
    claimed_until = models.DateTimeField(null=True, blank=True)
    # The batch slot whose chain holds the claim (NULL for a retry wait), so a dead
    # chain's claims can be released without touching live ones.
    claim_slot = models.PositiveSmallIntegerField(null=True, blank=True)
    # The last full listing that saw this id: after a (re)listing, rows it did not see
    # are gone from Gmail.
    listed_by_run = models.BigIntegerField(null=True, blank=True)
    # Fetch attempts that failed for this message alone (other messages were served
    # meanwhile). An outage of Gmail as a whole never counts here.
    fetch_failures = models.PositiveSmallIntegerField(default=0)
    last_fetch_error = models.TextField(blank=True, default="")
    # Set when Gmail kept failing to serve this message, after attempts spread over
    # minutes while it served others: runs complete without it and say so, and the
    # health check tries it again.
    unavailable_since = models.DateTimeField(null=True, blank=True)
    internal_date = models.DateTimeField(null=True, blank=True)
    history_id = models.CharField(max_length=32, blank=True, default="")
    snippet = models.TextField(blank=True, default="")
    size_estimate = models.PositiveIntegerField(null=True, blank=True)
    subject = models.TextField(blank=True, default="")
    sender = models.TextField("from", blank=True, default="")
    # The From address alone, lower-cased (parsing.address_of): the admin's indexed
    # "messages from this address" lookup.
    sender_address = models.CharField(max_length=320, blank=True, default="")
    to = models.TextField(blank=True, default="")
    cc = models.TextField(blank=True, default="")
    date_header = models.DateTimeField(null=True, blank=True)
    message_id_header = models.TextField(blank=True, default="")
    body_text = CompressedTextField()
    body_html = CompressedTextField()
    attachments = models.JSONField(default=list, blank=True)
    parse_error = models.TextField(blank=True, default="")
    # Subject, sender, recipients and the start of the text, weighted (mailsync/search.py);
    # filled when the message is stored. NULL on SQLite, and until filled.
    search_vector = TsVectorField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "gmail_id"], name="message_unique_per_user"),
        ]
        indexes = [
            # "Messages still to fetch of a user in listing order": the batch claim query.
            # In its whole order (the id breaks ties): a scan stops after the rows it
            # takes, whatever the planner's statistics say (with stale ones it sorted
            # every row still to fetch: 28 ms a claim at 40,000, issue 13).
            models.Index(
                fields=["user", "listing_order", "id"],
                condition=Q(internal_date__isnull=True, unavailable_since__isnull=True),
                name="message_to_fetch_order_idx",
            ),
            models.Index(
                fields=["user"],
                condition=Q(unavailable_since__isnull=False),
                name="message_unavailable_idx",
            ),
            # Claims and retry waits are a handful of rows per mailbox at any time.
            models.Index(
                fields=["user", "claim_slot"],
                condition=Q(claimed_until__isnull=False, internal_date__isnull=True),
                name="message_claimed_idx",
            ),
            # The mailbox pages: a thread in date order, and every list newest first
            # with keyset pagination on (internal_date, id).
            models.Index(
                fields=["user", "thread_id", "internal_date", "id"], name="message_thread_date_idx"
            ),
            models.Index(fields=["user", "-internal_date", "-id"], name="message_date_id_idx"),
            # The GIN index on (user, search_vector) exists on PostgreSQL only: a
            # migration creates it (mailsync/migrations/*_search_index.py).
            # The console finds a message by id, thread or sender across every mailbox.
            models.Index(fields=["gmail_id"], name="message_gmail_id_idx"),
            models.Index(fields=["thread_id"], name="message_thread_id_idx"),
            models.Index(fields=["sender_address"], name="message_sender_idx"),
        ]

    def __str__(self) -> str:
        return self.subject or self.gmail_id

    @property
    def is_fetched(self) -> bool:
        return self.internal_date is not None

    @property
    def is_unavailable(self) -> bool:
        return self.unavailable_since is not None


class MessageLabel(models.Model):
    """A message carries a label. Explicit so that a label-membership rescan (after
    Gmail's history expired) can tell the links it saw from the ones it did not."""

    # Two indexes, one per direction: the unique (message, label), and (label, message)
    # for a label's messages (its mailbox page, the rescan of its membership).
    message = models.ForeignKey(EmailMessage, on_delete=models.CASCADE, db_index=False)
    label = models.ForeignKey(Label, on_delete=models.CASCADE, db_index=False)
    seen_by_run = models.BigIntegerField(null=True, blank=True)
    linked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["message", "label"], name="message_label_unique"),
        ]
        indexes = [
            models.Index(fields=["label", "message"], name="message_label_label_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} has {self.label_id}"


class SyncProgress(models.Model):
    """One sync run of one user: what it has done and what it is doing."""

    class SyncType(models.TextChoices):
        INITIAL = "initial"
        INCREMENTAL = "incremental"
        LABELS = "labels"
        HEALTH = "health", "health check"

    class Status(models.TextChoices):
        PENDING = "pending"
        IN_PROGRESS = "in_progress", "in progress"
        COMPLETED = "completed"
        FAILED = "failed"

    ACTIVE_STATUSES = (Status.PENDING, Status.IN_PROGRESS)

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sync_runs"
    )
    sync_type = models.CharField(max_length=16, choices=SyncType.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # Profile historyId read when the run started: the mirror is current to it once done.
    start_history_id = models.CharField(max_length=32, blank=True, default="")
    # The largest history record id an incremental run applied so far (its pages come
    # in several steps): what the user's history id becomes (see history_ids.py).
    end_history_id = models.CharField(max_length=32, blank=True, default="")
    next_page_token = models.TextField(blank=True, default="")
    listing_completed = models.BooleanField(default=False)
    # A first listing lists the INBOX first (newest first), so the inbox arrives in
    # seconds; then everything. `inbox_pages` = pages the INBOX took.
    inbox_listed = models.BooleanField(default=False)
    inbox_pages = models.PositiveIntegerField(default=0)
    pages_listed = models.PositiveIntegerField(default=0)
    num_processed = models.PositiveIntegerField(default=0)
    num_total = models.PositiveIntegerField(default=0)
    batches_total = models.PositiveIntegerField(default=0)
    batches_completed = models.PositiveIntegerField(default=0)
    num_added = models.PositiveIntegerField(default=0)
    num_deleted = models.PositiveIntegerField(default=0)
    num_relabelled = models.PositiveIntegerField(default=0)
    # Messages this run downloaded from Gmail (not those already mirrored): its rate.
    num_fetched = models.PositiveIntegerField(default=0)
    # A full sync of a mailbox that had been mirrored completely before.
    resync = models.BooleanField(default=False)
    # Incremental runs whose history had expired re-list the mailbox, then rescan
    # each label's membership.
    fell_back_to_full = models.BooleanField(default=False)
    rescan_completed = models.BooleanField(default=False)
    # After a listing, rows it did not show are checked with Gmail before deletion.
    unlisted_verified = models.BooleanField(default=False)
    # Messages Gmail could not serve when the run ended (see EmailMessage.unavailable_since).
    num_unavailable = models.PositiveIntegerField(default=0)
    # Gmail failed as a whole (5xx, network): the run waits until `retry_at` (the
    # watchdog resumes it), longer after each failure in a row.
    retry_at = models.DateTimeField(null=True, blank=True)
    failures_in_a_row = models.PositiveSmallIntegerField(default=0)
    # The worker ("host:pid") that last ran a step of this run (see BatchSlot.holder).
    holder = models.CharField(max_length=128, blank=True, default="")
    error_message = models.TextField(blank=True, default="")
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            # Two triggers (admin, schedule, sign-in) cannot start two runs of one kind.
            models.UniqueConstraint(
                fields=["user", "sync_type"],
                condition=Q(status__in=["pending", "in_progress"]),
                name="one_active_run_per_user_and_type",
            ),
        ]
        indexes = [
            models.Index(fields=["status", "updated_at"], name="syncprogress_status_idx"),
            models.Index(
                fields=["retry_at"],
                condition=Q(retry_at__isnull=False, status__in=["pending", "in_progress"]),
                name="syncprogress_retry_idx",
            ),
        ]
        ordering = ["-started_at"]
        verbose_name = "sync run"

    def __str__(self) -> str:
        return f"{self.get_sync_type_display()} sync of {self.user} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES

    def percentage(self) -> int:
        if self.status == self.Status.COMPLETED:
            return 100
        if not self.num_total:
            return 0
        return min(100, int(self.num_processed * 100 / self.num_total))


class MailboxCounts(models.Model):
    """A mailbox's totals, kept up to date by every write to its messages and labels,
    in the same transaction, so that no page, batch or run ever counts rows.

    Writers lock this row first (see mailsync/counters.py): that also serializes
    the inserts and deletes of one mailbox, which makes the deltas exact. Stored
    batches share the lock and keep their deltas in MailboxCountsShare.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="mailbox_counts",
    )
    messages = models.PositiveIntegerField(default=0, help_text="listed or fetched")
    fetched = models.PositiveIntegerField(default=0)
    unavailable = models.PositiveIntegerField(default=0, help_text="Gmail could not serve")
    labels = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "mailbox counts"

    def __str__(self) -> str:
        return f"{self.fetched}/{self.messages} messages of {self.user_id}"

    @property
    def to_fetch(self) -> int:
        return max(0, self.messages - self.fetched - self.unavailable)


class MailboxCountsShare(models.Model):
    """A batch chain's share of its mailbox's totals: the deltas of the batches its
    slot stored since a writer that locks the mailbox last folded them into
    MailboxCounts (see mailsync/counters.py). Batches of one mailbox then store side
    by side instead of one after the other."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    slot = models.PositiveSmallIntegerField()
    # Deltas: negative when the chain's batches deleted more than they added.
    messages = models.IntegerField(default=0)
    fetched = models.IntegerField(default=0)
    unavailable = models.IntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "slot"], name="counts_share_unique"),
        ]

    def __str__(self) -> str:
        return f"counts of slot {self.slot} of {self.user_id}"


class QuotaBucket(models.Model):
    """Shared Gmail quota state of one user or of the whole project.

    Used when no Redis is configured; workers on every machine lease units here in
    chunks before they send requests, and count the user's requests in flight (see
    mailsync/quota.py). UNLOGGED on PostgreSQL: the state is worth seconds, and a
    crash that empties it costs at most a few 429s.
    """

    key = models.CharField(max_length=64, unique=True)
    # Theoretical arrival time (epoch seconds): when everything leased is paid for.
    tat = models.FloatField(default=0.0)
    # Pace as a fraction of the budget (AIMD); 0 = not set yet: start at the ceiling.
    factor = models.FloatField(default=0.0)
    # Until then a new 429 does not cut the pace again (the last cut has not shown yet).
    cut_until = models.FloatField(default=0.0)
    # Wait computed by the last lease (read back by the store, see quota_stores.py).
    last_wait = models.FloatField(default=0.0)
    # Gmail requests (batch parts) of this user in flight now: the sum of its permits.
    in_flight = models.IntegerField(default=0)

    def __str__(self) -> str:
        return self.key


class QuotaPermit(models.Model):
    """Permits held by one Gmail request in flight; a dead holder's expire."""

    holder = models.CharField(max_length=32, primary_key=True)
    key = models.CharField(max_length=64)
    parts = models.IntegerField()
    expires_at = models.FloatField()

    class Meta:
        indexes = [models.Index(fields=["key", "expires_at"], name="quota_permit_expiry")]

    def __str__(self) -> str:
        return f"{self.key}: {self.parts}"


class BatchSlot(models.Model):
    """One of a user's MAILSYNC_BATCHES_IN_FLIGHT message-batch task slots.

    A slot is leased by the task chain that holds it; a lease that runs out (its
    worker died, or the broker dropped the task) lets the slot be taken again, so
    the number of batch tasks per user stays bounded without counters that leak.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batch_slots"
    )
    number = models.PositiveSmallIntegerField()
    leased_until = models.DateTimeField(null=True, blank=True)
    # The worker ("host:pid") that leased or last renewed the slot: when Django-Q2's
    # cluster stats show it is gone, the watchdog frees the slot at once.
    holder = models.CharField(max_length=128, blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "number"], name="batch_slot_unique"),
        ]

    def __str__(self) -> str:
        return f"batch slot {self.number} of {self.user}"


class ClusterHeartbeat(models.Model):
    """The last time a qcluster on a host finished a task (see mailsync/health.py).

    One row per cluster queue and host, written at most every few seconds by the
    cluster's monitor process; /health/ and /metrics read it.
    """

    cluster = models.CharField(max_length=100)
    host = models.CharField(max_length=255)
    beat_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cluster", "host"], name="heartbeat_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.cluster}@{self.host} at {self.beat_at:%Y-%m-%d %H:%M:%S}"
