"""The progress the user watches, step by step through a real sync (emulator, inline):
one figure that never goes back, and a rate of what this run downloaded."""

from __future__ import annotations

from collections import deque

import pytest

from mailsync import sync
from mailsync.status import mailbox_status

pytestmark = pytest.mark.django_db


def run_sampling(user, run) -> list[dict]:
    """run_inline, with the user's status read after every step."""
    samples = []
    queue = deque(sync.resume_steps(run))
    while queue:
        queue.extend(sync.run_step(queue.popleft()))
        samples.append(mailbox_status(user))
    run.refresh_from_db()
    return samples


def test_the_first_sync_figure_never_goes_back_and_has_one_total(connected_mailbox, settings):
    settings.MAILSYNC_BATCH_SIZE = 50  # several batches between listing pages
    settings.MAILSYNC_FETCH_TASK_SECONDS = 0  # one batch per step: the figure after each
    settings.MAILSYNC_LIST_TASK_SECONDS = 0  # and one listing page per step
    user, _ = connected_mailbox(count=1200)  # three listing pages of 500

    samples = run_sampling(user, sync.start_initial_sync(user))

    figures = [s["progress"]["percentage"] for s in samples]
    assert figures == sorted(figures), figures
    assert figures[-1] == 100
    assert len(set(figures)) > 5, figures  # it moved in steps, not in one jump
    running = [s for s in samples if s["active"]]
    # While it runs, one total: Gmail's count, not the ids listed so far.
    assert {s["progress"]["total"] for s in running} == {1200}
    # The mirror's own fetched / listed would have gone back as pages arrived.
    mirror = [s["stages"]["messages"]["percentage"] for s in running]
    assert mirror != sorted(mirror)
    assert running[0]["active_run"]["title"] == "First sync"


def test_the_rate_counts_only_what_the_run_downloaded(connected_mailbox):
    user, _ = connected_mailbox(count=120)
    first = sync.start_initial_sync(user)
    sync.run_inline(sync.resume_steps(first))
    first.refresh_from_db()
    assert first.num_fetched == 120
    assert first.resync is False

    user.refresh_from_db()
    sync.reset_sync_state(user)
    user.refresh_from_db()
    again = sync.start_initial_sync(user)
    samples = run_sampling(user, again)

    assert again.status == "completed", again.error_message
    assert again.resync is True
    assert again.num_fetched == 0  # everything was mirrored already
    latest = samples[-1]["latest_run"]
    assert latest["title"] == "Full resync"
    assert latest["rate"] is None  # not 1900 messages/s
    assert all(s["active_run"] is None or s["active_run"]["rate"] is None for s in samples)


def test_batches_stored_by_two_workers_all_count_before_the_run_completes(connected_mailbox):
    """Two workers store the last two batches: each batch's downloads are recorded in
    the transaction that stores it, so the run cannot complete without them (600
    messages once showed 550 downloaded)."""
    from mailsync import gmail

    user, _ = connected_mailbox(count=100)
    run = sync.start_initial_sync(user)
    queue = deque(sync.resume_steps(run))
    while queue:  # the profile, the labels and the listing; no batch yet
        step = queue.popleft()
        if step.stage != "fetch_batch":
            queue.extend(sync.run_step(step))
    client = gmail.GmailClient(user.pk)

    def claim_and_fetch() -> tuple:
        pks = {row.gmail_id: row.pk for row in sync.claim_messages(user.pk, 50)}
        return pks, client.get_messages(list(pks))

    first = claim_and_fetch()  # worker A
    second = claim_and_fetch()  # worker B
    sync.store_messages(user.pk, *first)
    assert not sync.complete_initial_sync_if_done(user.pk)  # B's batch is not stored yet
    sync.store_messages(user.pk, *second)
    assert sync.complete_initial_sync_if_done(user.pk)

    run.refresh_from_db()
    assert run.status == "completed"
    assert run.num_fetched == 100
