"""Message batches: lease a slot, claim work (see claims.py), fetch it in one batch
request, store it (see store.py); at most MAILSYNC_BATCHES_IN_FLIGHT chains per user."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Min, Q
from django.utils import timezone

from .. import counters, gmail, quota
from ..models import BatchSlot, EmailMessage, SyncProgress
from ..workers import current_holder
from .claims import Work, claim_work, claimable_now
from .completion import complete_incremental_if_done, complete_initial_sync_if_done
from .pending import lease_seconds, messages_to_fetch, release_claims
from .runs import note_failure, resume_at, wait_or_resume_later, worth_retrying_now
from .steps import Step
from .store import store_messages

Status = SyncProgress.Status

# How long a batch chain waits before looking again at messages other live chains
# hold; beyond CLAIM_WAIT_MAX_S (a dead worker's lease) the watchdog takes over.
CLAIM_RETRY_S = 1.0
CLAIM_WAIT_MAX_S = 5.0


def fill_batch_slots(user_id: int) -> list[Step]:
    """Lease free batch slots (at most MAILSYNC_BATCHES_IN_FLIGHT per user) for the
    work that is waiting, one fetch_batch chain per slot."""
    now = timezone.now()
    enough = settings.MAILSYNC_BATCHES_IN_FLIGHT * settings.MAILSYNC_BATCH_SIZE
    # Counted up to what the slots can take, never the whole mailbox.
    waiting = claimable_now(user_id, now)[:enough].count()
    if not waiting:
        _wake_up_for_waiting_messages(user_id, now)
        return []
    wanted = min(settings.MAILSYNC_BATCHES_IN_FLIGHT, -(-waiting // settings.MAILSYNC_BATCH_SIZE))
    BatchSlot.objects.bulk_create(
        [BatchSlot(user_id=user_id, number=n) for n in range(settings.MAILSYNC_BATCHES_IN_FLIGHT)],
        ignore_conflicts=True,
    )
    free = Q(leased_until__isnull=True) | Q(leased_until__lt=now)
    lease = now + dt.timedelta(seconds=lease_seconds())
    steps = []
    for slot in BatchSlot.objects.filter(
        free, user_id=user_id, number__lt=settings.MAILSYNC_BATCHES_IN_FLIGHT
    ).order_by("number"):
        if len(steps) >= wanted:
            break
        if BatchSlot.objects.filter(free, pk=slot.pk).update(
            leased_until=lease, holder=current_holder()
        ):
            steps.append(Step("fetch_batch", user_id, (slot.number,)))
    return steps


def fetch_batch(user_id: int, slot: int) -> list[Step]:
    """Stage 4: fetch batches (messages alone and threads whole) and store each; keep
    the slot and go on while work remains: in this task for up to
    MAILSYNC_FETCH_TASK_SECONDS, then in a new one.

    One task per batch cost a broker round trip, a task's set-up and a Gmail client
    per 25 messages (issue 13); the bound keeps a worker from being held by one
    mailbox for long while other users wait."""
    budget = min(settings.MAILSYNC_FETCH_TASK_SECONDS, settings.MAILSYNC_TASK_MAX_SECONDS / 4)
    deadline = time.monotonic() + budget
    # A chain runs one step at a time, so claims its slot still holds are from an
    # attempt that died before storing (a database blip, a killed worker): free them
    # now rather than when their lease runs out.
    release_claims(user_id, [slot])
    task = _ChainTask(user_id)
    while True:
        stored, steps = _one_batch(user_id, slot, task)
        if not stored or time.monotonic() >= deadline:
            return steps


@dataclass
class _ChainTask:
    """What one task of a batch chain keeps from batch to batch: its Gmail client, made
    at the first fetch (a task that finds nothing to claim makes none)."""

    user_id: int
    client: gmail.GmailClient | None = None
    batches: int = 0

    def batch_size(self) -> int:
        """Full batches spread a store's fixed cost (its claim, its transaction, ~20
        statements) over MAILSYNC_BATCH_SIZE messages (issue 13). But while nothing of
        a mailbox that needs more than one batch is fetched yet, a task's first batch is
        one request's worth of parts (quota.request_parts): the first messages of its
        sync reach the mirror after one round trip to Gmail instead of a full batch's
        requests one after the other. (A mailbox that fits in one batch gets it whole:
        a first small batch would only cost it a second store.)"""
        full = settings.MAILSYNC_BATCH_SIZE
        if self.batches or counters.read(self.user_id).fetched:
            return full
        if claimable_now(self.user_id, timezone.now())[: full + 1].count() <= full:
            return full
        return quota.request_parts(full)

    def gmail_client(self) -> gmail.GmailClient:
        if self.client is None:
            self.client = gmail.GmailClient(self.user_id)
        return self.client


def _one_batch(user_id: int, slot: int, task: _ChainTask) -> tuple[bool, list[Step]]:
    """Claim, fetch and store one batch: (whether one was stored, the steps that
    follow if the chain's task ends here)."""
    parts = task.batch_size()
    task.batches += 1
    work = claim_work(user_id, parts, slot)
    if not work:
        return False, _nothing_to_claim(user_id, slot)
    if task.client is None:
        # Once per task: the lease outlives any task (pending.lease_seconds).
        _renew_slot(user_id, slot)
    pks = work.pks()
    # Messages that already failed alone are tried beside one Gmail serves for sure,
    # so that a failure tells "this message" from "Gmail as a whole" apart.
    probe = _probe_id(user_id) if work.retries_only else None
    try:
        fetched = _fetch(task.gmail_client(), work, probe)
    except gmail.GmailError as exc:
        EmailMessage.objects.filter(pk__in=pks.values()).update(claimed_until=None)
        if isinstance(exc, gmail.TransientError):
            return False, _retry_later(user_id, slot, exc)
        if not (isinstance(exc, gmail.RateLimited) and worth_retrying_now(exc)):
            _release_slot(user_id, slot)  # this chain ends; fill_batch_slots restarts one
        raise
    outcome = store_messages(
        user_id, pks, fetched.messages, fetched.threads, work.threads, slot=slot
    )
    if outcome.outage is not None:
        if isinstance(outcome.outage, gmail.RateLimited):
            if not worth_retrying_now(outcome.outage):
                _release_slot(user_id, slot)
            raise outcome.outage
        return False, _retry_later(user_id, slot, outcome.outage)
    if len(pks) < parts:
        # A short batch: little or nothing is left, so the run may be done. (After a
        # full one the chain claims again, and finding nothing completes the run.)
        _complete_finished_runs(user_id)
    return True, [Step("fetch_batch", user_id, (slot,))]


def _fetch(client: gmail.GmailClient, work: Work, probe: str | None) -> gmail.Fetched:
    fetched = client.fetch(
        [row.gmail_id for row in work.messages], list(work.threads), probe_id=probe
    )
    result = fetched.messages
    refused_raw = [
        message_id
        for message_id, error in result.failed.items()
        if isinstance(error, gmail.PermanentError) and error.status == 400
    ]
    if refused_raw and settings.MAILSYNC_MESSAGE_FORMAT == "raw":
        # Gmail has no raw form of some messages (chats): take them parsed instead.
        again = client.get_messages(refused_raw, fmt="full")
        for message_id in refused_raw:
            result.failed.pop(message_id, None)
        result.found.update(again.found)
        result.gone.update(again.gone)
        result.failed.update(again.failed)
    return fetched


def _probe_id(user_id: int) -> str | None:
    return (
        EmailMessage.objects.filter(user_id=user_id, internal_date__isnull=False)
        .order_by("-internal_date")
        .values_list("gmail_id", flat=True)
        .first()
    )


def _retry_later(user_id: int, slot: int, error: gmail.GmailError) -> list[Step]:
    """Gmail failed as a whole: nothing is used up; the run says so and waits."""
    if wait_or_resume_later(user_id, note_failure(user_id, error)):
        return [Step("fetch_batch", user_id, (slot,))]
    _release_slot(user_id, slot)
    return []


def _nothing_to_claim(user_id: int, slot: int) -> list[Step]:
    """No message is claimable now: either nothing is left (the chain ends), or the
    rest is held by other chains or waits to be retried."""
    now = timezone.now()
    if claimable_now(user_id, now).exists():
        # Claimable, but another message of each one's thread is held by a live chain
        # (claims._outside_held_threads): that chain stores its batch in seconds.
        _renew_slot(user_id, slot)
        time.sleep(CLAIM_RETRY_S)
        return [Step("fetch_batch", user_id, (slot,))]
    held_until = messages_to_fetch(user_id=user_id).aggregate(until=Min("claimed_until"))["until"]
    if held_until is None:
        _release_slot(user_id, slot)
        _complete_finished_runs(user_id)
        return []
    if (held_until - now).total_seconds() <= CLAIM_WAIT_MAX_S:
        # Live chains finish their batches in seconds: keep the slot and look again.
        _renew_slot(user_id, slot)
        time.sleep(CLAIM_RETRY_S)
        return [Step("fetch_batch", user_id, (slot,))]
    # A message waits out its retry delay, or a dead worker's lease runs out: no task
    # spins meanwhile; the watchdog resumes the run then. The rest held by other live
    # chains is theirs to store: this chain just ends (a resume time would also hide
    # the run from the watchdog's look for dead workers, were they killed meanwhile).
    _release_slot(user_id, slot)
    others = BatchSlot.objects.filter(user_id=user_id, leased_until__gt=now).exists()
    waits = messages_to_fetch(
        user_id=user_id, claim_slot__isnull=True, claimed_until__gt=now
    ).aggregate(until=Min("claimed_until"))["until"]
    if others and waits is None:
        return []
    resume_at(user_id, waits if others else held_until)
    return []


def _complete_finished_runs(user_id: int) -> None:
    """After a batch: whichever of the user's runs waited only for fetches is done."""
    complete_initial_sync_if_done(user_id)
    complete_incremental_if_done(user_id)


def _renew_slot(user_id: int, slot: int) -> None:
    lease = timezone.now() + dt.timedelta(seconds=lease_seconds())
    BatchSlot.objects.filter(user_id=user_id, number=slot).update(
        leased_until=lease, holder=current_holder()
    )


def _release_slot(user_id: int, slot: int) -> None:
    BatchSlot.objects.filter(user_id=user_id, number=slot).update(leased_until=None)


def _wake_up_for_waiting_messages(user_id: int, now) -> None:
    """Messages to fetch that all wait (a retry delay, a dead worker's lease) and no
    chain to see them through: the watchdog resumes the runs when the first wait ends."""
    if BatchSlot.objects.filter(user_id=user_id, leased_until__gt=now).exists():
        return  # a live chain looks again by itself
    held_until = messages_to_fetch(user_id=user_id, claimed_until__gt=now).aggregate(
        until=Min("claimed_until")
    )["until"]
    if held_until is not None:
        resume_at(user_id, held_until)
