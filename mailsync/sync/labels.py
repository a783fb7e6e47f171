"""Labels: every label with its metadata and counters, and messages' label links."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from .. import counters, gmail
from ..models import Label, MessageLabel, SyncProgress
from .runs import report_end
from .steps import Step
from .writes import execute_binary

User = get_user_model()
Status = SyncProgress.Status


def import_labels(user_id: int, client: gmail.GmailClient) -> set[str]:
    """Mirror every label with its metadata and counters; delete labels that are gone
    (those a message still carries stay, marked "not listed": see `forget_unlisted`).

    Returns the label ids Gmail has now.
    """
    listed = client.list_labels()
    details: dict[str, dict] = {}
    ids = [label["id"] for label in listed]
    for start in range(0, len(ids), 100):
        details.update(client.get_labels(ids[start : start + 100]).found)
    now = timezone.now()
    with transaction.atomic():
        existing = {label.gmail_id: label for label in Label.objects.filter(user_id=user_id)}
        new, changed = [], []
        for item in listed:
            data = {**item, **details.get(item["id"], {})}
            label = existing.get(item["id"]) or Label(user_id=user_id, gmail_id=item["id"])
            _fill_label(label, data)
            if item["id"] in details:
                label.counts_stale, label.counts_refreshed_at = False, now
            label.not_listed = False
            (changed if label.pk else new).append(label)
        Label.objects.bulk_create(new, ignore_conflicts=True)
        Label.objects.bulk_update(changed, [*LABEL_FIELDS, *COUNT_STATE_FIELDS, "not_listed"])
        forget_unlisted(user_id, ids)
        counters.count_labels(user_id)
        User.objects.filter(pk=user_id).update(label_sync_completed=True)
    return set(ids)


LABEL_FIELDS = [
    "name",
    "type",
    "text_color",
    "background_color",
    "message_list_visibility",
    "label_list_visibility",
    "messages_total",
    "messages_unread",
    "threads_total",
    "threads_unread",
    "updated_at",
]


COUNT_STATE_FIELDS = ["counts_stale", "counts_refreshed_at"]
# The fields labels.list gives (no counters): what a rename or a recolouring changes.
LISTED_FIELDS = LABEL_FIELDS[:6]
COUNTERS_EVERY = dt.timedelta(hours=1)


def refresh_label_list(user_id: int, client: gmail.GmailClient) -> None:
    """labels.list (1 unit): creations, renames and deletions leave no history, so each
    incremental run looks. New labels are marked for their counters (labels.get);
    unchanged labels are not written."""
    listed = client.list_labels()
    ids = {item["id"] for item in listed}
    with transaction.atomic():
        existing = {label.gmail_id: label for label in Label.objects.filter(user_id=user_id)}
        new, changed = [], []
        for item in listed:
            label = existing.get(item["id"])
            if label is None:
                label = Label(user_id=user_id, gmail_id=item["id"], counts_stale=True)
                _fill_label(label, item)
                new.append(label)
                continue
            before = [getattr(label, name) for name in (*LISTED_FIELDS, "not_listed")]
            _fill_label(label, item)
            label.not_listed = False
            if [getattr(label, name) for name in (*LISTED_FIELDS, "not_listed")] != before:
                changed.append(label)
        # Labels already marked and still carried are not written again (no churn).
        gone = [gid for gid, label in existing.items() if gid not in ids]
        Label.objects.bulk_create(new, ignore_conflicts=True)
        Label.objects.bulk_update(changed, [*LISTED_FIELDS, "not_listed", "updated_at"])
        deleted = forget_unlisted(user_id, ids) if gone else 0
        if new or deleted:
            counters.count_labels(user_id)


def forget_unlisted(user_id: int, listed: Iterable[str]) -> int:
    """Labels Gmail no longer lists: deleted if no message carries them; kept and marked
    "not listed by Gmail" otherwise (lieer#48: messages carry label ids labels.list does
    not know; deleting the row would drop the links, and the next fetch would bring the
    label back). A deleted label's links go with the history that removes it, then the
    row. Returns how many rows were deleted."""
    unlisted = Label.objects.filter(user_id=user_id).exclude(gmail_id__in=list(listed))
    carried = Exists(MessageLabel.objects.filter(label_id=OuterRef("pk")))
    unlisted.filter(carried, not_listed=False).update(not_listed=True)
    deleted, _ = unlisted.exclude(carried).delete()
    return deleted


def refresh_label_counters(user_id: int, client: gmail.GmailClient, touched: set[str]) -> None:
    """labels.get for the labels applied history touched (and new ones), each at most
    once an hour; a touched label refreshed less than an hour ago stays marked and is
    refreshed by a later run (or the nightly health check)."""
    # labels.get answers 404 for a label Gmail does not list: not asked.
    labels = Label.objects.filter(user_id=user_id, not_listed=False)
    if touched:
        labels.filter(gmail_id__in=touched, counts_stale=False).update(counts_stale=True)
    now = timezone.now()
    due = list(
        labels.filter(counts_stale=True)
        .filter(
            Q(counts_refreshed_at__isnull=True) | Q(counts_refreshed_at__lt=now - COUNTERS_EVERY)
        )
        .values_list("gmail_id", flat=True)[:100]
    )
    if not due:
        return
    found = client.get_labels(due).found
    rows = {label.gmail_id: label for label in labels.filter(gmail_id__in=found)}
    for gmail_id, data in found.items():
        if gmail_id in rows:
            _fill_label(rows[gmail_id], {**data, "id": gmail_id})
            rows[gmail_id].counts_stale, rows[gmail_id].counts_refreshed_at = False, now
    Label.objects.bulk_update(list(rows.values()), [*LABEL_FIELDS, *COUNT_STATE_FIELDS])


def labels_in(records: list[dict]) -> set[str]:
    """The label ids a page of history records touches."""
    touched: set[str] = set()
    for record in records:
        for key in ("messagesAdded", "messagesDeleted"):
            for item in record.get(key, []):
                touched.update(item.get("message", {}).get("labelIds", []))
        for key in ("labelsAdded", "labelsRemoved"):
            for item in record.get(key, []):
                touched.update(item.get("labelIds", []))
    return touched


_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{3,8}")


def _color(value: object) -> str:
    # Colours end up in style attributes: only a plain hex colour is kept.
    return value if isinstance(value, str) and _HEX_COLOR.fullmatch(value) else ""


def _count(value: object) -> int | None:
    try:
        number = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if 0 <= number < 2**31 else None


def _fill_label(label: Label, data: dict) -> None:
    color = data.get("color") if isinstance(data.get("color"), dict) else {}
    label.name = str(data.get("name") or label.gmail_id).replace("\x00", "")[:1024]
    label.type = Label.Type.SYSTEM if data.get("type") == "system" else Label.Type.USER
    label.text_color = _color(color.get("textColor"))
    label.background_color = _color(color.get("backgroundColor"))
    label.message_list_visibility = str(data.get("messageListVisibility", ""))[:32]
    label.label_list_visibility = str(data.get("labelListVisibility", ""))[:32]
    for field, key in (
        ("messages_total", "messagesTotal"),
        ("messages_unread", "messagesUnread"),
        ("threads_total", "threadsTotal"),
        ("threads_unread", "threadsUnread"),
    ):
        if key in data:
            setattr(label, field, _count(data[key]))
    label.updated_at = timezone.now()


def sync_labels(user_id: int, run_id: int) -> list[Step]:
    """Stage: a label-only run."""
    if not SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).exists():
        return []
    SyncProgress.objects.filter(pk=run_id).update(status=Status.IN_PROGRESS)
    ids = import_labels(user_id, gmail.GmailClient(user_id))
    if SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).update(
        status=Status.COMPLETED,
        num_total=len(ids),
        num_processed=len(ids),
        completed_at=timezone.now(),
    ):
        report_end(user_id, run_id, SyncProgress.SyncType.LABELS, Status.COMPLETED)
    return []


def label_pks_for(user_id: int, gmail_ids: set[str]) -> dict[str, int]:
    """Label pks by Gmail id; a label we do not know yet gets a row marked "not listed".
    The labels.list of the next incremental run fills in a new label (and drops the
    mark); a label Gmail never lists keeps its row while messages carry it, so this
    happens once per label, not once per batch."""
    known = dict(
        Label.objects.filter(user_id=user_id, gmail_id__in=gmail_ids).values_list("gmail_id", "pk")
    )
    missing = gmail_ids - known.keys()
    if not missing:
        return known
    with transaction.atomic():
        Label.objects.bulk_create(
            [
                Label(
                    user_id=user_id,
                    gmail_id=gid,
                    name=gid,
                    type=Label.Type.USER if gid.startswith("Label_") else Label.Type.SYSTEM,
                    not_listed=True,
                    counts_stale=True,
                )
                for gid in missing
            ],
            ignore_conflicts=True,
        )
        known.update(
            Label.objects.filter(user_id=user_id, gmail_id__in=missing).values_list(
                "gmail_id", "pk"
            )
        )
        counters.count_labels(user_id)
    return known


def set_labels(message_labels: dict[int, Iterable[str]], label_pks: dict[str, int]) -> set[int]:
    """Give each message exactly these labels (Gmail ids); returns the messages whose
    labels changed. Messages whose links are already right are not touched."""
    wanted = {
        message_pk: {label_pks[gid] for gid in gids if gid in label_pks}
        for message_pk, gids in message_labels.items()
    }
    current: dict[int, set[int]] = {message_pk: set() for message_pk in wanted}
    for message_pk, label_pk in MessageLabel.objects.filter(message_id__in=wanted).values_list(
        "message_id", "label_id"
    ):
        current[message_pk].add(label_pk)
    changed = {pk for pk, labels in wanted.items() if labels != current[pk]}
    if not changed:
        return changed
    linked = [pk for pk in changed if current[pk]]  # a first fetch has no links yet
    if linked:
        MessageLabel.objects.filter(message_id__in=linked).delete()
    _insert_links([(pk, label_pk) for pk in changed for label_pk in sorted(wanted[pk])])
    return changed


def _insert_links(links: list[tuple[int, int]]) -> None:
    """One INSERT for the links (bulk_create's per-object work cost ~40 % of storing a
    batch's links); a link that exists already is kept."""
    if not links:
        return
    quote = connection.ops.quote_name
    table = quote(MessageLabel._meta.db_table)
    now = MessageLabel._meta.get_field("linked_at").get_db_prep_save(timezone.now(), connection)
    columns = ", ".join(quote(c) for c in ("message_id", "label_id", "linked_at"))
    if connection.vendor == "postgresql":  # two arrays, sent in binary (writes.py)
        messages, labels = (list(column) for column in zip(*links, strict=True))
        execute_binary(
            f"INSERT INTO {table} ({columns}) SELECT link.*, %b FROM "  # noqa: S608
            "unnest(%b::bigint[], %b::bigint[]) AS link ON CONFLICT DO NOTHING",
            [now, messages, labels],
        )
        return
    values = ", ".join(["(%s, %s, %s)"] * len(links))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT DO NOTHING",  # noqa: S608
            [value for message_pk, label_pk in links for value in (message_pk, label_pk, now)],
        )
