"""Labels: every label with its metadata and counters, and messages' label links."""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from .. import counters, gmail
from ..models import Label, MessageLabel, SyncProgress
from .runs import report_end, start_label_sync
from .steps import Step

User = get_user_model()
Status = SyncProgress.Status


def import_labels(user_id: int, client: gmail.GmailClient) -> set[str]:
    """Mirror every label with its metadata and counters; delete labels that are gone.

    Returns the label ids Gmail has now.
    """
    listed = client.list_labels()
    details: dict[str, dict] = {}
    ids = [label["id"] for label in listed]
    for start in range(0, len(ids), 100):
        details.update(client.get_labels(ids[start : start + 100]).found)
    with transaction.atomic():
        existing = {label.gmail_id: label for label in Label.objects.filter(user_id=user_id)}
        new, changed = [], []
        for item in listed:
            data = {**item, **details.get(item["id"], {})}
            label = existing.get(item["id"]) or Label(user_id=user_id, gmail_id=item["id"])
            _fill_label(label, data)
            (changed if label.pk else new).append(label)
        Label.objects.bulk_create(new, ignore_conflicts=True)
        Label.objects.bulk_update(changed, LABEL_FIELDS)
        Label.objects.filter(user_id=user_id).exclude(gmail_id__in=ids).delete()
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
    """Label pks by Gmail id; a label we do not know yet gets a placeholder row and a
    label sync is started to fill it in."""
    known = dict(
        Label.objects.filter(user_id=user_id, gmail_id__in=gmail_ids).values_list("gmail_id", "pk")
    )
    missing = gmail_ids - known.keys()
    if missing:
        Label.objects.bulk_create(
            [
                Label(
                    user_id=user_id,
                    gmail_id=gid,
                    name=gid,
                    type=Label.Type.USER if gid.startswith("Label_") else Label.Type.SYSTEM,
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
        start_label_sync(User(pk=user_id))
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
    values = ", ".join(["(%s, %s, %s)"] * len(links))
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({columns}) VALUES {values} ON CONFLICT DO NOTHING",  # noqa: S608
            [value for message_pk, label_pk in links for value in (message_pk, label_pk, now)],
        )
