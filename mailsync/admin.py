from django.contrib import admin

from .models import EmailMessage, Label, SyncProgress


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "type", "gmail_id", "messages_total", "messages_unread")
    list_filter = ("type", "user")
    search_fields = ("name", "gmail_id", "user__email")
    list_select_related = ("user",)


@admin.register(EmailMessage)
class EmailMessageAdmin(admin.ModelAdmin):
    list_display = ("subject", "sender", "user", "internal_date", "gmail_id")
    list_filter = ("user",)
    search_fields = ("subject", "sender", "gmail_id", "thread_id")
    list_select_related = ("user",)
    raw_id_fields = ("user",)
    filter_horizontal = ("labels",)


@admin.register(SyncProgress)
class SyncProgressAdmin(admin.ModelAdmin):
    list_display = ("user", "sync_type", "status", "num_processed", "num_total", "started_at")
    list_filter = ("status", "sync_type")
    search_fields = ("user__email", "error_message")
    list_select_related = ("user",)
