"""The mailbox owner's pages: progress, its polled status, and the sync buttons."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from . import sync
from .status import mailbox_status, needs_reauth, run_title

# Fragment name -> partial: the page includes the same partials, so a poll re-renders
# exactly what the server rendered first.
FRAGMENTS = {
    "alerts": "mailsync/_alerts.html",
    "progress": "mailsync/_progress.html",
    "stages": "mailsync/_stages.html",
    "labels": "mailsync/_labels.html",
}


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "mailsync/home.html", {"status": mailbox_status(request.user)})


@login_required
@require_GET
def status(request: HttpRequest) -> JsonResponse:
    data = mailbox_status(request.user)
    context = {"status": data}
    data["html"] = {
        name: render_to_string(template, context, request=request)
        for name, template in FRAGMENTS.items()
    }
    response = JsonResponse(data)
    response["Cache-Control"] = "no-store"
    return response


def _refuse_without_google(request: HttpRequest) -> bool:
    if needs_reauth(request.user):
        messages.error(
            request, "Google access was revoked or expired: sign in with Google again first."
        )
        return True
    return False


@login_required
@require_POST
def sync_now(request: HttpRequest) -> HttpResponse:
    if _refuse_without_google(request):
        return redirect("mailsync:home")
    running = set(sync.active_runs(request.user).values_list("pk", flat=True))
    run = sync.start_incremental_sync(request.user)
    if run.pk in running:
        messages.info(request, f"Your {run_title(run).lower()} is already running.")
    elif run.sync_type == run.SyncType.INITIAL and run.resync:
        messages.success(
            request, "Full resync started: only what the mirror is missing is downloaded."
        )
    elif run.sync_type == run.SyncType.INITIAL:
        messages.success(request, "Full sync started: your mailbox is being copied.")
    else:
        messages.success(request, "Sync started: fetching the changes since the last one.")
    return redirect("mailsync:home")


@login_required
@require_http_methods(["GET", "POST"])
def full_resync(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return render(
            request, "mailsync/full_resync_confirm.html", {"status": mailbox_status(request.user)}
        )
    if _refuse_without_google(request):
        return redirect("mailsync:home")
    sync.reset_sync_state(request.user)
    sync.start_initial_sync(request.user)
    messages.success(
        request,
        "Full resync started: every message is listed again. "
        "Messages already copied stay visible meanwhile.",
    )
    return redirect("mailsync:home")
