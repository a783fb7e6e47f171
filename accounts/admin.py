"""Operator console for users: their sync state at a glance, and actions to steer it."""

from __future__ import annotations

from allauth.socialaccount.models import SocialToken
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.db.models import Prefetch
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe
from django.utils.timesince import timesince

from mailsync import sync
from mailsync.admin import ConsoleMedia, progress_bar
from mailsync.admin_scale import BoundedChangelist
from mailsync.models import SyncProgress

from .models import CreatedVia, User

RUN_TYPES = SyncProgress.SyncType

# Tokens are never shown: allauth's SocialToken admin would list them in clear (and
# the table stays empty anyway: tokens live encrypted in GoogleToken, which has no
# admin).
if admin.site.is_registered(SocialToken):
    admin.site.unregister(SocialToken)


class GoogleAccessFilter(admin.SimpleListFilter):
    title = "Google access"
    parameter_name = "google_access"

    def lookups(self, request, model_admin):
        return [("refused", "Needs sign-in"), ("ok", "Working")]

    def queryset(self, request, queryset):
        if self.value() == "refused":
            return queryset.exclude(gmail_auth_error="")
        if self.value() == "ok":
            return queryset.filter(gmail_auth_error="")
        return queryset


def _ago(moment) -> str:
    """ "3 hours ago" ("just now" under a minute), the exact time on hover."""
    if moment is None:
        return "never"
    now = timezone.now()
    words = (
        "just now"
        if (now - moment).total_seconds() < 60
        else f"{timesince(moment, now, depth=1)} ago"
    )
    return format_html(
        '<span title="{}">{}</span>',
        timezone.localtime(moment).strftime("%Y-%m-%d %H:%M:%S"),
        words,
    )


@admin.register(User)
class UserAdmin(BoundedChangelist, BaseUserAdmin):
    list_display = (
        "email",
        "mirror",
        "last_full_sync",
        "last_incremental_sync",
        "active_runs",
        "google_access",
        "push",
    )
    list_filter = (
        GoogleAccessFilter,
        "initial_sync_completed",
        "label_sync_completed",
        "is_staff",
        "is_active",
    )
    # Prefixes, any case: an indexed lookup on PostgreSQL (accounts migration 0003). The
    # user autocomplete of the other lists searches the same way.
    search_fields = ("^email", "^username")
    search_help_text = "The beginning of an email address or username."
    ordering = ("-pk",)
    Media = ConsoleMedia
    actions = (
        "run_initial_sync",
        "run_incremental_sync",
        "run_label_sync",
        "run_health_check",
        "reset_sync_state",
    )
    fieldsets = (
        *BaseUserAdmin.fieldsets,
        (
            "Gmail sync",
            {
                "fields": (
                    "gmail_history_id",
                    "label_sync_completed",
                    "initial_sync_completed",
                    "last_full_sync_at",
                    "last_incremental_sync_at",
                    "gmail_auth_error",
                    "created_via",
                    "push",
                    "next_sync_at",
                    "watch_expires_at",
                    "history_note",
                )
            },
        ),
    )
    readonly_fields = ("created_via", "push", "next_sync_at", "watch_expires_at", "history_note")

    def get_queryset(self, request):
        # One query for the active runs of every user on the page, not one per row.
        return (
            super()
            .get_queryset(request)
            .prefetch_related(
                Prefetch(
                    "sync_runs",
                    queryset=SyncProgress.objects.filter(
                        status__in=SyncProgress.ACTIVE_STATUSES
                    ).order_by("sync_type"),
                    to_attr="active_sync_runs",
                )
            )
        )

    def save_model(self, request, obj, form, change):
        if not change:  # "Add user": an operator vouches for this account
            obj.created_via = CreatedVia.OPERATOR
        super().save_model(request, obj, form, change)

    @admin.display(description="active runs")
    def active_runs(self, obj: User) -> str:
        runs = getattr(obj, "active_sync_runs", None)
        if runs is None:
            runs = list(obj.sync_runs.filter(status__in=SyncProgress.ACTIVE_STATUSES))
        if not runs:
            return "-"
        return format_html_join(
            mark_safe("<br>"),
            "{} {}",
            ((run.get_sync_type_display(), progress_bar(run.percentage())) for run in runs),
        )

    @admin.display(description="mirror")
    def mirror(self, obj: User) -> str:
        if obj.initial_sync_completed:
            return "complete"
        return "labels only" if obj.label_sync_completed else "not synced yet"

    @admin.display(description="last full sync")
    def last_full_sync(self, obj: User) -> str:
        return _ago(obj.last_full_sync_at)

    @admin.display(description="push")
    def push(self, obj: User) -> str:
        """Gmail push: on, off, or failed with the reason (the user is polled then)."""
        return obj.push_summary

    @admin.display(description="last incremental")
    def last_incremental_sync(self, obj: User) -> str:
        return _ago(obj.last_incremental_sync_at)

    @admin.display(description="Google access")
    def google_access(self, obj: User) -> str:
        """Trouble looks like trouble: a refused token is a red badge, not a tick."""
        if obj.gmail_auth_error:
            return format_html(
                '<span class="badge badge-trouble" title="{}">Needs sign-in</span>',
                obj.gmail_auth_error,
            )
        return "ok"

    # --- Actions ----------------------------------------------------------------

    def _start(self, request, queryset, run_type: str, start, description: str) -> None:
        """Call `start` for each user; a run that was already active before counts as
        skipped (the start functions return it instead of starting a second one)."""
        users = list(queryset)
        already_active = set(
            SyncProgress.objects.filter(
                user__in=users, status__in=SyncProgress.ACTIVE_STATUSES
            ).values_list("pk", flat=True)
        )
        queued = skipped = other_type = 0
        for user in users:
            run = start(user)
            if run.pk in already_active:
                skipped += 1
                continue
            queued += 1
            other_type += run.sync_type != run_type
        # start_incremental_sync starts an initial sync for anyone without a full one.
        note = f" ({other_type} as initial sync: no full sync yet)" if other_type else ""
        self.message_user(
            request,
            f"{description}: queued {queued} user{'s' if queued != 1 else ''}{note}, "
            f"skipped {skipped} already running.",
            messages.SUCCESS if queued else messages.WARNING,
        )

    @admin.action(description="Run initial sync")
    def run_initial_sync(self, request, queryset):
        self._start(request, queryset, RUN_TYPES.INITIAL, sync.start_initial_sync, "Initial sync")

    @admin.action(description="Run incremental sync")
    def run_incremental_sync(self, request, queryset):
        self._start(
            request,
            queryset,
            RUN_TYPES.INCREMENTAL,
            sync.start_incremental_sync,
            "Incremental sync",
        )

    @admin.action(description="Sync labels")
    def run_label_sync(self, request, queryset):
        self._start(request, queryset, RUN_TYPES.LABELS, sync.start_label_sync, "Label sync")

    @admin.action(description="Run health check (compare with Gmail, repair drift)")
    def run_health_check(self, request, queryset):
        self._start(request, queryset, RUN_TYPES.HEALTH, sync.start_health_check, "Health check")

    @admin.action(description="Reset sync state")
    def reset_sync_state(self, request, queryset):
        """Like Django's delete action: a confirmation page first, then the reset."""
        if request.POST.get("post") == "yes":
            count = 0
            for user in queryset:
                sync.reset_sync_state(user)
                count += 1
            self.message_user(
                request,
                f"Reset the sync state of {count} user{'s' if count != 1 else ''}: active runs "
                "failed, history id and flags cleared, messages kept.",
                messages.SUCCESS,
            )
            return None
        users = list(queryset.order_by("email"))
        context = {
            **self.admin_site.each_context(request),
            "title": "Reset sync state?",
            "user_count": len(users),
            "subtitle": None,
            "opts": self.model._meta,
            "app_label": self.model._meta.app_label,
            "queryset": users,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action_name": "reset_sync_state",
            "media": self.media,
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(
            request, "admin/accounts/user/reset_sync_confirmation.html", context
        )
