from django.urls import path

from . import views

app_name = "mailsync"

urlpatterns = [
    path("", views.home, name="home"),
    path("status/", views.status, name="status"),
    path("sync/", views.sync_now, name="sync_now"),
    path("resync/", views.full_resync, name="full_resync"),
]
