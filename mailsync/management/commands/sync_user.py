"""Start (and optionally follow) a sync of one user from the command line."""

from __future__ import annotations

import sys
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from mailsync import sync
from mailsync.models import SyncProgress

POLL_S = 1.0


class Command(BaseCommand):
    help = (
        "Sync one user's mailbox. USER is an email or id. With no type flag: the initial "
        "sync if it has not completed, else an incremental one. With --wait or --inline "
        "the exit status is 0 only if the run completed."
    )

    def add_arguments(self, parser):
        parser.add_argument("user")
        kind = parser.add_mutually_exclusive_group()
        kind.add_argument("--full", action="store_true", help="full (initial) sync")
        kind.add_argument("--labels", action="store_true", help="labels only")
        kind.add_argument("--incremental", action="store_true", help="changes since last sync")
        kind.add_argument(
            "--health-check",
            action="store_true",
            help="compare the mirror with Gmail and repair drift (the nightly check)",
        )
        parser.add_argument("--wait", action="store_true", help="follow the run until it ends")
        parser.add_argument(
            "--inline", action="store_true", help="run the whole sync here, without a cluster"
        )
        parser.add_argument(
            "--patience",
            type=float,
            default=30.0,
            metavar="SECONDS",
            help="with --wait: say so when no worker has taken the run after this long",
        )

    def handle(self, *args, user, full, labels, incremental, health_check, wait, inline, **options):
        self.patience = options["patience"]
        target = self._find_user(user)
        if labels:
            run = sync.start_label_sync(target)
        elif full:
            run = sync.start_initial_sync(target)
        elif incremental:
            run = sync.start_incremental_sync(target)
        elif health_check:
            run = sync.start_health_check(target)
        else:
            run = sync.start_sync(target)
        self.stdout.write(f"Sync run {run.pk} ({run.sync_type}) for {target}: {run.status}")
        if inline:
            run = sync.run_until_finished(run)
        elif wait:
            run = self._follow(run)
        else:
            return
        self._report(run)

    def _find_user(self, value: str):
        User = get_user_model()
        query = User.objects.filter(pk=int(value)) if value.isdigit() else None
        if query is None or not query.exists():
            query = User.objects.filter(email__iexact=value)
        found = query.first()
        if found is None:
            raise CommandError(f"no user with id or email {value!r}")
        return found

    def _follow(self, run: SyncProgress) -> SyncProgress:
        from mailsync.status import run_rate_and_eta

        interactive = sys.stdout.isatty()
        started = time.monotonic()
        warned_no_worker = database_down = False
        while True:
            try:
                run.refresh_from_db()
            except DatabaseError as exc:
                # A database restart or failover: reconnect and keep following.
                if not database_down:
                    self.stderr.write(f"\nDatabase unreachable ({exc}); retrying...")
                database_down = True
                connection.close()
                time.sleep(POLL_S)
                continue
            if database_down:
                self.stderr.write("Database reachable again.")
                database_down = False
            waited = time.monotonic() - started
            pending = run.status == SyncProgress.Status.PENDING
            if pending and waited > self.patience and not warned_no_worker:
                self.stderr.write(
                    f"\nNo worker has picked this up in {waited:.0f} s: is qcluster "
                    "running? (manage.py qcluster)"
                )
                warned_no_worker = True
            rate, eta = run_rate_and_eta(run)
            line = _progress_line(run, rate, eta)
            self.stdout.write(
                ("\r" + line) if interactive else line, ending="" if interactive else "\n"
            )
            self.stdout.flush()
            if not run.is_active:
                if interactive:
                    self.stdout.write("")
                return run
            time.sleep(POLL_S)

    def _report(self, run: SyncProgress) -> None:
        if run.status == SyncProgress.Status.COMPLETED:
            self.stdout.write(self.style.SUCCESS(f"Run {run.pk} completed: {_summary(run)}."))
            return
        if run.status == SyncProgress.Status.FAILED:
            raise CommandError(f"Run {run.pk} failed: {run.error_message}")
        raise CommandError(
            f"Run {run.pk} is still {run.get_status_display()}"
            + (f": {run.error_message}" if run.error_message else ".")
        )


def _summary(run: SyncProgress) -> str:
    """What the run did, in the terms of its kind."""
    unavailable = (
        f", {run.num_unavailable} message(s) Gmail could not serve" if run.num_unavailable else ""
    )
    if run.sync_type == SyncProgress.SyncType.INITIAL:
        return f"{run.num_processed} messages{unavailable}"
    if run.sync_type == SyncProgress.SyncType.LABELS:
        return f"{run.num_total} labels"
    changes = f"{run.num_added} added, {run.num_deleted} deleted, {run.num_relabelled} relabelled"
    if run.fell_back_to_full:
        changes += " (re-listed the mailbox)"
    return changes + unavailable


def _progress_line(run: SyncProgress, rate: float | None, eta: float | None) -> str:
    if run.sync_type != SyncProgress.SyncType.INITIAL:
        return f"{run.get_sync_type_display()}: {_summary(run)}  {run.get_status_display()}"
    width = 30
    filled = int(width * run.percentage() / 100)
    bar = "#" * filled + "-" * (width - filled)
    parts = [f"[{bar}] {run.num_processed}/{run.num_total} ({run.percentage()}%)"]
    if rate:
        parts.append(f"{rate:.1f} msg/s")
    if eta is not None:
        parts.append(f"ETA {int(eta)} s")
    parts.append(run.get_status_display())
    if run.error_message and run.is_active:
        parts.append(run.error_message)
    return "  ".join(parts)
