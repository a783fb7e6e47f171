"""The sync engine: plain, bounded, re-runnable stages, one module per stage.

Each stage does one step for one user (read the profile and labels, list one page
of ids, fetch one batch of messages, apply one incremental sync) and returns the
steps that should follow. Django-Q2 tasks (mailsync/tasks.py) run a stage and
enqueue what it returns; `run_inline` runs the same stages in this process. The
database, not the broker, holds what remains to do: unfetched messages are rows
with `internal_date` NULL, the listing resumes from the run's saved page token, so
any step may run twice, or be lost and re-created by the watchdog, harmlessly.

| module | stage |
|---|---|
| `steps` | `Step` and `enqueue` (after commit) |
| `runs` | starting runs (one active per user and type), ending them, notes on them |
| `labels` | labels with their metadata; messages' label links |
| `initial` | the full sync: profile, labels, listing page by page |
| `claims` | atomic claims of the next batch: messages alone, threads whole |
| `batches` | batch slots, one batch request per step |
| `store` | storing a batch: messages, labels, totals, failures, progress |
| `completion` | when a run is done |
| `incremental` | history pages |
| `resync` | re-listing and label rescans (expired history, health check) |
| `resume` | the steps that carry a run on, from the database alone |
| `runner` | running a step (a task) or everything that follows (inline) |
"""

from __future__ import annotations

from .batches import fetch_batch, fill_batch_slots
from .claims import claim_messages, claim_work
from .completion import complete_incremental_if_done, complete_initial_sync_if_done
from .incremental import apply_history_page, incremental_sync
from .initial import begin_initial_sync, list_page
from .labels import import_labels, sync_labels
from .pending import claimable_messages, messages_to_fetch, release_claims
from .resume import resume_steps
from .resync import begin_health_check, fall_back_to_full_resync, rescan_label_page
from .runner import STAGES, run_inline, run_step, run_until_finished
from .runs import (
    RELISTING_TYPES,
    access_revoked,
    active_run,
    active_runs,
    fail_runs,
    reset_sync_state,
    start_health_check,
    start_incremental_sync,
    start_initial_sync,
    start_label_sync,
    start_sync,
)
from .steps import PRIORITY_STAGES, Step, enqueue
from .store import store_messages

__all__ = [
    "PRIORITY_STAGES",
    "RELISTING_TYPES",
    "STAGES",
    "Step",
    "access_revoked",
    "active_run",
    "active_runs",
    "apply_history_page",
    "begin_health_check",
    "begin_initial_sync",
    "claim_messages",
    "claim_work",
    "claimable_messages",
    "complete_incremental_if_done",
    "complete_initial_sync_if_done",
    "enqueue",
    "fail_runs",
    "fall_back_to_full_resync",
    "fetch_batch",
    "fill_batch_slots",
    "import_labels",
    "incremental_sync",
    "list_page",
    "messages_to_fetch",
    "release_claims",
    "rescan_label_page",
    "reset_sync_state",
    "resume_steps",
    "run_inline",
    "run_step",
    "run_until_finished",
    "start_health_check",
    "start_incremental_sync",
    "start_initial_sync",
    "start_label_sync",
    "start_sync",
    "store_messages",
    "sync_labels",
]
