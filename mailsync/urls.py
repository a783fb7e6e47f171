from django.urls import path

from . import mailbox_views, push, views

app_name = "mailsync"

urlpatterns = [
    path("", views.home, name="home"),
    path("status/", views.status, name="status"),
    path("sync/", views.sync_now, name="sync_now"),
    path("resync/", views.full_resync, name="full_resync"),
    # Gmail push notifications from Cloud Pub/Sub (authenticated by its OIDC token).
    path("gmail/push/", push.push_view, name="gmail_push"),
    # The mailbox (read-only).
    path("mail/", mailbox_views.inbox, name="mailbox"),
    path("mail/all/", mailbox_views.all_mail, name="all_mail"),
    path("mail/search/", mailbox_views.search_view, name="search"),
    path("mail/label/<str:label_id>/", mailbox_views.label, name="label"),
    path("mail/thread/<str:thread_id>/", mailbox_views.thread, name="thread"),
    path("mail/message/<int:pk>/", mailbox_views.message, name="message"),
    path(
        "mail/message/<int:pk>/attachments/<int:index>/",
        mailbox_views.attachment,
        name="attachment",
    ),
]
