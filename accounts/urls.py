from django.urls import path

from . import views

urlpatterns = [
    path("account/", views.account_settings, name="account_settings"),
    path("account/disconnect/", views.disconnect, name="account_disconnect_google"),
    path("account/delete/", views.delete_account, name="account_delete"),
]
