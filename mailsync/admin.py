"""Operator console for the mirror: sync runs, labels and messages, all read-only.

The mirror is written by the sync alone; the console shows it and never edits it.
"""

from __future__ import annotations

import re

from django.contrib import admin, messages
from django.contrib.postgres.search import SearchQuery, SearchVector
from django.db import connections
from django.db.models import Q, QuerySet
from django.template.defaultfilters import filesizeformat, pluralize, truncatechars
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from .admin_scale import BoundedAdmin, chosen_user_id, user_filter
from .html_sanitizer import sandboxed_frame
from .models import EmailMessage, Label, SyncProgress
from .status import format_duration, label_display_name, run_rate_and_eta

# One token that could be a Gmail message or thread id (they are hex; the emulator's
# and other ids are alphanumeric): exact lookups on two indexes, nearly free.
_ID_LIKE = re.compile(r"[A-Za-z0-9_-]{6,64}")


def progress_bar(percentage: int, label: str = "") -> str:
    """A small bar for list columns; the width is an int and every text is escaped."""
    percentage = max(0, min(100, int(percentage)))
    text = label or f"{percentage}%"
    return format_html(
        '<span class="sync-bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
        'aria-valuenow="{}" title="{}" style="display:inline-block;width:4em;height:.7em;'
        'background:#e6e9ed;border-radius:3px;overflow:hidden;vertical-align:middle">'
        '<span style="display:block;height:100%;width:{}%;background:#417690"></span>'
        "</span> {}",
        percentage,
        text,
        percentage,
        text,
    )


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable by staff with the view permission; nobody adds, edits or deletes."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def status_badge(status: str, display: str) -> str:
    """A run's status, red when it failed (trouble must look like trouble)."""
    css = {"failed": "trouble", "completed": "fine"}.get(status, "busy")
    return format_html('<span class="badge badge-{}">{}</span>', css, display)


class ConsoleMedia:
    css = {"all": ("mailsync/admin.css",)}


@admin.register(SyncProgress)
class SyncProgressAdmin(BoundedAdmin, ReadOnlyAdmin):
    # Eight columns that fit a 1280 px screen beside the filters: type and status share
    # one, start and duration another.
    list_display = (
        "id",
        "user",
        "run",
        "progress",
        "changes",
        "rate_and_eta",
        "when",
        "error",
    )
    list_filter = ("status", "sync_type", user_filter())
    # A run id, or a user's exact email address: both indexed lookups.
    search_fields = ("=id",)
    search_help_text = "A run id, or a user's email address."
    list_select_related = ("user",)
    ordering = ("-pk",)
    Media = ConsoleMedia
    fieldsets = (
        (None, {"fields": ("user", "sync_type", "status", "progress", "rate_and_eta")}),
        (
            "Counts",
            {
                "fields": (
                    "num_processed",
                    "num_total",
                    "num_added",
                    "num_deleted",
                    "num_relabelled",
                    "num_unavailable",
                    "num_fetched",
                    "batches_completed",
                    "batches_total",
                    "pages_listed",
                    "listing_completed",
                    "fell_back_to_full",
                )
            },
        ),
        (
            "State",
            {
                "fields": (
                    "start_history_id",
                    "next_page_token",
                    "started_at",
                    "updated_at",
                    "completed_at",
                    "duration",
                    "error_message",
                )
            },
        ),
    )
    readonly_fields = ("progress", "rate_and_eta", "duration")

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isdigit():
            return queryset.filter(pk=int(term)), False
        return queryset.filter(user__email__iexact=term), False

    @admin.display(description="run")
    def run(self, obj: SyncProgress) -> str:
        return format_html(
            "{}<br>{}",
            obj.get_sync_type_display().capitalize(),
            status_badge(obj.status, obj.get_status_display()),
        )

    @admin.display(description="progress")
    def progress(self, obj: SyncProgress) -> str:
        return progress_bar(obj.percentage(), f"{obj.num_processed} / {obj.num_total}")

    @admin.display(description="started, took")
    def when(self, obj: SyncProgress) -> str:
        started = timezone.localtime(obj.started_at).strftime("%Y-%m-%d %H:%M")
        return format_html("{}<br>{}", started, self.duration(obj))

    @admin.display(description="changes")
    def changes(self, obj: SyncProgress) -> str:
        changes = format_html(
            '<span title="added, deleted, relabelled">+{} -{} ~{}</span>',
            obj.num_added,
            obj.num_deleted,
            obj.num_relabelled,
        )
        if not obj.num_unavailable:
            return changes
        return format_html(
            '{}<br><span class="sync-trouble">{} message{} Gmail could not serve</span>',
            changes,
            obj.num_unavailable,
            pluralize(obj.num_unavailable),
        )

    @admin.display(description="rate, ETA")
    def rate_and_eta(self, obj: SyncProgress) -> str:
        rate, eta = run_rate_and_eta(obj)
        if rate is None:
            return "-"
        return f"{rate:.1f}/s, {format_duration(eta)} left" if eta is not None else f"{rate:.1f}/s"

    @admin.display(description="duration")
    def duration(self, obj: SyncProgress) -> str:
        end = obj.completed_at or (timezone.now() if obj.is_active else obj.updated_at)
        return format_duration((end - obj.started_at).total_seconds())

    @admin.display(description="error")
    def error(self, obj: SyncProgress) -> str:
        return truncatechars(obj.error_message, 60)


@admin.register(Label)
class LabelAdmin(BoundedAdmin, ReadOnlyAdmin):
    list_display = (
        "display_name",
        "gmail_id",
        "user",
        "type",
        "colors",
        "messages_total",
        "messages_unread",
        "threads_total",
        "not_listed",
        "updated_at",
    )
    list_filter = (user_filter(), "type", "not_listed")
    search_fields = ("name",)
    search_help_text = "Choose a user first: searches that user's label names and ids."
    list_select_related = ("user",)
    Media = ConsoleMedia

    def get_ordering(self, request):
        # A user's labels by kind and name (bounded by the user); otherwise newest first.
        return ("type", "name") if chosen_user_id(request) else ("-pk",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if not chosen_user_id(request):
            self.message_user(request, "Choose a user first to search labels.", messages.INFO)
            return queryset.none(), False
        return queryset.filter(Q(name__icontains=term) | Q(gmail_id__iexact=term)), False

    @admin.display(description="name")
    def display_name(self, obj: Label) -> str:
        return label_display_name(obj)

    @admin.display(description="colors")
    def colors(self, obj: Label) -> str:
        if not (obj.text_color or obj.background_color):
            return "-"
        return f"{obj.text_color or '-'} on {obj.background_color or '-'}"


class MailboxFilter(admin.SimpleListFilter):
    """A filter within one mailbox: offered once a user is chosen (across every
    mailbox it would scan the whole table); a value given in the URL still applies."""

    def has_output(self) -> bool:
        return bool(self.lookup_choices) or self.value() is not None


class LabelFilter(MailboxFilter):
    title = "label"
    parameter_name = "label"

    def lookups(self, request, model_admin):
        user_id = chosen_user_id(request)
        if user_id is None:
            return []
        labels = Label.objects.filter(user_id=user_id).order_by("type", "name")
        return [(label.gmail_id, label_display_name(label)) for label in labels]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(labels__gmail_id=self.value())
        return queryset


class FetchedFilter(MailboxFilter):
    title = "fetched"
    parameter_name = "fetched"

    def lookups(self, request, model_admin):
        if chosen_user_id(request) is None:
            return []
        return [("yes", "Fetched"), ("no", "Listed, not fetched yet")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(internal_date__isnull=self.value() == "no")
        return queryset


def search_messages(queryset: QuerySet, term: str) -> QuerySet:
    """Messages matching `term`, through indexes only: an address is looked up as the
    sender (exact, any case); one token may also be a message or thread id; words are
    searched in subjects (PostgreSQL full-text, GIN; a plain scan elsewhere)."""
    term = term.strip()
    if "@" in term and " " not in term:
        return queryset.filter(sender_address=term.strip("<>").lower())
    condition = Q()
    if _ID_LIKE.fullmatch(term):
        condition |= Q(gmail_id=term) | Q(thread_id=term)
    if connections[queryset.db].vendor == "postgresql":
        queryset = queryset.alias(subject_search=SearchVector("subject", config="simple"))
        condition |= Q(subject_search=SearchQuery(term, config="simple", search_type="websearch"))
    else:
        condition |= Q(subject__icontains=term)
    return queryset.filter(condition)


@admin.register(EmailMessage)
class EmailMessageAdmin(BoundedAdmin, ReadOnlyAdmin):
    list_display = ("subject_or_id", "sender", "internal_date", "label_names", "user")
    list_filter = (user_filter(), LabelFilter, FetchedFilter)
    search_fields = ("subject",)  # shows the search box; get_search_results decides
    search_help_text = (
        "A sender address (exact), a Gmail message or thread id, or words of the subject."
    )
    list_select_related = ("user",)
    Media = ConsoleMedia
    fieldsets = (
        (
            "Headers",
            {
                "fields": (
                    "user",
                    "subject",
                    "sender",
                    "sender_address",
                    "to",
                    "cc",
                    "date_header",
                    "message_id_header",
                )
            },
        ),
        (
            "Gmail",
            {
                "fields": (
                    "gmail_id",
                    "thread_id",
                    "label_names",
                    "internal_date",
                    "history_id",
                    "size_estimate",
                    "snippet",
                    "parse_error",
                    "created_at",
                    "updated_at",
                )
            },
        ),
        ("Attachments", {"fields": ("attachment_table",)}),
        ("Text body", {"fields": ("text_body",)}),
        ("HTML body (sanitized)", {"fields": ("html_body",)}),
    )
    readonly_fields = ("label_names", "attachment_table", "text_body", "html_body")

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("labels")

    def get_ordering(self, request):
        # One mailbox: newest mail first, on (user, -internal_date). Every mailbox: the
        # most recently listed first, on the primary key; no other order is indexed.
        return ("-internal_date",) if chosen_user_id(request) else ("-pk",)

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        return search_messages(queryset, search_term), False

    @admin.display(description="subject")
    def subject_or_id(self, obj: EmailMessage) -> str:
        return truncatechars(obj.subject, 100) or f"({obj.gmail_id})"

    @admin.display(description="labels")
    def label_names(self, obj: EmailMessage) -> str:
        names = sorted(label_display_name(label) for label in obj.labels.all())
        return ", ".join(names) or "-"

    @admin.display(description="attachments")
    def attachment_table(self, obj: EmailMessage) -> str:
        items = [item for item in obj.attachments or [] if isinstance(item, dict)]
        if not items:
            return "-"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    item.get("filename") or "(no name)",
                    item.get("mime_type", ""),
                    filesizeformat(item["size"]) if isinstance(item.get("size"), int) else "",
                    "stored at Gmail" if item.get("attachment_id") else "inline",
                )
                for item in items
            ),
        )
        return format_html(
            "<table><thead><tr><th>file</th><th>type</th><th>size</th><th>body</th></tr>"
            "</thead><tbody>{}</tbody></table>",
            rows,
        )

    @admin.display(description="text")
    def text_body(self, obj: EmailMessage) -> str:
        if not obj.body_text:
            return "-"
        return format_html(
            '<pre class="email-text" style="white-space:pre-wrap;max-height:40em;'
            'overflow:auto;margin:0">{}</pre>',
            obj.body_text,
        )

    @admin.display(description="HTML")
    def html_body(self, obj: EmailMessage) -> str:
        if not obj.body_html:
            return "-"
        return sandboxed_frame(
            obj.body_html,
            title="HTML body, sanitized",
            style="width:100%;min-height:30em;border:1px solid #ccc;background:#fff",
        )
