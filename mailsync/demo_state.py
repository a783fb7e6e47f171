"""What one `make demo` run owns: its database, and the mirror of its emulator.

- **One demo per database** (so one per checkout with the default `db.sqlite3`): a demo
  holds an exclusive `flock` on a file beside the database (for PostgreSQL, in the
  temporary directory, named after the database) for as long as it runs. The kernel
  drops the lock when the process ends, however it ends, so a stale lock cannot exist.
  A second demo is refused before it starts anything, with the holder's pid and URL.
  Two demos on one database reset each other's admin password and sync each other's
  users against the wrong emulator.
- **The mirror follows the emulator**: the emulator is generated anew at every start
  (its tokens, history ids and the mail that arrived while it ran are gone), so the
  demo forgets the previous run's users of the emulator's mailboxes and the tasks they
  left queued. Signing in again starts a first sync against the new mailbox, and the
  mirror matches it exactly. (Keeping the mirror would leave it with mail the new
  emulator never had, and with tokens it refuses.)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from django.conf import settings


class DemoAlreadyRunning(Exception):
    def __init__(self, path: Path, holder: dict[str, Any]):
        self.path = path
        self.holder = holder
        super().__init__(f"another demo holds {path}")


def lock_path() -> Path:
    """The lock file of the configured database."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        database = Path(db["NAME"]).resolve()
        return database.with_name(database.name + ".demo-lock")
    identity = f"{db['ENGINE']}|{db.get('HOST')}|{db.get('PORT')}|{db['NAME']}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"mailsync-demo-{digest}.lock"


class DemoLock:
    """An exclusive, non-blocking flock held from acquire() to release() (or exit)."""

    def __init__(self, path: Path):
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self, **holder: Any) -> None:
        """Take the lock and write who holds it, or raise DemoAlreadyRunning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                found = json.loads(handle.read() or "{}")
            except ValueError:
                found = {}
            handle.close()
            raise DemoAlreadyRunning(self.path, found) from None
        handle.seek(0)
        handle.truncate()
        started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        handle.write(json.dumps({"pid": os.getpid(), "started": started, **holder}))
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is None:
            return
        with contextlib.suppress(OSError):
            self._file.seek(0)
            self._file.truncate()
        self._file.close()  # closing drops the flock
        self._file = None


def forget_mailboxes(emails: list[str]) -> int:
    """Delete the users mirroring these mailboxes (with their mirror, tokens and runs)
    and every queued task of the previous run. Returns how many users were deleted."""
    from django.contrib.auth import get_user_model
    from django_q.models import OrmQ

    users = get_user_model().objects.filter(email__in=emails)
    count = users.count()
    if count:
        users.delete()
    # Their tasks would only find nobody; a run of the new users enqueues its own.
    OrmQ.objects.all().delete()
    return count
