"""Operator console for the mirror: sync runs, labels and messages, all read-only.

The mirror is written by the sync alone; the console shows it and never edits it.
"""

from __future__ import annotations

from django.contrib import admin
from django.template.defaultfilters import filesizeformat, truncatechars
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from .html_sanitizer import sandboxed_frame
from .models import EmailMessage, Label, SyncProgress
from .status import format_duration, run_rate_and_eta

admin.site.site_header = "Gmail mirror — operator console"
admin.site.site_title = "Gmail mirror"
admin.site.index_title = "Operator console"

def progress_bar(percentage: int, label: str = "") -> str:
    """A small bar for list columns; the width is an int and every text is escaped."""
    percentage = max(0, min(100, int(percentage)))
    text = label or f"{percentage}%"
    return format_html(
        '<span class="sync-bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
        'aria-valuenow="{}" title="{}" style="display:inline-block;width:6em;height:.7em;'
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


@admin.register(SyncProgress)
class SyncProgressAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user",
        "sync_type",
        "status",
        "progress",
        "counts",
        "changes",
        "rate_and_eta",
        "duration",
        "error",
        "started_at",
    )
    list_filter = ("status", "sync_type")
    search_fields = ("user__email", "error_message")
    list_select_related = ("user",)
    date_hierarchy = "started_at"
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

    @admin.display(description="progress")
    def progress(self, obj: SyncProgress) -> str:
        return progress_bar(obj.percentage())

    @admin.display(description="processed / total")
    def counts(self, obj: SyncProgress) -> str:
        return f"{obj.num_processed} / {obj.num_total}"

    @admin.display(description="added / deleted / relabelled")
    def changes(self, obj: SyncProgress) -> str:
        return f"+{obj.num_added} -{obj.num_deleted} ~{obj.num_relabelled}"

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
        return truncatechars(obj.error_message, 80)


@admin.register(Label)
class LabelAdmin(ReadOnlyAdmin):
    list_display = (
        "name",
        "user",
        "type",
        "colors",
        "messages_total",
        "messages_unread",
        "threads_total",
        "updated_at",
    )
    list_filter = ("user", "type")
    search_fields = ("name", "gmail_id")
    list_select_related = ("user",)

    @admin.display(description="colors")
    def colors(self, obj: Label) -> str:
        if not (obj.text_color or obj.background_color):
            return "-"
        return f"{obj.text_color or '-'} on {obj.background_color or '-'}"


class LabelFilter(admin.SimpleListFilter):
    """Labels by name; with a user chosen, only that user's labels are offered."""

    title = "label"
    parameter_name = "label"

    def lookups(self, request, model_admin):
        labels = Label.objects.all()
        user_id = request.GET.get("user__id__exact", "")
        if user_id.isdigit():
            labels = labels.filter(user_id=user_id)
        names = labels.order_by("name").values_list("name", flat=True).distinct()
        return [(name, name) for name in names]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(labels__name=self.value())
        return queryset


class FetchedFilter(admin.SimpleListFilter):
    title = "fetched"
    parameter_name = "fetched"

    def lookups(self, request, model_admin):
        return [("yes", "Fetched"), ("no", "Listed, not fetched yet")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(internal_date__isnull=self.value() == "no")
        return queryset


@admin.register(EmailMessage)
class EmailMessageAdmin(ReadOnlyAdmin):
    list_display = ("subject_or_id", "sender", "internal_date", "label_names", "user")
    list_filter = ("user", LabelFilter, FetchedFilter)
    search_fields = ("subject", "sender")
    list_select_related = ("user",)
    ordering = ("-internal_date", "-pk")
    # Counting every message of every user on each page load is the slow part.
    show_full_result_count = False
    fieldsets = (
        (
            "Headers",
            {
                "fields": (
                    "user",
                    "subject",
                    "sender",
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

    @admin.display(description="subject", ordering="subject")
    def subject_or_id(self, obj: EmailMessage) -> str:
        return truncatechars(obj.subject, 100) or f"({obj.gmail_id})"

    @admin.display(description="labels")
    def label_names(self, obj: EmailMessage) -> str:
        return ", ".join(sorted(label.name for label in obj.labels.all())) or "-"

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
