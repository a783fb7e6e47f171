"""The user's account page: disconnect Google, delete the account and its data."""

from __future__ import annotations

from allauth.socialaccount.models import SocialAccount
from django.contrib import messages
from django.contrib.auth import logout
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import deletion
from .disconnect import disconnect_google
from .models import GoogleToken


@login_required
@require_GET
def account_settings(request: HttpRequest) -> HttpResponse:
    user = request.user
    google = SocialAccount.objects.filter(user=user, provider="google").first()
    context = {
        "google_email": (google.extra_data.get("email") if google else "") or user.email,
        "connected": GoogleToken.objects.filter(account__user=user).exists(),
        "mirror_deletion_pending": user.data_deletion == deletion.MIRROR,
    }
    return render(request, "accounts/settings.html", context)


@login_required
@require_POST
def disconnect(request: HttpRequest) -> HttpResponse:
    choice = request.POST.get("mirror")
    if choice not in ("keep", "delete"):
        messages.error(request, "Choose whether to keep or delete the copy of your mailbox.")
        return redirect("account_settings")
    revoked = disconnect_google(request.user.pk)
    if choice == "delete":
        deletion.request_mirror_deletion(request.user)
    note = "" if revoked else " (Google did not confirm the revocation; it may already be gone)"
    kept = "kept" if choice == "keep" else "being deleted"
    messages.success(
        request,
        f"Google is disconnected{note}: syncing stopped and your mailbox copy is {kept}. "
        "Sign in with Google again to reconnect.",
    )
    return redirect("account_settings")


@login_required
@require_http_methods(["GET", "POST"])
def delete_account(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render(request, "accounts/delete_confirm.html")
    deletion.request_account_deletion(request.user)
    logout(request)
    messages.success(request, "Your account is signed out and is being deleted with all its data.")
    return redirect("account_login")
