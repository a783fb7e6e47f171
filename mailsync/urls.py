from django.urls import path

from . import views

app_name = "mailsync"

urlpatterns = [
    path("", views.home, name="home"),
]
