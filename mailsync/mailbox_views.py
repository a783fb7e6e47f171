"""The mailbox: the owner reads and searches the mirror. Read-only: nothing here writes
to Gmail (opening a message does not mark it read there).

Thin views over mailsync.mailbox (lists, threads), mailsync.search and, for an
attachment's bytes, mailsync.gmail. Another user's message, thread or attachment is a
404, exactly like one that does not exist.
"""

from __future__ import annotations

import io
import logging
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET

from . import gmail, mailbox, search, sync
from .html_sanitizer import sandboxed_frame
from .models import EmailMessage
from .status import label_display_name

log = logging.getLogger(__name__)

# A web request must not wait long for the user's Gmail quota (the sync shares it).
DOWNLOAD_MAX_WAIT_S = 10
INBOX = "INBOX"


@login_required
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    return _label_list(request, INBOX, missing_ok=True)


@login_required
@require_GET
def label(request: HttpRequest, label_id: str) -> HttpResponse:
    return _label_list(request, label_id)


@login_required
@require_GET
def all_mail(request: HttpRequest) -> HttpResponse:
    cursor = _cursor(request)
    if cursor is False:
        return _first_page(request)
    page = mailbox.newest_first(mailbox.fetched_messages(request.user), cursor)
    return _render_list(request, page, title="All mail", current="all")


@login_required
@require_GET
def search_view(request: HttpRequest) -> HttpResponse:
    query = search.normalize_query(request.GET.get("q", ""))
    if not query:
        return redirect("mailsync:mailbox")
    cursor = _cursor(request)
    if cursor is False:
        return _first_page(request, q=query)
    page = search.search_page(request.user, query, cursor)
    return _render_list(request, page, title=f"Search: {query}", current="search", query=query)


@login_required
@require_GET
def message(request: HttpRequest, pk: int) -> HttpResponse:
    shown = get_object_or_404(mailbox.fetched_messages(request.user).defer("search_vector"), pk=pk)
    return _render_thread(request, shown)


@login_required
@require_GET
def thread(request: HttpRequest, thread_id: str) -> HttpResponse:
    """A whole conversation, its newest message open."""
    newest = (
        mailbox.fetched_messages(request.user)
        .filter(thread_id=thread_id)
        .defer("search_vector")
        .order_by("-internal_date", "-pk")
        .first()
    )
    if newest is None:
        raise Http404("No such thread.")
    return _render_thread(request, newest)


@login_required
@require_GET
def attachment(request: HttpRequest, pk: int, index: int) -> HttpResponse:
    """Download one attachment from Gmail (attachments.get), never shown inline."""
    owner = get_object_or_404(
        mailbox.fetched_messages(request.user).only("gmail_id", "attachments", "user"), pk=pk
    )
    found = [a for a in mailbox.attachments_of(owner) if a.index == index]
    if not found or not found[0].downloadable:
        raise Http404("No such attachment, or Gmail offers it only inside the message.")
    item = found[0]
    back = reverse("mailsync:message", args=[owner.pk])
    try:
        client = gmail.GmailClient(request.user.pk, max_wait_s=DOWNLOAD_MAX_WAIT_S)
        data = client.get_attachment(owner.gmail_id, item.attachment_id)
    except gmail.NotFound as exc:
        raise Http404("Gmail no longer has this attachment.") from exc
    except gmail.AccessRevoked as exc:
        sync.access_revoked(request.user.pk, str(exc))
        messages.error(request, "Google refused access: sign in with Google again to download.")
        return redirect(back)
    except (gmail.RateLimited, gmail.TransientError, gmail.DailyQuotaExhausted):
        messages.warning(request, "Gmail is busy right now: try the download again in a minute.")
        return redirect(back)
    except gmail.GmailError as exc:
        log.warning("attachment %s of message %s: %s", index, owner.pk, exc)
        messages.error(request, f"Gmail could not send this attachment: {exc}")
        return redirect(back)
    response = FileResponse(
        io.BytesIO(data),
        as_attachment=True,
        filename=item.download_name,
        content_type=item.content_type,
    )
    # Attacker-chosen bytes and type: a download, never a page of our origin.
    response["Content-Security-Policy"] = "sandbox"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


# --- Helpers -------------------------------------------------------------------------
def _cursor(request: HttpRequest):
    """The page cursor of the request, None for the first page, False if malformed."""
    try:
        return mailbox.Cursor.parse(request.GET.get("before"))
    except mailbox.BadCursor:
        return False


def _first_page(request: HttpRequest, **params: str) -> HttpResponse:
    messages.warning(request, "That page link was not valid: here is the first page.")
    return redirect(request.path + (f"?{urlencode(params)}" if params else ""))


def _label_list(request: HttpRequest, label_id: str, missing_ok: bool = False) -> HttpResponse:
    labels = mailbox.mailbox_labels(request.user)
    shown = labels.by_gmail_id.get(label_id)
    if shown is None and not missing_ok:
        raise Http404("No such label.")
    cursor = _cursor(request)
    if cursor is False:
        return _first_page(request)
    if shown is None:  # the inbox before the first sync read the labels
        page = mailbox.Page([], None)
    else:
        page = mailbox.label_page(request.user, shown, cursor)
    title = label_display_name(shown) if shown else "Inbox"
    return _render_list(request, page, title=title, current=label_id, labels=labels)


def _render_list(
    request: HttpRequest,
    page: mailbox.Page,
    *,
    title: str,
    current: str,
    query: str = "",
    labels: mailbox.MailboxLabels | None = None,
) -> HttpResponse:
    labels = labels or mailbox.mailbox_labels(request.user)
    links = mailbox.label_ids_of([m.pk for m in page.messages])
    rows = [
        {
            "message": m,
            "sender": mailbox.display_name(m.sender),
            "unread": labels.has(links[m.pk], mailbox.UNREAD),
            "starred": labels.has(links[m.pk], mailbox.STARRED),
            "labels": labels.user_labels(links[m.pk]),
        }
        for m in page.messages
    ]
    params = {"q": query} if query else {}
    next_url = ""
    if page.next_cursor:
        next_url = f"{request.path}?{urlencode({**params, 'before': str(page.next_cursor)})}"
    return render(
        request,
        "mailsync/mail_list.html",
        {
            "title": title,
            "rows": rows,
            "next_url": next_url,
            "first_url": request.path + (f"?{urlencode(params)}" if params else ""),
            "is_first_page": "before" not in request.GET,
            "labels": labels,
            "current": current,
            "query": query,
        },
    )


def _render_thread(request: HttpRequest, shown: EmailMessage) -> HttpResponse:
    if shown.thread_id:
        conversation, truncated = mailbox.thread_messages(request.user, shown.thread_id)
    else:
        conversation, truncated = [shown], False
    if all(m.pk != shown.pk for m in conversation):  # older than the newest THREAD_LIMIT
        conversation, truncated = [shown], True
    labels = mailbox.mailbox_labels(request.user)
    links = mailbox.label_ids_of([m.pk for m in conversation])
    return render(
        request,
        "mailsync/mail_thread.html",
        {
            "title": shown.subject or "(no subject)",
            "shown": shown,
            "conversation": [
                {
                    "message": m,
                    "sender": mailbox.display_name(m.sender),
                    "unread": labels.has(links[m.pk], mailbox.UNREAD),
                }
                for m in conversation
            ],
            "truncated": truncated,
            "thread_url": (
                reverse("mailsync:thread", args=[shown.thread_id]) if shown.thread_id else ""
            ),
            "label_names": sorted(
                labels.names[pk]
                for pk in links.get(shown.pk, ())
                if pk in labels.names and not labels.has({pk}, mailbox.UNREAD)
            ),
            "sender_address": mailbox.display_addresses(shown.sender),
            "recipients": mailbox.display_addresses(shown.to),
            "copies": mailbox.display_addresses(shown.cc),
            "attachments": mailbox.attachments_of(shown),
            "body_frame": (
                sandboxed_frame(shown.body_html, title="Message (sanitized HTML)")
                if shown.body_html
                else ""
            ),
            "labels": labels,
            "current": "",
        },
    )
