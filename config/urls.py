from django.contrib import admin
from django.urls import include, path

from mailsync import ops_views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", ops_views.metrics_view, name="metrics"),
    path("health/", ops_views.health_view, name="health"),
    path("accounts/", include("allauth.urls")),
    path("", include("accounts.urls")),
    path("", include("mailsync.urls")),
]
