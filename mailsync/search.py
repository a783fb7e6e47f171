"""Searching a mailbox: PostgreSQL full-text search, plain lookups elsewhere.

Each fetched message gets a weighted ``tsvector`` in ``EmailMessage.search_vector``,
built from what :func:`search_document` returns: the subject (weight A), the sender
(B), the recipients (C) and the first MAILSYNC_SEARCH_BODY_CHARS characters of the text
(D): the vector is most of a message's row, so the bound is a setting (see
bench/bench_storage.py and docs/scaling.md). It is
filled when a batch is stored (:func:`fill_search_vectors`, called by
``mailsync.sync.batches.store_messages``) and for older rows by
``manage.py fill_search_vectors``. The search never reads the body columns, so they
may be stored in any form.

The ``simple`` text search configuration is used on purpose: mail comes in every
language, and an English stemmer would mangle names and other languages' words.
Words match whole, as in Gmail ("invoice" finds "invoice", not "invoices").

On SQLite (the embedded default) there is no full-text search: each word of the
query must occur in the subject, the sender or the snippet (``icontains``), read from
a covering index (see :func:`search_page`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.conf import settings
from django.contrib.postgres.search import SearchQuery
from django.db import connection
from django.db.models import Q, QuerySet

from .html_sanitizer import html_to_text
from .mailbox import PAGE_SIZE, Cursor, Page, newest_first, newest_keys, page_of_keys
from .models import EmailMessage

CONFIG = "simple"
HEADER_CHARS = 2000
# Longer queries are cut: no one types more, and each word costs a LIKE on SQLite.
MAX_QUERY_CHARS = 200
MAX_LIKE_WORDS = 6
# Rows per UPDATE statement when filling vectors.
FILL_CHUNK = 500

_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_ADDRESS_PARTS = re.compile(r"[.+@_-]+")


def _with_address_parts(text: str) -> str:
    """``text`` plus the parts of each address in it: PostgreSQL's parser keeps
    ``alice.smith@example.com`` as one word, and people search for "alice" or
    "example"."""
    parts = [part for address in _ADDRESS.findall(text) for part in _ADDRESS_PARTS.split(address)]
    domains = [address.rsplit("@", 1)[1] for address in _ADDRESS.findall(text)]
    return " ".join([text, *parts, *domains])


def search_document(
    subject: str,
    sender: str,
    recipients: str,
    body_text: str,
    body_html: str = "",
    snippet: str = "",
) -> dict[str, str]:
    """The text behind each weight of a message's search vector.

    ``recipients`` is To and Cc together. Without a text body, the text of the HTML
    body is used, and without either (a message fetched as metadata) Gmail's snippet.
    Returns ``{"A": subject, "B": sender, "C": recipients, "D": body}``.
    """
    limit = settings.MAILSYNC_SEARCH_BODY_CHARS
    body = body_text or (html_to_text(body_html[: limit * 4]) if body_html and limit else "")
    body = body or snippet
    return {
        "A": subject[:HEADER_CHARS],
        "B": _with_address_parts(sender[:HEADER_CHARS]),
        "C": _with_address_parts(recipients[:HEADER_CHARS]),
        "D": body[:limit] if limit else "",
    }


def fill_search_vectors(message_pks: Iterable[int]) -> int:
    """Compute the search vector of these (fetched) messages; returns how many were
    written. Does nothing on databases without full-text search."""
    pks = list(message_pks)
    if connection.vendor != "postgresql" or not pks:
        return 0
    written = 0
    for start in range(0, len(pks), FILL_CHUNK):
        rows = EmailMessage.objects.filter(
            pk__in=pks[start : start + FILL_CHUNK], internal_date__isnull=False
        ).values_list("pk", "subject", "sender", "to", "cc", "body_text", "body_html", "snippet")
        documents = [
            (pk, search_document(subject, sender, f"{to} {cc}", text, html, snippet))
            for pk, subject, sender, to, cc, text, html, snippet in rows
        ]
        written += _write_vectors(documents)
    return written


def vector_expression(columns: str = "%s::text, %s::text, %s::text, %s::text") -> str:
    """The SQL that builds a search vector from the four texts of `search_document`
    (A, B, C, D, in that order): placeholders by default, or four column names."""
    texts = [text.strip() for text in columns.split(",")]
    return " || ".join(
        f"setweight(to_tsvector('{CONFIG}', {text}), '{weight}')"
        for weight, text in zip("ABCD", texts, strict=True)
    )


def _write_vectors(documents: list[tuple[int, dict[str, str]]]) -> int:
    if not documents:
        return 0
    table = connection.ops.quote_name(EmailMessage._meta.db_table)
    values = ", ".join(["(%s::bigint, %s::text, %s::text, %s::text, %s::text)"] * len(documents))
    params: list = []
    for pk, document in documents:
        params += [pk, document["A"], document["B"], document["C"], document["D"]]
    vector = vector_expression("v.a, v.b, v.c, v.d")
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} AS m SET search_vector = {vector} "  # noqa: S608 (no user input)
            f"FROM (VALUES {values}) AS v(id, a, b, c, d) WHERE m.id = v.id",
            params,
        )
        return cursor.rowcount


def normalize_query(text: str) -> str:
    return " ".join(text.split())[:MAX_QUERY_CHARS]


def matching_messages(user, text: str) -> QuerySet[EmailMessage]:
    """The user's fetched messages that match ``text`` (unordered). On PostgreSQL
    Gmail-like web search syntax works: ``"exact phrase"``, ``or``, ``-word``."""
    messages = EmailMessage.objects.filter(user=user, internal_date__isnull=False)
    text = normalize_query(text)
    if connection.vendor == "postgresql":
        return messages.filter(
            search_vector=SearchQuery(text, config=CONFIG, search_type="websearch")
        )
    for word in text.split()[:MAX_LIKE_WORDS]:
        messages = messages.filter(
            Q(subject__icontains=word) | Q(sender__icontains=word) | Q(snippet__icontains=word)
        )
    return messages


def search_page(user, text: str, cursor: Cursor | None, size: int = PAGE_SIZE) -> Page:
    """One page of the user's messages matching `text`, newest first.

    On SQLite the matching walks the covering index message_search_idx (user, date, id,
    subject, sender, snippet) for the keys alone, then reads the page's rows: reading
    every row the walk passes (bodies and all) cost five times more.
    """
    matching = matching_messages(user, text)
    if connection.vendor == "postgresql":
        return newest_first(matching, cursor, size)
    return page_of_keys(user, newest_keys(matching, cursor, size + 1), size)
