from django.contrib.admin.apps import AdminConfig


class OperatorAdminConfig(AdminConfig):
    """django.contrib.admin, with the operator console as its default site."""

    default_site = "config.admin_site.OperatorAdminSite"
