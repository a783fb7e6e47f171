"""Storing a fetched batch: one transaction per batch that writes the messages, their
label links and search vectors, deletes what Gmail no longer has, charges failures to
the messages that failed alone, and moves the mailbox totals and the runs' progress.

Threads fetched whole are folded into the batch first: their claimed messages are
stored like the rest, and a member the mirror has no row for (the listing has not
reached it, it arrived since, or it is in SPAM/TRASH) gets one, stored fetched, so it
is never fetched again (unless the mirror leaves out spam and trash).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Min, Q, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone

from .. import counters, gmail, metrics, signals
from ..models import EmailMessage, SyncProgress
from ..parsing import ParsedMessage, parse_message
from .claims import Claimed
from .labels import label_pks_for, set_labels
from .runs import RETRY_NOTE, SyncType, clear_failure_notes, user_runs
from .writes import insert_listed, prepare_fetched, write_fetched

Status = SyncProgress.Status
# Labels a mirror without spam and trash leaves out (MAILSYNC_INCLUDE_SPAM_TRASH=false).
SPAM_AND_TRASH = {"SPAM", "TRASH"}


@dataclass
class StoreOutcome:
    fetched: int = 0
    gone: int = 0
    created: int = 0  # rows made for members of whole threads the mirror did not have
    failed_alone: int = 0  # failed while Gmail served others: counted on the message
    unavailable: int = 0  # of those, given up on (for now)
    # Nothing was served and Gmail failed as a whole (or refused for rate): the
    # error to wait out. No message was charged with a failure.
    outage: gmail.GmailError | None = None
    errors: dict[str, gmail.GmailError] = field(default_factory=dict)


def store_messages(
    user_id: int,
    pks: dict[str, int],
    result: gmail.BatchResult,
    threads: gmail.BatchResult | None = None,
    members: dict[str, list[Claimed]] | None = None,
    slot: int | None = None,
) -> StoreOutcome:
    """Write a fetched batch in one transaction: the messages, the label links
    (only where they changed), gone messages deleted, failures charged to the
    messages that failed alone, the mailbox totals and the runs' progress.

    `pks` maps every claimed message (Gmail id) to its row; `threads` is the answer to
    the threads fetched whole, `members` their claimed messages (see claims.Work).
    The batch of a chain (`slot`) stores beside the other chains' batches, its totals
    in the chain's share (counters.share); without a slot it locks the mailbox."""
    claimed = dict(pks)
    # Which failures tell "this message" from "Gmail": see _charge_failures.
    singles_served = bool(result.found or result.gone or result.probe_ok)
    any_served = singles_served or bool(threads and (threads.found or threads.gone))
    in_threads = {row.gmail_id for rows in (members or {}).values() for row in rows}
    result, extra = _fold_threads(pks, result, threads, members or {})
    parsed: dict[str, ParsedMessage] = {}
    errors = dict(result.failed)
    for message_id, data in [*result.found.items(), *extra.items()]:
        try:
            message = parse_message(data)
        except ValueError as exc:  # no id at all: nothing to store it under
            errors[message_id] = gmail.PermanentError(f"unparseable answer: {exc}")
            continue
        if message.gmail_id in pks or message_id in extra:
            parsed[message.gmail_id] = message
    prepared = prepare_fetched(parsed.values())
    outcome = StoreOutcome(errors={m: e for m, e in errors.items() if m in pks})
    if outcome.errors and not any_served:
        outcome.outage = _most_telling(outcome.errors.values())
    label_ids = {lid for p in parsed.values() for lid in p.label_ids}
    # Labels we do not know yet are made first, in a transaction of their own that
    # locks the mailbox (counters.count_labels), which a batch storing must not wait for.
    label_pks_for(user_id, label_ids)
    with transaction.atomic():
        if slot is None:
            counters.lock(user_id)
        else:
            counters.share(user_id)
        pks = {**pks, **_rows_for_new_members(user_id, pks, parsed, members or {}, outcome)}
        parsed_rows = [p for p in parsed.values() if p.gmail_id in pks]
        # Read again under the lock: a label the labels sync deleted since the call
        # above is made again, rather than its links failing their foreign key.
        label_pks = label_pks_for(user_id, label_ids)
        states = _lock_rows(pks.values())
        newly_fetched = {
            pk: states[pk][1]
            for pk in (pks[p.gmail_id] for p in parsed_rows)
            if pk in states and not states[pk][0]
        }
        served_again = sum(1 for since in newly_fetched.values() if since is not None)
        # One UPDATE for the batch on PostgreSQL, search vector included; on SQLite one
        # prepared UPDATE run per row (writes.py). In pk order, as the rows were locked.
        write_fetched(sorted((pks[p.gmail_id], prepared[p.gmail_id]) for p in parsed_rows))
        relabelled = set_labels({pks[p.gmail_id]: p.label_ids for p in parsed_rows}, label_pks)
        gone = [pks[g] for g in result.gone if g in pks]
        lost = counters.states_of(user_id, Q(pk__in=gone))
        _signal_changes(user_id, pks, newly_fetched, relabelled, gone)
        if gone:
            EmailMessage.objects.filter(pk__in=gone).delete()
        _charge_failures(
            user_id,
            pks,
            outcome.errors,
            lambda m: any_served if m in in_threads else singles_served,
            outcome,
        )
        # Claimed, but neither in the answer nor failed (a thread gone, or that no
        # longer holds the message): free to be fetched alone.
        answered = {*parsed, *result.gone, *outcome.errors}
        EmailMessage.objects.filter(
            pk__in=[pk for gmail_id, pk in claimed.items() if gmail_id not in answered],
            internal_date__isnull=True,
        ).update(claimed_until=None, claim_slot=None)
        deltas = {
            "messages": outcome.created - lost.messages,
            "fetched": len(newly_fetched) - lost.fetched,
            "unavailable": outcome.unavailable - lost.unavailable - served_again,
        }
        if slot is None:
            counters.add(user_id, **deltas)
        else:
            counters.add_to_share(user_id, slot, **deltas)
        outcome.fetched, outcome.gone = len(newly_fetched), lost.messages
        if parsed_rows or gone:
            noted = _record_batch_progress(user_id, downloaded=len(parsed_rows))
            # In the same transaction: on SQLite every write statement outside one
            # waits for the database's write lock on its own.
            if noted:
                clear_failure_notes(user_id)
    metrics.messages_fetched(outcome.fetched)
    metrics.messages_unavailable(outcome.unavailable)
    return outcome


def _lock_rows(pks: Iterable[int]) -> dict[int, tuple[bool, dt.datetime | None]]:
    """Lock the batch's rows (in pk order: two batches never wait for each other in
    a circle) and say of each whether it is fetched, and since when it is unavailable.
    What a batch counts is exact for the rows it holds; no mailbox-wide lock needed."""
    rows = EmailMessage.objects.filter(pk__in=list(pks)).order_by("pk")
    if connection.features.has_select_for_update:
        rows = rows.select_for_update()
    return {
        pk: (date is not None, since)
        for pk, date, since in rows.values_list("pk", "internal_date", "unavailable_since")
    }


def _fold_threads(
    pks: dict[str, int],
    result: gmail.BatchResult,
    threads: gmail.BatchResult | None,
    members: dict[str, list[Claimed]],
) -> tuple[gmail.BatchResult, dict[str, dict]]:
    """The batch as messages: a whole thread's claimed messages are found (or fail with
    it); its other members are returned apart (Gmail id -> resource). A thread that is
    gone, or a claimed message missing from its thread, is neither found nor failed:
    its claim is released, and it is fetched alone next time."""
    if threads is None:
        return result, {}
    folded = gmail.BatchResult(
        found=dict(result.found),
        gone=set(result.gone),
        failed=dict(result.failed),
        probe_ok=result.probe_ok,
    )
    extra: dict[str, dict] = {}
    for thread_id, claimed in members.items():
        if thread_id in threads.failed:
            for row in claimed:
                folded.failed[row.gmail_id] = threads.failed[thread_id]
            continue
        for message in (threads.found.get(thread_id) or {}).get("messages") or []:
            if not isinstance(message, dict) or not message.get("id"):
                continue
            target = folded.found if message["id"] in pks else extra
            target[message["id"]] = message
    return folded, extra


def _rows_for_new_members(
    user_id: int,
    pks: dict[str, int],
    parsed: dict[str, ParsedMessage],
    members: dict[str, list[Claimed]],
    outcome: StoreOutcome,
) -> dict[str, int]:
    """Rows for the members of whole threads that were not claimed: existing rows are
    stored too; missing ones are created (counted in `outcome.created`), except spam
    and trash when the mirror leaves them out."""
    extra = [p for gmail_id, p in parsed.items() if gmail_id not in pks]
    if not extra:
        return {}
    rows = dict(
        EmailMessage.objects.filter(
            user_id=user_id, gmail_id__in=[p.gmail_id for p in extra]
        ).values_list("gmail_id", "pk")
    )
    orders = dict(
        EmailMessage.objects.filter(pk__in=pks.values())
        .values_list("thread_id")
        .annotate(first=Min("listing_order"))
    )
    new = [
        (p.gmail_id, p.thread_id, orders.get(p.thread_id, 0))
        for p in extra
        if p.gmail_id not in rows
        and (settings.MAILSYNC_INCLUDE_SPAM_TRASH or not SPAM_AND_TRASH & set(p.label_ids))
    ]
    # Counted as inserted: a batch storing beside this one may have made the row first.
    outcome.created = insert_listed(user_id, None, new)
    rows.update(
        EmailMessage.objects.filter(
            user_id=user_id, gmail_id__in=[gmail_id for gmail_id, _, _ in new]
        ).values_list("gmail_id", "pk")
    )
    return rows


def _signal_changes(
    user_id: int,
    pks: dict[str, int],
    newly_fetched: dict[int, object],
    relabelled: set[int],
    gone: list[int],
) -> None:
    """First fetches are additions; a re-fetch whose labels differ is a change; a
    fetched message Gmail no longer has is a deletion (sent after commit)."""
    ids = {pk: gmail_id for gmail_id, pk in pks.items()}
    signals.added(user_id, (ids[pk] for pk in newly_fetched))
    signals.changed(user_id, (ids[pk] for pk in relabelled if pk not in newly_fetched))
    if gone:
        signals.deleted(
            user_id,
            EmailMessage.objects.filter(pk__in=gone, internal_date__isnull=False).values_list(
                "gmail_id", flat=True
            ),
        )


def _charge_failures(
    user_id: int,
    pks: dict[str, int],
    errors: dict[str, gmail.GmailError],
    served_alike: Callable[[str], bool],
    outcome: StoreOutcome,
) -> None:
    """A message that failed while Gmail served others of its kind (`served_alike`:
    other messages for a message fetched alone, anything for a thread's member) is
    charged a failure and waits longer before each new attempt; after
    MAILSYNC_UNAVAILABLE_AFTER_ATTEMPTS it is unavailable. Rate limits and outages
    charge nothing: the claim is released (after an outage, once the outage wait
    has passed, so the chain does not hammer a failing Gmail)."""
    now = timezone.now()
    charged = {
        message_id: error
        for message_id, error in errors.items()
        if served_alike(message_id) and not isinstance(error, gmail.RateLimited)
    }
    spared = [m for m in errors if m not in charged]
    # Gmail down as a whole: the run waits it out (runs.note_failure); part of it
    # down (the messages, not the threads): these wait, so the chain goes on.
    waits = [
        m for m in spared if outcome.outage is None and isinstance(errors[m], gmail.TransientError)
    ]
    EmailMessage.objects.filter(pk__in=[pks[m] for m in spared if m not in waits]).update(
        claimed_until=None, claim_slot=None
    )
    EmailMessage.objects.filter(pk__in=[pks[m] for m in waits]).update(
        claimed_until=now + dt.timedelta(seconds=settings.MAILSYNC_OUTAGE_RETRY_SECONDS),
        claim_slot=None,
    )
    if not charged:
        return
    failures = dict(
        EmailMessage.objects.filter(pk__in=[pks[m] for m in charged]).values_list(
            "pk", "fetch_failures"
        )
    )
    for message_id, error in charged.items():
        pk = pks[message_id]
        if pk not in failures:
            continue  # deleted meanwhile (history)
        attempts = failures[pk] + 1
        row = EmailMessage.objects.filter(pk=pk)
        if attempts >= settings.MAILSYNC_UNAVAILABLE_AFTER_ATTEMPTS:
            row.update(
                fetch_failures=attempts,
                last_fetch_error=str(error)[:2000],
                unavailable_since=now,
                claimed_until=None,
            )
            outcome.unavailable += 1
        else:
            wait = settings.MAILSYNC_MESSAGE_RETRY_SECONDS * 2 ** (attempts - 1)
            row.update(
                fetch_failures=attempts,
                last_fetch_error=str(error)[:2000],
                claimed_until=now + dt.timedelta(seconds=wait),
                claim_slot=None,
            )
        outcome.failed_alone += 1


def _most_telling(errors) -> gmail.GmailError:
    """The error a whole-batch failure is waited out by: a rate limit (its own wait)
    before a server error."""
    errors = list(errors)
    limited = [e for e in errors if isinstance(e, gmail.RateLimited)]
    if limited:
        return max(limited, key=lambda e: e.retry_after)
    transient = [e for e in errors if isinstance(e, gmail.TransientError)]
    return transient[0] if transient else errors[0]


def _record_batch_progress(user_id: int, downloaded: int) -> bool:
    """Every batch moves the user's runs on (the watchdog reads `updated_at`), in the
    transaction that stores it: the messages it downloaded count in the runs'
    `num_fetched` (their rate); the initial run's progress is the mailbox totals, read,
    not counted (as completion.refresh_counts sets it, here in one UPDATE). Returns
    whether a run carries a note of failures (runs.clear_failure_notes) to clear."""
    now = timezone.now()
    # Locked before the totals are read: a batch stored beside this one has then
    # committed, and its messages count in the totals read (the progress is exact).
    active = list(
        user_runs(user_id)
        .select_for_update()
        .order_by("pk")
        .values_list("pk", "status", "sync_type", "failures_in_a_row", "error_message")
    )
    moving = [
        (pk, sync_type) for pk, status, sync_type, _, _ in active if status == Status.IN_PROGRESS
    ]
    moved = {"batches_completed": F("batches_completed") + 1, "updated_at": now}
    others = [pk for pk, sync_type in moving if sync_type != SyncType.INITIAL]
    if others:
        SyncProgress.objects.filter(pk__in=others).update(
            num_fetched=Case(
                When(sync_type=SyncType.LABELS, then=F("num_fetched")),
                default=F("num_fetched") + downloaded,
            ),
            **moved,
        )
    initial = [pk for pk, sync_type in moving if sync_type == SyncType.INITIAL]
    if initial:
        totals = counters.read(user_id)
        SyncProgress.objects.filter(pk__in=initial).update(
            num_fetched=F("num_fetched") + downloaded,
            # Until the listing ends the profile's total (set when the run began) is the
            # better one: the progress bar must not jump backwards as pages arrive.
            num_total=Case(
                When(listing_completed=True, then=Value(totals.messages)),
                default=Greatest(F("num_total"), Value(totals.messages)),
                output_field=SyncProgress._meta.get_field("num_total"),
            ),
            num_processed=totals.fetched + totals.unavailable,
            **moved,
        )
    return any(
        failures or message.startswith((RETRY_NOTE, "Paused"))
        for _, _, _, failures, message in active
    )
