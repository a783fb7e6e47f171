"""Start (and optionally follow) a sync of one user from the command line."""

from __future__ import annotations

import sys
import time

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from mailsync import sync
from mailsync.models import SyncProgress

POLL_S = 1.0


class Command(BaseCommand):
    help = (
        "Sync one user's mailbox. USER is an email or id. With no type flag: the initial "
        "sync if it has not completed, else an incremental one."
    )

    def add_arguments(self, parser):
        parser.add_argument("user")
        kind = parser.add_mutually_exclusive_group()
        kind.add_argument("--full", action="store_true", help="full (initial) sync")
        kind.add_argument("--labels", action="store_true", help="labels only")
        kind.add_argument("--incremental", action="store_true", help="changes since last sync")
        parser.add_argument("--wait", action="store_true", help="follow the run until it ends")
        parser.add_argument(
            "--inline", action="store_true", help="run the whole sync here, without a cluster"
        )

    def handle(self, *args, user, full, labels, incremental, wait, inline, **options):
        target = self._find_user(user)
        if labels:
            run = sync.start_label_sync(target)
        elif full:
            run = sync.start_initial_sync(target)
        elif incremental:
            run = sync.start_incremental_sync(target)
        else:
            run = sync.start_sync(target)
        self.stdout.write(f"Sync run {run.pk} ({run.sync_type}) for {target}: {run.status}")
        if inline:
            sync.run_inline(sync.resume_steps(run))
            run.refresh_from_db()
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
        while True:
            run.refresh_from_db()
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
            self.stdout.write(
                self.style.SUCCESS(f"Run {run.pk} completed: {run.num_processed} messages.")
            )
            return
        if run.status == SyncProgress.Status.FAILED:
            raise CommandError(f"Run {run.pk} failed: {run.error_message}")
        self.stdout.write(f"Run {run.pk} is {run.status}.")


def _progress_line(run: SyncProgress, rate: float | None, eta: float | None) -> str:
    width = 30
    filled = int(width * run.percentage() / 100)
    bar = "#" * filled + "-" * (width - filled)
    parts = [f"[{bar}] {run.num_processed}/{run.num_total} ({run.percentage()}%)"]
    if rate:
        parts.append(f"{rate:.1f} msg/s")
    if eta is not None:
        parts.append(f"ETA {int(eta)} s")
    parts.append(run.get_status_display())
    return "  ".join(parts)
