"""`make demo`: the whole application on one machine, with a local Gmail emulator.

Starts, each in its own process group:

1. the Gmail API + OAuth emulator (`python -m gmail_emulator`), whose first stdout
   line (JSON) gives its base URL and client credentials;
2. `manage.py migrate`, then an operator account (admin / a generated password);
3. `manage.py qcluster` (the sync workers) and `manage.py runserver`.

Django settings are read once per process, and this process read them before the
emulator existed: everything that needs GMAIL_EMULATOR_URL therefore runs in a child
process started with the demo environment. Ctrl-C or SIGTERM stops every child within
5 s and exits 0; a child that dies on its own stops the rest and exits 1 with its last
lines. One demo runs per database, and each start forgets the previous run's mirror of
the (regenerated) emulator: see mailsync/demo_state.py.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from mailsync.demo_state import DemoAlreadyRunning, DemoLock, forget_mailboxes, lock_path

ROOT = Path(settings.BASE_DIR)
HOST = "127.0.0.1"
DEMO_MAILBOX = "demo@example.com"
SECOND_MAILBOX = "second@example.com"
ADMIN_USERNAME = "admin"
ADMIN_EMAIL = "admin@example.com"
TAIL_LINES = 40
STARTUP_TIMEOUT_S = 120
# After Ctrl-C, how long the web server and the workers get before they are killed.
# The workers would finish the tasks they hold, each waiting for Gmail's quota (3.5-4 s
# measured); killing them is safe: every task may run twice, and the next start
# forgets this run's mirror anyway (mailsync/demo_state.py). With the emulator's own
# stop, the demo ends within 5 s of Ctrl-C.
STOP_TIMEOUT_S = 3
EMULATOR = "gmail-emulator"
DEMO_PUSH_TOPIC = "projects/demo/topics/gmail"
SECOND_DEMO_DATABASE = "DATABASE_URL=sqlite:///demo2.sqlite3"


class Stopped(Exception):
    """SIGINT or SIGTERM arrived: stop everything and exit 0."""


class ChildFailed(Exception):
    def __init__(self, child: Child, what: str):
        self.child = child
        super().__init__(what)


class Child:
    """One subprocess in its own process group; its output goes to a log file, and
    the last lines are kept for the error message should it die."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log_dir: Path,
        echo=None,
        first_line: bool = False,
    ):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._log = self.log_path.open("a", encoding="utf-8", errors="replace")
        self._echo = echo
        self._pumps: list[threading.Thread] = []
        self._terminated = False
        self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches us only; we stop the group ourselves
        )
        self._pump(self.process.stderr)
        if not first_line:  # else read_first_line() starts copying stdout
            self._pump(self.process.stdout)

    def _pump(self, stream) -> None:
        thread = threading.Thread(target=self._copy, args=(stream,), daemon=True)
        thread.start()
        self._pumps.append(thread)

    def _copy(self, stream) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail.append(line)
            with contextlib.suppress(ValueError):  # closed by stop() after its deadline
                self._log.write(line + "\n")
                self._log.flush()
            if self._echo:
                self._echo(f"[{self.name}] {line}")
        stream.close()

    def read_first_line(self, timeout: float, stop: threading.Event) -> str:
        """The first stdout line (then stdout is copied like stderr)."""
        deadline = time.monotonic() + timeout
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.process.stdout, selectors.EVENT_READ)
            while b"\n" not in buffer:
                if stop.is_set():
                    raise Stopped
                if time.monotonic() > deadline:
                    raise ChildFailed(self, f"printed nothing within {timeout:.0f} s")
                if selector.select(0.2):
                    chunk = os.read(self.process.stdout.fileno(), 65536)
                    if not chunk:
                        self.wait_quietly(5)
                        raise ChildFailed(self, "exited before it was ready")
                    buffer += chunk
        line, _, rest = buffer.partition(b"\n")
        if rest:
            self.tail.append(rest.decode("utf-8", "replace").rstrip("\n"))
        self._pump(self.process.stdout)
        return line.decode("utf-8", "replace")

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def wait_quietly(self, timeout: float) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout)
        for pump in self._pumps:
            pump.join(1)

    def terminate(self) -> None:
        """SIGTERM to the leader only, and only once. A qcluster leader then stops its
        workers once they have finished the tasks they hold; the workers keep SIGTERM's
        default action, so signalling the whole group would kill them mid-task. A second
        SIGTERM arriving while the leader's handler is setting its stop event deadlocks
        it on the event's lock (measured: 1 stop in 5 hung until SIGKILL at 15 s)."""
        if self.running and not self._terminated:
            self._terminated = True
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()

    def stop(self, deadline: float) -> bool:
        """Terminate, wait until `deadline`, then SIGKILL whatever is left of the group.
        Returns whether the child stopped in time by itself."""
        self.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(max(0.1, deadline - time.monotonic()))
        in_time = not self.running
        # The group: a child the leader left behind, or all of it after the deadline.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.wait_quietly(5)
        self._log.close()
        return in_time

    def last_lines(self) -> str:
        return "\n".join(self.tail) or "(no output)"


def _port_is_free(port: int) -> bool:
    if port == 0:
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (our own URL)
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


class Command(BaseCommand):
    help = (
        "Start the Gmail emulator, migrate, create an operator account, and run the sync "
        "workers and the web server until Ctrl-C."
    )

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000, help="web server port (8000)")
        parser.add_argument(
            "--emulator-port",
            type=int,
            default=8765,
            help="Gmail emulator port (8765; a free one if taken; 0 = any free port)",
        )
        parser.add_argument(
            "--messages",
            type=int,
            default=3000,
            help=f"messages in {DEMO_MAILBOX} (3000; {SECOND_MAILBOX} has 500)",
        )
        parser.add_argument(
            "--activity-per-minute",
            type=float,
            default=6,
            help="new mail and label changes the emulator makes per minute (6; 0 = none)",
        )
        parser.add_argument(
            "--latency-ms", type=float, default=20, help="emulated Gmail latency (20 ms)"
        )
        parser.add_argument(
            "--log-dir",
            type=Path,
            default=None,
            help="where the children's logs go (a new temporary directory)",
        )

    @staticmethod
    def _refuse_bad_options(options) -> None:
        """One clear line for a value the demo cannot use (not a traceback later)."""
        if not 1 <= options["port"] <= 65535:
            raise CommandError(f"--port {options['port']} is not a port (1-65535)")
        if not 0 <= options["emulator_port"] <= 65535:
            raise CommandError(
                f"--emulator-port {options['emulator_port']} is not a port (0-65535)"
            )
        if options["messages"] < 0:
            raise CommandError(f"--messages {options['messages']} must be 0 or more")
        if options["activity_per_minute"] < 0 or options["latency_ms"] < 0:
            raise CommandError("--activity-per-minute and --latency-ms must be 0 or more")

    # --- Orchestration ---------------------------------------------------------------
    def handle(self, *args, **options):
        self._refuse_bad_options(options)
        self.verbose = options["verbosity"] >= 2
        self.children: list[Child] = []
        self.stop_times: dict[str, float] = {}
        self.demo_lock: DemoLock | None = None
        self.stop_requested = threading.Event()
        self.log_dir = options["log_dir"] or Path(tempfile.mkdtemp(prefix="mailsync-demo-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self._run(options)
        except Stopped:
            # On a line of its own: the terminal has just echoed ^C.
            self._say("\nStopping the demo...")
        except ChildFailed as exc:
            self._stop_all()
            raise CommandError(
                f"{exc.child.name} {exc} (exit code {exc.child.process.returncode}); "
                f"everything else was stopped. Its last lines "
                f"(full log: {exc.child.log_path}):\n{exc.child.last_lines()}"
            ) from None
        finally:
            self._stop_all()
            if self.demo_lock is not None:
                self.demo_lock.release()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        times = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.stop_times.items())
        self._say(f"Demo stopped ({times}). Logs are in {self.log_dir}")

    def _on_signal(self, signum, frame) -> None:
        # Only set the flag: writing to stdout here could re-enter a write in progress.
        self.stop_requested.set()

    def _say(self, text: str) -> None:
        """Write and flush: through a pipe (`make demo | tee`) or into a file, stdout is
        block-buffered and the banner would not show."""
        self.stdout.write(text)
        self.stdout.flush()

    def _echo(self, line: str) -> None:
        self._say(line)

    def _start(self, name: str, args: list[str], env: dict[str, str], **kwargs) -> Child:
        echo = self._echo if self.verbose else None
        child = Child(name, args, env, self.log_dir, echo, **kwargs)
        self.children.append(child)
        return child

    def _stop_all(self) -> None:
        """Web and workers first (the workers finish the tasks they hold, which may
        still call Gmail), the emulator last."""
        emulators = [c for c in self.children if c.name == EMULATOR]
        others = [c for c in self.children if c.name != EMULATOR]
        started = time.monotonic()
        for child in others:
            child.terminate()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in others:
            stopped = child.stop(deadline)
            self.stop_times[child.name] = time.monotonic() - started
            if not stopped:
                self._say(
                    f"{child.name} was still busy after {STOP_TIMEOUT_S} s: killed "
                    "(harmless: every task may run again)."
                )
        for child in emulators:
            child.stop(time.monotonic() + 5)
            self.stop_times[child.name] = time.monotonic() - started
        self.children.clear()

    def _check(self) -> None:
        if self.stop_requested.is_set():
            raise Stopped
        for child in self.children:
            if not child.running:
                child.wait_quietly(2)
                raise ChildFailed(child, "stopped unexpectedly")

    def _sleep(self, seconds: float) -> None:
        if self.stop_requested.wait(seconds):
            raise Stopped

    def _run(self, options) -> None:
        port = options["port"]
        self._lock(port)
        if not _port_is_free(port):
            raise CommandError(
                f"port {port} on {HOST} is in use: stop what uses it, or choose another "
                f"port, e.g. `make demo DEMO_ARGS='--port {port + 1}'`. (A second demo "
                f"also needs its own database: {SECOND_DEMO_DATABASE}.)"
            )
        python = sys.executable
        manage = [python, "manage.py"]
        base_env = dict(os.environ, PYTHONUNBUFFERED="1")

        # Push on: the emulator plays Pub/Sub, posting to the web server with its own
        # OIDC token (aud = this URL), so new mail shows up within seconds.
        push_url = f"http://{HOST}:{port}/gmail/push/"
        emulator = self._start_emulator(base_env, options, push_url)
        info = json.loads(emulator)
        base_url = info["base_url"]
        env = dict(
            base_env,
            GMAIL_EMULATOR_URL=base_url,
            GOOGLE_CLIENT_ID=info["client_id"],
            GOOGLE_CLIENT_SECRET=info["client_secret"],
            DATABASE_URL=settings.DATABASE_URL,
            MAILSYNC_INCREMENTAL_INTERVAL_MINUTES="1",
            GMAIL_PUSH_TOPIC=DEMO_PUSH_TOPIC,
            GMAIL_PUSH_AUDIENCE=push_url,
            DEBUG="true",
        )

        self._say(f"Migrating the database ({self._database_name()})...")
        self._run_to_end("migrate", [*manage, "migrate", "--noinput"], env)
        password = self._reset_admin()
        forgotten = self._forget_previous_mirror(info)

        self._start("qcluster", [*manage, "qcluster"], env)
        web = self._start("web", [*manage, "runserver", f"{HOST}:{port}", "--noreload"], env)

        app_url = f"http://{HOST}:{port}/"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not _answers(app_url + "admin/login/"):
            self._check()
            if time.monotonic() > deadline:
                raise ChildFailed(web, f"did not answer within {STARTUP_TIMEOUT_S} s")
            self._sleep(0.3)

        self._banner(app_url, base_url, password, info, forgotten)
        while True:
            self._check()
            self._sleep(0.5)

    def _start_emulator(self, env: dict[str, str], options, push_url: str) -> str:
        """Start the emulator (on a free port if the asked one is taken): its JSON line."""
        port = options["emulator_port"]
        if not _port_is_free(port):
            self._say(f"Port {port} is taken: the emulator takes a free one.")
            port = 0
        args = [
            sys.executable,
            "-m",
            "gmail_emulator",
            "--host",
            HOST,
            "--mailbox",
            f"{DEMO_MAILBOX}:{options['messages']}",
            "--mailbox",
            f"{SECOND_MAILBOX}:500",
            "--activity-per-minute",
            str(options["activity_per_minute"]),
            "--latency-ms",
            str(options["latency_ms"]),
            "--push-url",
            push_url,
        ]
        self._say(f"Starting the Gmail emulator ({options['messages']} messages)...")
        for attempt_port in dict.fromkeys([port, 0]):  # retry once on any port if it lost a race
            child = self._start(
                EMULATOR, [*args, "--port", str(attempt_port)], env, first_line=True
            )
            try:
                return child.read_first_line(60, self.stop_requested)
            except ChildFailed:
                if attempt_port == 0:
                    raise
                self.children.remove(child)
                child.stop(time.monotonic() + 2)
        raise AssertionError("unreachable")

    def _run_to_end(self, name: str, args: list[str], env: dict[str, str]) -> None:
        child = self._start(name, args, env)
        while child.running:
            if self.stop_requested.is_set():
                raise Stopped
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(0.2)
        child.wait_quietly(5)
        if child.process.returncode != 0:
            raise ChildFailed(child, "failed")
        self.children.remove(child)

    def _lock(self, port: int) -> None:
        """One demo per database: refuse clearly when another one holds it."""
        self.demo_lock = DemoLock(lock_path())
        try:
            self.demo_lock.acquire(url=f"http://{HOST}:{port}/", database=self._database_name())
        except DemoAlreadyRunning as exc:
            holder = exc.holder
            raise CommandError(
                f"another demo is already running on this database ({self._database_name()}): "
                f"pid {holder.get('pid', '?')}, {holder.get('url', '?')}, started "
                f"{holder.get('started', '?')} (lock: {exc.path}). Stop it first (Ctrl-C in "
                f"its terminal), or give this one its own database and port: "
                f"{SECOND_DEMO_DATABASE} make demo DEMO_ARGS='--port {port + 1}'."
            ) from None

    def _forget_previous_mirror(self, info: dict) -> int:
        from django.db import connections

        try:
            return forget_mailboxes([mailbox["email"] for mailbox in info["mailboxes"]])
        finally:
            connections.close_all()  # the workers and the web server share the file

    def _reset_admin(self) -> str:
        """Create the operator account, or give it a new password: printed once."""
        from django.contrib.auth import get_user_model
        from django.db import connections

        password = secrets.token_urlsafe(12)
        User = get_user_model()
        try:
            user = User.objects.filter(username=ADMIN_USERNAME).first()
            if user is None:
                user = User(username=ADMIN_USERNAME, email=ADMIN_EMAIL, created_via="operator")
            user.is_staff = user.is_superuser = user.is_active = True
            user.set_password(password)
            user.save()
        finally:
            connections.close_all()  # the workers and the web server share the file
        return password

    def _database_name(self) -> str:
        db = settings.DATABASES["default"]
        if db["ENGINE"].endswith("sqlite3"):
            return f"SQLite {db['NAME']}"
        return f"PostgreSQL {db.get('HOST') or 'localhost'}/{db['NAME']}"

    def _banner(
        self, app_url: str, base_url: str, password: str, info: dict, forgotten: int
    ) -> None:
        emails = ", ".join(mb["email"] for mb in info["mailboxes"])
        fresh = (
            [
                "  The emulator is new at every start: the previous run's mirror of its",
                f"  mailboxes was cleared ({forgotten} user{'s' if forgotten != 1 else ''}).",
                "  Sign in again.",
            ]
            if forgotten
            else []
        )
        lines = [
            "",
            "The demo is running.",
            "",
            f"  The app              {app_url}",
            f"      Sign in with Google -> the emulator's consent page -> pick {DEMO_MAILBOX}",
            "      -> watch the progress page fill.",
            f"  The operator console {app_url}admin/",
            f"      user {ADMIN_USERNAME}  password {password}"
            "  (a new one at every start; use a private window",
            "      or sign out, the console and the app share the session)",
            f"  The Gmail emulator   {base_url}  (mailboxes: {emails})",
            "",
            "  The emulator adds mail and changes labels a few times a minute; push is on,",
            "  so each change arrives within seconds (polling every minute without a watch).",
            f"  Logs: {self.log_dir}/*.log",
            *fresh,
            "",
            "Press Ctrl-C to stop everything.",
            "",
        ]
        self._say("\n".join(lines))
