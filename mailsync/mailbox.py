"""The queries behind the mailbox pages: labels, message lists, threads.

Every list is newest first, paginated by keyset on (internal_date, id), so a page deep
in a 100,000-message mailbox costs what the first one does; every query is bounded by
one user's data and served by an index (EmailMessage.Meta.indexes, the search index).
Only fetched messages are shown: a listed message without its content has nothing to
show yet. bench/bench_mailbox.py measures all of it.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from email.utils import getaddresses, parseaddr

from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL

from .models import EmailMessage, Label, MessageLabel
from .status import label_display_name

PAGE_SIZE = 50
# A label page first looks at the newest WINDOW messages past the cursor (a bounded
# walk down the date index) and keeps those with the label: enough for any label that
# is not rare there. Otherwise a small label's rows are sorted here, and a bigger one's
# page comes from a walk down the date index (index-only) against a hash of the label's
# message ids. Probing each message's labels one by one instead (what the planners
# choose for a plain EXISTS or IN) passed the whole mailbox for a label holding only old
# mail: 260 ms at 100,000 messages on PostgreSQL.
WINDOW = 500
SMALL_LABEL = 2000
# The newest messages of a thread shown together; automated threads can be huge.
THREAD_LIMIT = 100
# The columns a list row needs: never the bodies.
LIST_FIELDS = (
    "id",
    "user_id",
    "gmail_id",
    "thread_id",
    "internal_date",
    "subject",
    "sender",
    "snippet",
    "attachments",
)

UNREAD, STARRED = "UNREAD", "STARRED"
# Gmail's order for the system labels in its sidebar. UNREAD is a state (bold rows),
# not a place; the categories follow the user's labels' system block.
_SYSTEM_ORDER = (
    "INBOX",
    STARRED,
    "IMPORTANT",
    "CHAT",
    "SENT",
    "DRAFT",
    "SPAM",
    "TRASH",
    "CATEGORY_PERSONAL",
    "CATEGORY_SOCIAL",
    "CATEGORY_PROMOTIONS",
    "CATEGORY_UPDATES",
    "CATEGORY_FORUMS",
)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{3,8}$")
_CURSOR = re.compile(r"^(-?\d{1,20})\.(\d{1,19})$")


# --- Keyset pagination ---------------------------------------------------------------
class BadCursor(ValueError):
    """A page cursor that this application did not write."""


@dataclass(frozen=True)
class Cursor:
    """The last row of a page: the next page starts strictly after it."""

    internal_date: dt.datetime
    pk: int

    def __str__(self) -> str:
        micros = (self.internal_date - _EPOCH) // dt.timedelta(microseconds=1)
        return f"{micros}.{self.pk}"

    @classmethod
    def parse(cls, text: str | None) -> Cursor | None:
        if not text:
            return None
        match = _CURSOR.match(text)
        if not match:
            raise BadCursor(text)
        try:
            date = _EPOCH + dt.timedelta(microseconds=int(match[1]))
        except OverflowError as exc:
            raise BadCursor(text) from exc
        return cls(date, int(match[2]))

    @classmethod
    def after(cls, message: EmailMessage) -> Cursor:
        return cls(message.internal_date, message.pk)


@dataclass
class Page:
    messages: list[EmailMessage]
    next_cursor: Cursor | None


def fetched_messages(user) -> QuerySet[EmailMessage]:
    return EmailMessage.objects.filter(user=user, internal_date__isnull=False)


def _older_than(messages: QuerySet[EmailMessage], cursor: Cursor | None) -> QuerySet:
    if cursor is None:
        return messages
    # The first condition is the index range; the second breaks ties on the date.
    return messages.filter(internal_date__lte=cursor.internal_date).filter(
        Q(internal_date__lt=cursor.internal_date)
        | Q(internal_date=cursor.internal_date, pk__lt=cursor.pk)
    )


def newest_first(
    messages: QuerySet[EmailMessage], cursor: Cursor | None, size: int = PAGE_SIZE
) -> Page:
    """One page of `messages`, newest first, strictly older than `cursor`."""
    rows = list(
        _older_than(messages, cursor)
        .only(*LIST_FIELDS)
        .order_by("-internal_date", "-pk")[: size + 1]
    )
    next_cursor = Cursor.after(rows[size - 1]) if len(rows) > size else None
    return Page(rows[:size], next_cursor)


def label_page(user, label: Label, cursor: Cursor | None, size: int = PAGE_SIZE) -> Page:
    """One page of the messages that carry `label` (see WINDOW for how)."""
    if label.messages_total is None or label.messages_total > SMALL_LABEL:
        keys = newest_keys(fetched_messages(user), cursor, WINDOW)
        linked = set(
            MessageLabel.objects.filter(
                label=label, message_id__in=[pk for _, pk in keys]
            ).values_list("message_id", flat=True)
        )
        hits = [key for key in keys if key[1] in linked]
        if len(hits) > size or len(keys) < WINDOW:
            return page_of_keys(user, hits, size)
    links = MessageLabel.objects.filter(label=label).values_list("message_id", flat=True)
    if len(links[: SMALL_LABEL + 1]) > SMALL_LABEL:
        return _walk_with_hashed_label(user, label, cursor, size)
    keys = _sorted_label_keys(user, label)
    if cursor is not None:
        keys = [key for key in keys if key < (cursor.internal_date, cursor.pk)]
    return page_of_keys(user, keys, size)


def _sorted_label_keys(user, label: Label) -> list[tuple[dt.datetime, int]]:
    """(internal_date, pk) of the label's fetched messages, newest first. A join from
    the label's links with no filter on the message's columns, so that no planner
    walks the mailbox for it."""
    found = MessageLabel.objects.filter(label=label).values_list(
        "message__internal_date", "message_id", "message__user_id"
    )
    return sorted(
        ((date, pk) for date, pk, owner in found if owner == user.pk and date is not None),
        reverse=True,
    )


def _walk_with_hashed_label(user, label: Label, cursor: Cursor | None, size: int) -> Page:
    """Walk the user's date index (index-only) for the ids of `label`'s messages. The
    label's ids are a MATERIALIZED CTE: it has no index, so both planners hash it (an
    ephemeral index on SQLite, a hash semi-join on PostgreSQL) rather than probe the
    label links once per message walked."""
    table = connection.ops.quote_name(MessageLabel._meta.db_table)
    ordered = (
        _older_than(fetched_messages(user), cursor)
        .filter(pk__in=RawSQL("SELECT message_id FROM label_ids", ()))
        .order_by("-internal_date", "-pk")
        .values_list("pk", flat=True)[: size + 1]
    )
    sql, params = ordered.query.sql_with_params()
    with connection.cursor() as cursor_:
        cursor_.execute(
            f"WITH label_ids AS MATERIALIZED (SELECT message_id FROM {table} "  # noqa: S608
            f"WHERE label_id = %s) {sql}",
            (label.pk, *params),
        )
        hits = [pk for (pk,) in cursor_.fetchall()]
    rows = _rows_by_pk(user, hits[:size])
    return Page(rows, Cursor.after(rows[-1]) if len(hits) > size and rows else None)


def page_of_keys(user, keys: list[tuple[dt.datetime, int]], size: int = PAGE_SIZE) -> Page:
    """The page whose (internal_date, pk) keys, newest first and after the cursor, are
    given: its rows, fetched by primary key."""
    rows = _rows_by_pk(user, [pk for _, pk in keys[:size]])
    next_cursor = Cursor(*keys[size - 1]) if len(keys) > size else None
    return Page(rows, next_cursor)


def _rows_by_pk(user, pks: list[int]) -> list[EmailMessage]:
    """The list rows of these messages, in this order. By primary key alone (the owner
    is checked here): with the user and date in the WHERE too, SQLite walks the user's
    whole date index instead of looking the rows up."""
    found = EmailMessage.objects.filter(pk__in=pks).only(*LIST_FIELDS)
    by_pk = {m.pk: m for m in found if m.user_id == user.pk and m.internal_date is not None}
    return [by_pk[pk] for pk in pks if pk in by_pk]


def newest_keys(messages: QuerySet[EmailMessage], cursor: Cursor | None, limit: int) -> list:
    """The (internal_date, pk) of the newest `limit` of `messages` after `cursor`."""
    ordered = _older_than(messages, cursor).order_by("-internal_date", "-pk")
    return list(ordered.values_list("internal_date", "pk")[:limit])


# --- Threads -------------------------------------------------------------------------
def thread_messages(user, thread_id: str, limit: int = THREAD_LIMIT) -> tuple[list, bool]:
    """The newest `limit` fetched messages of a thread, oldest first, and whether
    older ones were left out."""
    rows = list(
        fetched_messages(user)
        .filter(thread_id=thread_id)
        .only(*LIST_FIELDS)
        .order_by("-internal_date", "-pk")[: limit + 1]
    )
    return rows[:limit][::-1], len(rows) > limit


# --- Labels --------------------------------------------------------------------------
@dataclass
class SidebarLabel:
    label: Label
    name: str
    group: str  # "system", "category" or "user"

    @property
    def color(self) -> str:
        """The label's colour if it is a plain hex colour (it goes into a style)."""
        color = self.label.background_color
        return color if _HEX_COLOR.match(color) else ""


@dataclass
class MailboxLabels:
    """A mailbox's labels, read once per page."""

    shown: list[SidebarLabel]  # the sidebar, in Gmail's order
    by_gmail_id: dict[str, Label]  # every label (UNREAD and hidden ones too)
    names: dict[int, str]  # pk -> what the user reads

    def has(self, label_pks: set[int], gmail_id: str) -> bool:
        label = self.by_gmail_id.get(gmail_id)
        return label is not None and label.pk in label_pks

    def user_labels(self, label_pks: set[int]) -> list[SidebarLabel]:
        return [s for s in self.shown if s.group == "user" and s.label.pk in label_pks]


def mailbox_labels(user) -> MailboxLabels:
    """The labels a mailbox shows, in Gmail's order: system, categories, the user's by
    name. Hidden ones (labelHide) and UNREAD (shown as bold rows) are left out."""
    position = {gmail_id: n for n, gmail_id in enumerate(_SYSTEM_ORDER)}
    groups = ("system", "category", "user")
    labels = list(Label.objects.filter(user=user))
    shown = []
    for label in labels:
        if label.gmail_id == UNREAD or label.label_list_visibility == "labelHide":
            continue
        if label.type == Label.Type.SYSTEM:
            group = "category" if label.gmail_id.startswith("CATEGORY_") else "system"
        else:
            group = "user"
        shown.append(SidebarLabel(label, label_display_name(label), group))
    shown.sort(
        key=lambda s: (
            groups.index(s.group),
            position.get(s.label.gmail_id, len(position)),
            s.name.lower(),
        )
    )
    return MailboxLabels(
        shown=shown,
        by_gmail_id={label.gmail_id: label for label in labels},
        names={label.pk: label_display_name(label) for label in labels},
    )


def label_ids_of(message_pks: list[int]) -> dict[int, set[int]]:
    """Label pks of each message, in one query."""
    links: dict[int, set[int]] = {pk: set() for pk in message_pks}
    for message_pk, label_pk in MessageLabel.objects.filter(message_id__in=message_pks).values_list(
        "message_id", "label_id"
    ):
        links[message_pk].add(label_pk)
    return links


# --- Display helpers -----------------------------------------------------------------
def display_name(address_header: str) -> str:
    """ "Alice Smith <alice@example.com>" -> "Alice Smith"; a bare address stays."""
    name, address = parseaddr(address_header)
    return name or address or address_header


def display_addresses(address_header: str) -> str:
    """Every name and address of a header, unquoted: '"Smith, Alice" <a@x.org>' reads
    'Smith, Alice <a@x.org>'. The header itself if it does not parse."""
    shown = [
        f"{name} <{address}>" if name and address else name or address
        for name, address in getaddresses([address_header])
        if name or address
    ]
    return ", ".join(shown) or address_header


# --- Attachments ---------------------------------------------------------------------
_MIME_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_UNSAFE_FILENAME = re.compile(r"[\x00-\x1f\x7f/\\]+")


@dataclass(frozen=True)
class Attachment:
    index: int
    filename: str
    mime_type: str
    size: int | None
    attachment_id: str

    @property
    def downloadable(self) -> bool:
        """Gmail serves a part through attachments.get only if it gave it an id (format
        "full"); parts that came inline or in a "raw" message have none."""
        return bool(self.attachment_id)

    @property
    def download_name(self) -> str:
        name = _UNSAFE_FILENAME.sub("_", self.filename).strip(". ")
        return name[:200] or f"attachment-{self.index + 1}"

    @property
    def content_type(self) -> str:
        """The stored type if it looks like one, else a byte stream."""
        mime_type = self.mime_type.strip().lower()
        return mime_type if _MIME_TYPE.match(mime_type) else "application/octet-stream"


def attachments_of(message: EmailMessage) -> list[Attachment]:
    """The message's attachment metadata (as mailsync.parsing stored it), numbered."""
    found = []
    for index, item in enumerate(message.attachments or []):
        if not isinstance(item, dict):
            continue
        size = item.get("size")
        found.append(
            Attachment(
                index=index,
                filename=str(item.get("filename") or ""),
                mime_type=str(item.get("mime_type") or ""),
                size=size if isinstance(size, int) and not isinstance(size, bool) else None,
                attachment_id=str(item.get("attachment_id") or ""),
            )
        )
    return found
