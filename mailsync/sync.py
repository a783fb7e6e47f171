"""The sync engine: plain, bounded, re-runnable stages.

Each stage does one step for one user (read the profile and labels, list one page
of ids, fetch one batch of messages, apply one incremental sync) and returns the
steps that should follow. Django-Q2 tasks (mailsync/tasks.py) run a stage and
enqueue what it returns; `run_inline` runs the same stages in this process. The
database, not the broker, holds what remains to do: unfetched messages are rows
with `internal_date` NULL, the listing resumes from the run's saved page token, so
any step may run twice, or be lost and re-created by the watchdog, harmlessly.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import gmail
from .models import BatchSlot, EmailMessage, Label, MessageLabel, SyncProgress
from .parsing import ParsedMessage, parse_message

log = logging.getLogger(__name__)

User = get_user_model()
Status = SyncProgress.Status
SyncType = SyncProgress.SyncType

# listing_order of a message = page index * this + position on the page.
LISTING_ORDER_PAGE_STRIDE = 1000
MAX_FETCH_FAILURES = 5
# How long a batch chain waits before looking again at messages other workers hold.
CLAIM_RETRY_S = 1.0
DAILY_QUOTA_PAUSE_S = 3600.0


@dataclass(frozen=True)
class Step:
    """A stage to run next: `STAGES[stage](user_id, *args)`."""

    stage: str
    user_id: int
    args: tuple = ()

    @property
    def priority(self) -> bool:
        return self.stage in PRIORITY_STAGES


# --- Starting runs ----------------------------------------------------------------------------
def active_runs(user) -> Iterable[SyncProgress]:
    return SyncProgress.objects.filter(user=user, status__in=SyncProgress.ACTIVE_STATUSES)


def _active_run(user_id: int, sync_type: str) -> SyncProgress | None:
    return SyncProgress.objects.filter(
        user_id=user_id, sync_type=sync_type, status__in=SyncProgress.ACTIVE_STATUSES
    ).first()


def _create_run(user, sync_type: str, **fields) -> tuple[SyncProgress, bool]:
    """The active run of this type, or a new one; the database refuses a second."""
    existing = _active_run(user.pk, sync_type)
    if existing:
        return existing, False
    try:
        with transaction.atomic():
            return SyncProgress.objects.create(user=user, sync_type=sync_type, **fields), True
    except IntegrityError:
        # Another trigger won the race: the unique constraint kept it to one run.
        return _active_run(user.pk, sync_type), False


def start_initial_sync(user) -> SyncProgress:
    """Start a full sync (or return the one already running). It supersedes an active
    incremental sync or health check: the full sync re-lists everything, and the next
    incremental sync replays history from the point the full sync started."""
    run, created = _create_run(user, SyncType.INITIAL)
    if created:
        _fail_runs(user.pk, "Superseded by a full sync.", sync_types=RELISTING_TYPES)
        enqueue([Step("begin_initial_sync", user.pk, (run.pk,))])
    return run


def start_sync(user) -> SyncProgress:
    """The sync a user needs now: incremental when possible, else the initial one."""
    if user.can_sync_incrementally:
        return start_incremental_sync(user)
    return start_initial_sync(user)


def start_incremental_sync(user) -> SyncProgress:
    """Apply what changed since the stored history id (or start the initial sync
    when there is no complete mirror to update yet)."""
    user.refresh_from_db()
    if not user.can_sync_incrementally:
        return start_initial_sync(user)
    # A re-listing run (initial or health check) must not overlap history replays:
    # rows the replay adds mid-listing would look deleted to it.
    for other in (SyncType.INITIAL, SyncType.HEALTH):
        if (running := _active_run(user.pk, other)) is not None:
            return running
    run, created = _create_run(user, SyncType.INCREMENTAL)
    if created:
        enqueue([Step("incremental_sync", user.pk, (run.pk,))])
    return run


def start_health_check(user) -> SyncProgress:
    """Compare the mirror with Gmail (ids, labels, label membership) and repair drift.
    Waits for any other run of the user to end (returns it instead)."""
    running = active_runs(user).exclude(sync_type=SyncType.HEALTH).first()
    if running is not None:
        return running
    run, created = _create_run(user, SyncType.HEALTH)
    if created:
        enqueue([Step("begin_health_check", user.pk, (run.pk,))])
    return run


def start_label_sync(user) -> SyncProgress:
    run, created = _create_run(user, SyncType.LABELS)
    if created:
        enqueue([Step("sync_labels", user.pk, (run.pk,))])
    return run


def reset_sync_state(user) -> None:
    """Forget where the mirror stands: the next sync is a full one. Messages stay."""
    with transaction.atomic():
        _fail_runs(user.pk, "Cancelled: the sync state was reset by an operator.")
        User.objects.filter(pk=user.pk).update(
            gmail_history_id=None,
            initial_sync_completed=False,
            label_sync_completed=False,
            gmail_auth_error="",
        )
        BatchSlot.objects.filter(user=user).update(leased_until=None)
        EmailMessage.objects.filter(user=user).update(claimed_until=None, fetch_failures=0)


# --- Enqueueing -----------------------------------------------------------------------------------
def enqueue(steps: Iterable[Step]) -> None:
    """Send steps to the workers once the current transaction has committed."""
    steps = list(steps)
    if steps:
        from . import tasks

        transaction.on_commit(lambda: tasks.enqueue_steps(steps))


def run_inline(steps: Iterable[Step]) -> None:
    """Run steps and everything that follows from them in this process (no cluster)."""
    queue = deque(steps)
    while queue:
        queue.extend(run_step(queue.popleft()))


def run_step(step: Step) -> list[Step]:
    """Run one stage, turning Gmail failures into run states. Returns what follows."""
    try:
        return STAGES[step.stage](step.user_id, *step.args)
    except gmail.AccessRevoked as exc:
        _access_revoked(step.user_id, str(exc))
    except gmail.DailyQuotaExhausted as exc:
        from . import quota

        quota.penalize(step.user_id, DAILY_QUOTA_PAUSE_S)
        _note_on_runs(step.user_id, f"Paused: Gmail's daily quota is exhausted ({exc}).")
    except gmail.RateLimited as exc:
        if _worth_retrying_now(exc):
            return [step]  # the next task waits its turn for the budget
        # A long pause (a daily limit, a long Retry-After): no task spins meanwhile;
        # the watchdog resumes the run from the database afterwards.
        _note_on_runs(step.user_id, f"Paused for {exc.retry_after:.0f} s: {exc}", keep=True)
    except gmail.PermanentError as exc:
        _fail_runs(step.user_id, f"Gmail refused a request: {exc}")
    return []


def _worth_retrying_now(exc: gmail.RateLimited) -> bool:
    return exc.retry_after <= settings.MAILSYNC_TASK_MAX_SECONDS


def _access_revoked(user_id: int, message: str) -> None:
    log.warning("user %s: Google access refused: %s", user_id, message)
    User.objects.filter(pk=user_id).update(gmail_auth_error=message)
    _fail_runs(user_id, f"Google refused access; sign in with Google again to resume. ({message})")
    BatchSlot.objects.filter(user_id=user_id).update(leased_until=None)


def _fail_runs(user_id: int, message: str, sync_types: Iterable[str] | None = None) -> None:
    """End the user's active runs (of these types, or all) as failed, saying why."""
    runs = SyncProgress.objects.filter(user_id=user_id, status__in=SyncProgress.ACTIVE_STATUSES)
    if sync_types is not None:
        runs = runs.filter(sync_type__in=sync_types)
    runs.update(status=Status.FAILED, error_message=message, completed_at=timezone.now())


def _note_on_runs(user_id: int, message: str, keep: bool = False) -> None:
    """Say on the user's active runs why they are not moving (`keep`: unless they
    already say why)."""
    runs = SyncProgress.objects.filter(user_id=user_id, status__in=SyncProgress.ACTIVE_STATUSES)
    if keep:
        runs = runs.filter(error_message="")
    runs.update(error_message=message, updated_at=timezone.now())


# --- Labels -----------------------------------------------------------------------------------------
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
    SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).update(
        status=Status.COMPLETED,
        num_total=len(ids),
        num_processed=len(ids),
        completed_at=timezone.now(),
    )
    return []


# --- Initial sync ----------------------------------------------------------------------------------
def begin_initial_sync(user_id: int, run_id: int) -> list[Step]:
    """Stage 1: read the profile (its historyId is where incremental syncs will start)
    and import the labels, so messages find their labels when they arrive."""
    run = SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).first()
    if run is None:
        return []
    client = gmail.GmailClient(user_id)
    profile = client.get_profile()
    import_labels(user_id, client)
    User.objects.filter(pk=user_id).update(gmail_auth_error="")
    # A new full sync gives messages that failed before a fresh set of attempts.
    EmailMessage.objects.filter(user_id=user_id, fetch_failures__gt=0).update(fetch_failures=0)
    # An earlier attempt's history id is older, so replays more: keep it.
    SyncProgress.objects.filter(pk=run_id, start_history_id="").update(
        start_history_id=profile.history_id
    )
    SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).update(
        status=Status.IN_PROGRESS,
        num_total=max(profile.messages_total, run.num_total),
        updated_at=timezone.now(),
    )
    return [Step("list_page", user_id, (run_id,))]


def list_page(user_id: int, run_id: int) -> list[Step]:
    """Stage 2: list one page of message ids into unfetched rows; save the page token."""
    run = SyncProgress.objects.filter(pk=run_id, status=Status.IN_PROGRESS).first()
    if run is None or run.listing_completed:
        return fill_batch_slots(user_id)
    token = run.next_page_token
    page = gmail.GmailClient(user_id).list_message_ids(
        page_token=token, include_spam_trash=settings.MAILSYNC_INCLUDE_SPAM_TRASH
    )
    with transaction.atomic():
        run = SyncProgress.objects.select_for_update().get(pk=run_id)
        if run.next_page_token != token or run.listing_completed or not run.is_active:
            return []  # a duplicate delivery of this step already stored this page
        base = run.pages_listed * LISTING_ORDER_PAGE_STRIDE
        ids = [message_id for message_id, _ in page.ids]
        known = set(
            EmailMessage.objects.filter(user_id=user_id, gmail_id__in=ids).values_list(
                "gmail_id", flat=True
            )
        )
        EmailMessage.objects.bulk_create(
            [
                EmailMessage(
                    user_id=user_id,
                    gmail_id=message_id,
                    thread_id=thread_id,
                    listing_order=base + position,
                    listed_by_run=run_id,
                )
                for position, (message_id, thread_id) in enumerate(page.ids)
            ],
            ignore_conflicts=True,
        )
        # Rows we had before (a resync) are marked as still present in Gmail.
        EmailMessage.objects.filter(user_id=user_id, gmail_id__in=ids).exclude(
            listed_by_run=run_id
        ).update(listed_by_run=run_id)
        run.next_page_token = page.next_page_token
        run.pages_listed += 1
        run.num_added += len(set(ids) - known)
        run.listing_completed = not page.next_page_token
        if run.listing_completed:
            # Whatever this listing did not see is no longer in the mailbox.
            gone = EmailMessage.objects.filter(user_id=user_id).exclude(listed_by_run=run_id)
            run.num_deleted += gone.count()
            gone.delete()
        _refresh_counts(run)
        run.save()
    steps = fill_batch_slots(user_id)
    if not run.listing_completed:
        steps.append(Step("list_page", user_id, (run_id,)))
    elif run.sync_type in RELISTING_TYPES:
        steps.extend(_next_label_scan(user_id, run_id, after=""))
    else:
        complete_initial_sync_if_done(user_id)
    return steps


def _refresh_counts(run: SyncProgress) -> None:
    messages = EmailMessage.objects.filter(user_id=run.user_id)
    listed = messages.count()
    # Until the listing ends, the profile's messagesTotal (set when the run began) is
    # the better total: the progress bar must not jump backwards as pages arrive.
    run.num_total = listed if run.listing_completed else max(listed, run.num_total)
    run.num_processed = listed - messages.filter(internal_date__isnull=True).count()


def complete_initial_sync_if_done(user_id: int) -> bool:
    """Stage 5: listed everything and fetched everything -> the mirror is current to
    the profile's history id. Exactly one caller wins the conditional update."""
    run = _active_run(user_id, SyncType.INITIAL)
    if run is None or not run.listing_completed:
        return False
    if messages_to_fetch(user_id=user_id).exists():
        return False
    unfetched = EmailMessage.objects.filter(user_id=user_id, internal_date__isnull=True)
    now = timezone.now()
    stuck = list(unfetched.values_list("gmail_id", "last_fetch_error")[:5])
    with transaction.atomic():
        _refresh_counts(run)
        if stuck:
            count = unfetched.count()
            won = SyncProgress.objects.filter(pk=run.pk, status=Status.IN_PROGRESS).update(
                status=Status.FAILED,
                completed_at=now,
                num_total=run.num_total,
                num_processed=run.num_processed,
                error_message=(
                    f"{count} message(s) could not be fetched after {MAX_FETCH_FAILURES} "
                    f"attempts, e.g. {stuck[0][0]}: {stuck[0][1]}"
                ),
            )
            return bool(won)
        won = SyncProgress.objects.filter(pk=run.pk, status=Status.IN_PROGRESS).update(
            status=Status.COMPLETED,
            completed_at=now,
            num_total=run.num_total,
            num_processed=run.num_processed,
            error_message="",
        )
        if won:
            User.objects.filter(pk=user_id).update(
                gmail_history_id=run.start_history_id,
                initial_sync_completed=True,
                last_full_sync_at=now,
            )
    return bool(won)


# --- Message batches --------------------------------------------------------------------------------
def _lease_seconds() -> int:
    # Longer than any task may run: a live task never loses its claim or slot.
    return settings.MAILSYNC_TASK_MAX_SECONDS + 15


def messages_to_fetch(**filters):
    """Unfetched messages that are still worth trying (fewer than MAX_FETCH_FAILURES)."""
    return EmailMessage.objects.filter(
        internal_date__isnull=True, fetch_failures__lt=MAX_FETCH_FAILURES, **filters
    )


def claimable_messages(now: dt.datetime, **filters):
    """Messages to fetch that no live claim holds."""
    return messages_to_fetch(**filters).filter(
        Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)
    )


def fill_batch_slots(user_id: int) -> list[Step]:
    """Lease free batch slots (at most MAILSYNC_BATCHES_IN_FLIGHT per user) for the
    work that is waiting, one fetch_batch chain per slot."""
    now = timezone.now()
    waiting = claimable_messages(now, user_id=user_id).count()
    if not waiting:
        return []
    wanted = min(settings.MAILSYNC_BATCHES_IN_FLIGHT, -(-waiting // settings.MAILSYNC_BATCH_SIZE))
    BatchSlot.objects.bulk_create(
        [BatchSlot(user_id=user_id, number=n) for n in range(settings.MAILSYNC_BATCHES_IN_FLIGHT)],
        ignore_conflicts=True,
    )
    free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
    lease = now + dt.timedelta(seconds=_lease_seconds())
    steps = []
    for slot in BatchSlot.objects.filter(
        free, user_id=user_id, number__lt=settings.MAILSYNC_BATCHES_IN_FLIGHT
    ).order_by("number"):
        if len(steps) >= wanted:
            break
        if BatchSlot.objects.filter(free, pk=slot.pk).update(leased_until=lease):
            steps.append(Step("fetch_batch", user_id, (slot.number,)))
    return steps


def claim_messages(user_id: int, limit: int) -> list[tuple[int, str]]:
    """Atomically claim up to `limit` unfetched messages in listing order.

    PostgreSQL: SELECT ... FOR UPDATE SKIP LOCKED, so concurrent claimers pass each
    other. Elsewhere: a conditional update that only takes rows still unclaimed
    (SQLite's IMMEDIATE transactions serialize claimers anyway).
    """
    now = timezone.now()
    lease = now + dt.timedelta(seconds=_lease_seconds())
    with transaction.atomic():
        candidates = claimable_messages(now, user_id=user_id).order_by("listing_order", "pk")
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        rows = list(candidates.values_list("pk", "gmail_id")[:limit])
        if not rows:
            return []
        updated = claimable_messages(now, user_id=user_id).filter(pk__in=[pk for pk, _ in rows])
        if updated.update(claimed_until=lease) == len(rows):
            return rows
        won = set(
            EmailMessage.objects.filter(
                pk__in=[pk for pk, _ in rows], claimed_until=lease
            ).values_list("pk", flat=True)
        )
        return [(pk, gmail_id) for pk, gmail_id in rows if pk in won]


def fetch_batch(user_id: int, slot: int) -> list[Step]:
    """Stage 4: fetch one batch of claimed messages and store them; keep the slot
    and go on while work remains."""
    claimed = claim_messages(user_id, settings.MAILSYNC_BATCH_SIZE)
    if not claimed and _claimed_elsewhere(user_id):
        # Other workers hold the rest. If they are alive they finish soon; if they
        # died (SIGKILL) their leases run out: keep the slot and look again, so the
        # work is picked up then, not only when the watchdog comes by.
        _renew_slot(user_id, slot)
        time.sleep(CLAIM_RETRY_S)
        return [Step("fetch_batch", user_id, (slot,))]
    if not claimed:
        _release_slot(user_id, slot)
        _complete_finished_runs(user_id)
        return []
    _renew_slot(user_id, slot)
    pks = {gmail_id: pk for pk, gmail_id in claimed}
    try:
        result = gmail.GmailClient(user_id).get_messages(list(pks))
    except gmail.GmailError as exc:
        EmailMessage.objects.filter(pk__in=pks.values()).update(claimed_until=None)
        if not (isinstance(exc, gmail.RateLimited) and _worth_retrying_now(exc)):
            _release_slot(user_id, slot)  # this chain ends; fill_batch_slots restarts one
        raise
    store_messages(user_id, pks, result)
    _record_batch_progress(user_id)
    _complete_finished_runs(user_id)
    return [Step("fetch_batch", user_id, (slot,))]


def _complete_finished_runs(user_id: int) -> None:
    """After a batch: whichever of the user's runs waited only for fetches is done."""
    complete_initial_sync_if_done(user_id)
    complete_incremental_if_done(user_id)


def _claimed_elsewhere(user_id: int) -> bool:
    return messages_to_fetch(user_id=user_id, claimed_until__gte=timezone.now()).exists()


def _renew_slot(user_id: int, slot: int) -> None:
    lease = timezone.now() + dt.timedelta(seconds=_lease_seconds())
    BatchSlot.objects.filter(user_id=user_id, number=slot).update(leased_until=lease)


def _release_slot(user_id: int, slot: int) -> None:
    BatchSlot.objects.filter(user_id=user_id, number=slot).update(leased_until=None)


def store_messages(user_id: int, pks: dict[str, int], result: gmail.BatchResult) -> None:
    """Write a fetched batch in one transaction: an UPDATE per message, the label links
    with one delete and one insert, gone messages deleted, failures counted."""
    parsed: list[ParsedMessage] = []
    failed = dict(result.failed)
    for message_id, data in result.found.items():
        try:
            parsed.append(parse_message(data))
        except ValueError as exc:  # no id at all: nothing to store it under
            failed[message_id] = gmail.PermanentError(f"unparseable answer: {exc}")
    with transaction.atomic():
        label_pks = _label_pks(user_id, {lid for p in parsed for lid in p.label_ids})
        # One UPDATE per row: bulk_update's CASE expressions over 19 columns cost
        # several times more (measured 120-215 ms against 12-26 ms for 50 rows).
        for p in parsed:
            if p.gmail_id in pks:
                EmailMessage.objects.filter(pk=pks[p.gmail_id]).update(**_fetched_fields(p))
        _set_labels({pks[p.gmail_id]: p.label_ids for p in parsed if p.gmail_id in pks}, label_pks)
        if result.gone:
            EmailMessage.objects.filter(pk__in=[pks[g] for g in result.gone if g in pks]).delete()
        for message_id, error in failed.items():
            EmailMessage.objects.filter(pk=pks[message_id]).update(
                claimed_until=None,
                fetch_failures=F("fetch_failures") + 1,
                last_fetch_error=str(error)[:2000],
            )


def _fetched_fields(p: ParsedMessage) -> dict:
    """What a fetch writes on a message row (and the claim it releases)."""
    return {
        "thread_id": p.thread_id,
        "internal_date": p.internal_date,
        "history_id": p.history_id,
        "snippet": p.snippet,
        "size_estimate": p.size_estimate,
        "subject": p.subject,
        "sender": p.sender,
        "to": p.to,
        "cc": p.cc,
        "date_header": p.date_header,
        "message_id_header": p.message_id_header,
        "body_text": p.body_text,
        "body_html": p.body_html,
        "attachments": p.attachments,
        "parse_error": p.parse_error,
        "claimed_until": None,
        "fetch_failures": 0,
        "last_fetch_error": "",
        "updated_at": timezone.now(),
    }


def _label_pks(user_id: int, gmail_ids: set[str]) -> dict[str, int]:
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
        start_label_sync(User(pk=user_id))
    return known


def _set_labels(message_labels: dict[int, Iterable[str]], label_pks: dict[str, int]) -> None:
    MessageLabel.objects.filter(message_id__in=message_labels).delete()
    MessageLabel.objects.bulk_create(
        [
            MessageLabel(message_id=message_pk, label_id=label_pks[gid])
            for message_pk, gids in message_labels.items()
            for gid in set(gids)
            if gid in label_pks
        ],
        ignore_conflicts=True,
    )


def _record_batch_progress(user_id: int) -> None:
    """Every batch moves the user's runs on (the watchdog reads `updated_at`); the
    initial run also counts fetched / total."""
    now = timezone.now()
    runs = SyncProgress.objects.filter(user_id=user_id, status=Status.IN_PROGRESS)
    runs.filter(error_message__startswith="Paused").update(error_message="")
    runs.exclude(sync_type=SyncType.INITIAL).update(
        batches_completed=F("batches_completed") + 1, updated_at=now
    )
    for run in runs.filter(sync_type=SyncType.INITIAL):
        _refresh_counts(run)
        SyncProgress.objects.filter(pk=run.pk).update(
            num_total=run.num_total,
            num_processed=run.num_processed,
            batches_completed=F("batches_completed") + 1,
            updated_at=now,
        )


# --- Incremental sync ---------------------------------------------------------------------------------
HISTORY_PAGES_PER_STEP = 20


def incremental_sync(user_id: int, run_id: int) -> list[Step]:
    """Apply history pages from the stored history id, a bounded number per step.

    The user's history id moves only after the last page is applied, so a crash
    in between replays from the old id, which changes nothing twice.
    """
    run = SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).first()
    if run is None:
        return []
    if run.fell_back_to_full:
        return resume_steps(run)
    user = User.objects.get(pk=user_id)
    if not user.can_sync_incrementally:
        _finish_run(run_id, Status.FAILED, "No complete mirror yet: starting the initial sync.")
        return resume_steps(start_initial_sync(user))
    client = gmail.GmailClient(user_id)
    if run.status == Status.PENDING:
        # Label creations, renames and deletions leave no history: refresh them each time.
        import_labels(user_id, client)
        SyncProgress.objects.filter(pk=run_id).update(
            status=Status.IN_PROGRESS,
            start_history_id=user.gmail_history_id,
            updated_at=timezone.now(),
        )
        run.refresh_from_db()
    token = run.next_page_token
    for _ in range(HISTORY_PAGES_PER_STEP):
        try:
            page = client.history_page(run.start_history_id, token)
        except gmail.HistoryExpired:
            return fall_back_to_full_resync(user_id, run_id, client)
        counts = apply_history_page(user_id, page.records)
        token = page.next_page_token
        SyncProgress.objects.filter(pk=run_id).update(
            num_added=F("num_added") + counts["added"],
            num_deleted=F("num_deleted") + counts["deleted"],
            num_relabelled=F("num_relabelled") + counts["relabelled"],
            next_page_token=token,
            updated_at=timezone.now(),
        )
        if not token:
            break
    if token:
        return [Step("incremental_sync", user_id, (run_id,))]
    now = timezone.now()
    with transaction.atomic():
        User.objects.filter(pk=user_id).update(
            gmail_history_id=page.history_id, last_incremental_sync_at=now
        )
        SyncProgress.objects.filter(pk=run_id).update(listing_completed=True, updated_at=now)
    steps = fill_batch_slots(user_id)
    complete_incremental_if_done(user_id)
    return steps


def apply_history_page(user_id: int, records: list[dict]) -> dict[str, int]:
    """Apply one page of history records in one transaction; replaying it is harmless.

    Ids are never reused by Gmail, so a message deleted anywhere on the page is
    deleted. Label changes are applied in record order to messages we have; a
    message we do not have (or have not fetched yet) becomes an unfetched row, and
    its fetch brings its current labels.
    """
    deleted: set[str] = set()
    added: dict[str, tuple[str, int]] = {}  # id -> (thread id, listing order)
    label_ops: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for record in records:
        order = -int(record.get("id", 0) or 0)
        for item in record.get("messagesAdded", []):
            message = item.get("message", {})
            added[message["id"]] = (message.get("threadId", ""), order)
        for item in record.get("messagesDeleted", []):
            deleted.add(item.get("message", {})["id"])
        for key, op in (("labelsAdded", "add"), ("labelsRemoved", "remove")):
            for item in record.get(key, []):
                message = item.get("message", {})
                label_ops.setdefault(message["id"], []).append(
                    (op, tuple(item.get("labelIds", [])))
                )
                added.setdefault(message["id"], (message.get("threadId", ""), order))
    with transaction.atomic():
        num_deleted, _ = EmailMessage.objects.filter(user_id=user_id, gmail_id__in=deleted).delete()
        touched = {mid: v for mid, v in added.items() if mid not in deleted}
        existing = dict(
            EmailMessage.objects.filter(user_id=user_id, gmail_id__in=touched).values_list(
                "gmail_id", "internal_date"
            )
        )
        new = [
            EmailMessage(user_id=user_id, gmail_id=mid, thread_id=thread, listing_order=order)
            for mid, (thread, order) in touched.items()
            if mid not in existing
        ]
        EmailMessage.objects.bulk_create(new, ignore_conflicts=True)
        fetched = [mid for mid, date in existing.items() if date is not None and mid in label_ops]
        relabelled = _apply_label_ops(user_id, {mid: label_ops[mid] for mid in fetched})
    return {
        "added": sum(1 for m in new if m.gmail_id in added and m.gmail_id not in label_ops),
        "deleted": len(deleted) if num_deleted else 0,
        "relabelled": relabelled,
    }


def _apply_label_ops(user_id: int, ops: dict[str, list[tuple[str, tuple[str, ...]]]]) -> int:
    if not ops:
        return 0
    pks = dict(
        EmailMessage.objects.filter(user_id=user_id, gmail_id__in=ops).values_list("gmail_id", "pk")
    )
    current: dict[int, set[str]] = {pk: set() for pk in pks.values()}
    for message_pk, label_gid in MessageLabel.objects.filter(message_id__in=current).values_list(
        "message_id", "label__gmail_id"
    ):
        current[message_pk].add(label_gid)
    changed: dict[int, set[str]] = {}
    for gmail_id, message_ops in ops.items():
        labels = set(current[pks[gmail_id]])
        for op, label_ids in message_ops:
            labels = labels | set(label_ids) if op == "add" else labels - set(label_ids)
        if labels != current[pks[gmail_id]]:
            changed[pks[gmail_id]] = labels
    if changed:
        label_pks = _label_pks(user_id, set().union(*changed.values()))
        _set_labels(changed, label_pks)
    return len(changed)


def complete_incremental_if_done(user_id: int) -> bool:
    """An incremental run (or health check) is complete when its pages are applied,
    its rescan is done and the messages they queued are fetched."""
    completed = False
    for run in SyncProgress.objects.filter(
        user_id=user_id, sync_type__in=RELISTING_TYPES, status=Status.IN_PROGRESS
    ):
        if not run.listing_completed:
            continue
        if run.fell_back_to_full and not run.rescan_completed:
            continue
        if messages_to_fetch(user_id=user_id).exists():
            return False
        completed |= bool(_finish_run(run.pk, Status.COMPLETED, ""))
    return completed


RELISTING_TYPES = (SyncType.INCREMENTAL, SyncType.HEALTH)


def _finish_run(run_id: int, status: str, message: str) -> int:
    return SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).update(
        status=status, error_message=message, completed_at=timezone.now()
    )


# --- Fallback when history expired: a resync that downloads only what is new ------------------------
def fall_back_to_full_resync(
    user_id: int,
    run_id: int,
    client: gmail.GmailClient,
    note: str = "Gmail's history expired: re-listing the mailbox.",
) -> list[Step]:
    """History expired: re-list every id (new ones become unfetched rows, missing ones
    are deleted), then rescan label membership label by label. Nothing already
    fetched is downloaded again."""
    profile = client.get_profile()
    SyncProgress.objects.filter(pk=run_id).update(
        fell_back_to_full=True,
        start_history_id=profile.history_id,
        next_page_token="",
        pages_listed=0,
        listing_completed=False,
        rescan_completed=False,
        error_message=note,
        updated_at=timezone.now(),
    )
    return [Step("list_page", user_id, (run_id,))]


def begin_health_check(user_id: int, run_id: int) -> list[Step]:
    """A health check is the expired-history fallback on purpose: re-list the ids
    (queue the missing, delete the extra), refresh labels, rescan membership."""
    run = SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).first()
    if run is None:
        return []
    client = gmail.GmailClient(user_id)
    import_labels(user_id, client)
    SyncProgress.objects.filter(pk=run_id).update(status=Status.IN_PROGRESS)
    return fall_back_to_full_resync(user_id, run_id, client, note="")


def rescan_label_page(
    user_id: int, run_id: int, label_gmail_id: str, page_token: str, scan_started: str
) -> list[Step]:
    """One page of one label's message ids: the links Gmail has are marked as seen
    by this run; after the label's last page, links older than the scan that it
    did not see are removed (links made by fetches during the scan are current)."""
    run = SyncProgress.objects.filter(pk=run_id, status__in=SyncProgress.ACTIVE_STATUSES).first()
    label = Label.objects.filter(user_id=user_id, gmail_id=label_gmail_id).first()
    if run is None or label is None:
        return _next_label_scan(user_id, run_id, label_gmail_id)
    page = gmail.GmailClient(user_id).list_message_ids(
        page_token=page_token, include_spam_trash=True, label_id=label_gmail_id
    )
    with transaction.atomic():
        message_pks = list(
            EmailMessage.objects.filter(
                user_id=user_id, gmail_id__in=[mid for mid, _ in page.ids]
            ).values_list("pk", flat=True)
        )
        linked = set(
            MessageLabel.objects.filter(label=label, message_id__in=message_pks).values_list(
                "message_id", flat=True
            )
        )
        MessageLabel.objects.bulk_create(
            [
                MessageLabel(message_id=pk, label=label, seen_by_run=run_id)
                for pk in message_pks
                if pk not in linked
            ],
            ignore_conflicts=True,
        )
        # Fetched messages that lacked the label locally were relabelled.
        missing_links = EmailMessage.objects.filter(
            pk__in=set(message_pks) - linked, internal_date__isnull=False
        ).count()
        MessageLabel.objects.filter(label=label, message_id__in=message_pks).update(
            seen_by_run=run_id
        )
        if not page.next_page_token:
            stale = MessageLabel.objects.filter(
                label=label, linked_at__lt=dt.datetime.fromisoformat(scan_started)
            ).exclude(seen_by_run=run_id)
            missing_links += stale.count()
            stale.delete()
        SyncProgress.objects.filter(pk=run_id).update(
            num_relabelled=F("num_relabelled") + missing_links, updated_at=timezone.now()
        )
    if page.next_page_token:
        return [
            Step(
                "rescan_label_page",
                user_id,
                (run_id, label_gmail_id, page.next_page_token, scan_started),
            )
        ]
    return _next_label_scan(user_id, run_id, label_gmail_id)


def _next_label_scan(user_id: int, run_id: int, after: str) -> list[Step]:
    remaining = (
        Label.objects.filter(user_id=user_id, gmail_id__gt=after)
        .order_by("gmail_id")
        .values_list("gmail_id", flat=True)
    )
    following = remaining.first()
    if following is not None:
        started = timezone.now().isoformat()
        return [Step("rescan_label_page", user_id, (run_id, following, "", started))]
    # All labels rescanned: the listing part of the fallback is complete.
    run = SyncProgress.objects.get(pk=run_id)
    with transaction.atomic():
        if run.sync_type == SyncType.INCREMENTAL:
            # The re-listing made the mirror current to the profile's history id. A
            # health check leaves the id alone: replaying history over it is harmless.
            User.objects.filter(pk=user_id).update(
                gmail_history_id=run.start_history_id, last_incremental_sync_at=timezone.now()
            )
        SyncProgress.objects.filter(pk=run_id).update(
            rescan_completed=True, error_message="", updated_at=timezone.now()
        )
    steps = fill_batch_slots(user_id)
    complete_incremental_if_done(user_id)
    return steps


def resume_steps(run: SyncProgress) -> list[Step]:
    """The steps that carry a run on from what the database says is left: used to
    run inline and by the watchdog when a run's tasks were lost."""
    user_id = run.user_id
    if not run.is_active:
        return []
    if run.sync_type == SyncType.LABELS:
        return [Step("sync_labels", user_id, (run.pk,))]
    if run.sync_type == SyncType.HEALTH and run.status == Status.PENDING:
        return [Step("begin_health_check", user_id, (run.pk,))]
    if run.sync_type == SyncType.INITIAL:
        if run.status == Status.PENDING or not run.start_history_id:
            return [Step("begin_initial_sync", user_id, (run.pk,))]
        if not run.listing_completed:
            return [Step("list_page", user_id, (run.pk,)), *fill_batch_slots(user_id)]
        steps = fill_batch_slots(user_id)
        complete_initial_sync_if_done(user_id)
        return steps
    if run.fell_back_to_full and not run.listing_completed:
        return [Step("list_page", user_id, (run.pk,)), *fill_batch_slots(user_id)]
    if run.fell_back_to_full and not run.rescan_completed:
        return _next_label_scan(user_id, run.pk, after="")
    if not run.listing_completed:
        return [Step("incremental_sync", user_id, (run.pk,))]
    steps = fill_batch_slots(user_id)
    complete_incremental_if_done(user_id)
    return steps


# --- The registry the tasks and the inline runner use ----------------------------------------------
STAGES: dict[str, Callable[..., list[Step]]] = {
    "begin_initial_sync": begin_initial_sync,
    "sync_labels": sync_labels,
    "list_page": list_page,
    "fetch_batch": fetch_batch,
    "incremental_sync": incremental_sync,
    "rescan_label_page": rescan_label_page,
    "begin_health_check": begin_health_check,
}
PRIORITY_STAGES = {
    "begin_initial_sync",
    "sync_labels",
    "list_page",
    "incremental_sync",
    "rescan_label_page",
    "begin_health_check",
}
