"""Start (and optionally follow) a sync of one user from the command line."""

from __future__ import annotations

import sys
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError, connection

from mailsync import sync
from mailsync.models import SyncProgress
from mailsync.status import mailbox_status, run_summary, run_title

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
        summary = run_summary(run)
        self.stdout.write(
            f"{summary['title']} (run {run.pk}, {run.sync_type}) for {target}: "
            f"{summary['status_words']}"
        )
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
        interactive = sys.stdout.isatty()
        started = time.monotonic()
        warned_no_worker = database_down = False
        while True:
            try:
                run.refresh_from_db()
                line, active = progress_line(run)
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
            self.stdout.write(
                ("\r" + line) if interactive else line, ending="" if interactive else "\n"
            )
            self.stdout.flush()
            if not active:
                if interactive:
                    self.stdout.write("")
                run.refresh_from_db()
                return run
            time.sleep(POLL_S)

    def _report(self, run: SyncProgress) -> None:
        title = run_title(run)
        if run.status == SyncProgress.Status.COMPLETED:
            self.stdout.write(
                self.style.SUCCESS(f"Run {run.pk} ({title}) completed: {_summary(run)}.")
            )
            return
        if run.status == SyncProgress.Status.FAILED:
            raise CommandError(f"Run {run.pk} ({title}) failed: {run.error_message}")
        raise CommandError(
            f"Run {run.pk} ({title}) is still {run_summary(run)['status_words']}"
            + (f": {run.error_message}" if run.error_message else ".")
        )


def _summary(run: SyncProgress) -> str:
    """What the run did, in the terms of its kind."""
    unavailable = (
        f", {run.num_unavailable} message(s) Gmail could not serve" if run.num_unavailable else ""
    )
    if run.sync_type == SyncProgress.SyncType.INITIAL:
        return (
            f"{run.num_processed} messages, {run.num_fetched} downloaded from Gmail{unavailable}"
        )
    if run.sync_type == SyncProgress.SyncType.LABELS:
        return f"{run.num_total} labels"
    changes = f"{run.num_added} added, {run.num_deleted} deleted, {run.num_relabelled} relabelled"
    if run.fell_back_to_full:
        changes += " (re-listed the mailbox)"
    return changes + unavailable


def progress_line(run: SyncProgress) -> tuple[str, bool]:
    """The run as the user's page shows it (mailbox_status): the progress figure of a
    full sync, the changes of other runs, the rate and time left. And whether it is
    still active."""
    status = mailbox_status(run.user)
    summary = next((r for r in status["active_runs"] if r["id"] == run.pk), None)
    if summary is None:  # finished (or superseded): its final numbers
        run.refresh_from_db()
        summary = run_summary(run)
    parts = [f"{summary['title']} {summary['status_words']}"]
    if run.sync_type == SyncProgress.SyncType.INITIAL:
        figure = (
            status["progress"]
            if summary["active"]
            else {
                "done": summary["num_processed"],
                "total": summary["num_total"],
                "percentage": summary["percentage"],
            }
        )
        width = 30
        filled = width * figure["percentage"] // 100
        bar = "#" * filled + "-" * (width - filled)
        parts.insert(0, f"[{bar}] {figure['done']}/{figure['total']} ({figure['percentage']}%)")
        if summary["rate"] is not None:
            parts.append(f"{summary['rate']:.1f} msg/s")
        if summary["eta_display"]:
            parts.append(f"{summary['eta_display']} left")
    else:
        parts.append(
            f"{summary['num_added']} new, {summary['num_deleted']} deleted, "
            f"{summary['num_relabelled']} relabelled"
        )
    return "  ".join(parts), summary["active"]
