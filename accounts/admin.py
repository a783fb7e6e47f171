from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin

from .models import User


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    list_display = (
        "email",
        "username",
        "label_sync_completed",
        "initial_sync_completed",
        "last_full_sync_at",
        "last_incremental_sync_at",
    )
    list_filter = ("initial_sync_completed", "label_sync_completed", "is_staff", "is_active")
    search_fields = ("email", "username", "first_name", "last_name")
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
                )
            },
        ),
    )
