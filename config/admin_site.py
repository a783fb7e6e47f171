"""The operator console's admin site: what an operator looks at first comes first."""

from __future__ import annotations

from django.contrib import admin

# Apps in this order, then the others alphabetically; within an app, these models first.
APP_ORDER = ("accounts", "mailsync", "django_q")
MODEL_ORDER = ("User", "SyncProgress", "EmailMessage", "Label")


class OperatorAdminSite(admin.AdminSite):
    site_header = "Gmail mirror — operator console"
    site_title = "Gmail mirror"
    index_title = "Operator console"
    # The navigation sidebar takes 300 px of every list; the index and the breadcrumbs
    # do its job, and the lists fit a 1280 px screen without it.
    enable_nav_sidebar = False

    def get_app_list(self, request, app_label=None):
        apps = super().get_app_list(request, app_label)

        def app_key(app: dict) -> tuple:
            label = app["app_label"]
            return (APP_ORDER.index(label) if label in APP_ORDER else len(APP_ORDER), app["name"])

        def model_key(model: dict) -> tuple:
            name = model["object_name"]
            return (
                MODEL_ORDER.index(name) if name in MODEL_ORDER else len(MODEL_ORDER),
                model["name"],
            )

        apps.sort(key=app_key)
        for app in apps:
            app["models"].sort(key=model_key)
        return apps
