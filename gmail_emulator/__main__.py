"""Command line: `python -m gmail_emulator --port 8765 --mailbox alice@example.com:3000`.

The first stdout line is one JSON object (base URL, client credentials, mailbox tokens)
so a parent process or a demo script can configure itself before anything else runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from .config import UNSTABLE, EmulatorConfig
from .control_api import script_fault_from
from .emulator import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, Emulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gmail_emulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--mailbox", action="append", default=[], metavar="EMAIL[:COUNT]")
    p.add_argument("--mbox", action="append", default=[], metavar="[EMAIL=]PATH",
                   help="load an mbox; mailbox address defaults to mbox@example.com")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quota-user-per-minute", type=int, default=15000)
    p.add_argument("--quota-project-per-minute", type=int, default=1_200_000)
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--fault-rate", type=float, default=0.0)
    p.add_argument("--history-retention-s", type=float, default=604800.0)
    p.add_argument("--token-lifetime-s", type=float, default=3600.0)
    p.add_argument("--empty-history-page-rate", type=float, default=0.1)
    p.add_argument("--concurrent-requests-per-user", type=int, default=None,
                   help="in-flight calls per user (default 100; 25 with --unstable)")
    p.add_argument("--rate-limit-status", type=int, choices=(403, 429), default=429)
    p.add_argument("--activity-per-minute", type=float, default=0.0)
    p.add_argument("--push-url", default=None)
    p.add_argument("--push-audience", default=None,
                   help="the aud claim of push tokens (default: the push URL)")
    p.add_argument("--push-service-account", default=None,
                   help="the email claim of push tokens")
    p.add_argument("--client-id", default=DEFAULT_CLIENT_ID)
    p.add_argument("--client-secret", default=DEFAULT_CLIENT_SECRET)
    p.add_argument("--log-requests", action="store_true")
    p.add_argument("--fault", action="append", default=[], type=_fault_spec, metavar="JSON",
                   help='a scripted fault, as POST _emulator/v1/faults takes it: '
                        '\'{"path_regex": "^/token$", "status": 503, "seconds": 60}\'')
    quirks = p.add_argument_group("quirks of real Gmail (docs/emulator.md); all on with --unstable")
    quirks.add_argument("--unstable", action="store_true",
                        help="turn every quirk on (each flag below overrides its own)")
    quirks.add_argument("--list-inversion-rate", type=float, default=None)
    quirks.add_argument("--list-offset-page-tokens", type=_on_off, default=None, metavar="on|off")
    quirks.add_argument("--history-lag-s", type=float, default=None)
    quirks.add_argument("--fresh-history-404-s", type=float, default=None)
    quirks.add_argument("--unknown-label-rate", type=float, default=None)
    quirks.add_argument("--chat-rate", type=float, default=None)
    quirks.add_argument("--chat-raw-refused", type=_on_off, default=None, metavar="on|off")
    quirks.add_argument("--refresh-token-max-age-s", type=float, default=None)
    return p.parse_args(argv)


QUIRK_OPTIONS = ("concurrent_requests_per_user", *UNSTABLE)


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError("on or off")
    return text == "on"


def _fault_spec(text: str) -> dict:
    try:
        spec = json.loads(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not JSON: {text}") from None
    if not isinstance(spec, dict) or "path_regex" not in spec:
        raise argparse.ArgumentTypeError('a JSON object with at least "path_regex"')
    return spec


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.log_requests else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    config = EmulatorConfig(
        seed=args.seed, quota_user_per_minute=args.quota_user_per_minute,
        quota_project_per_minute=args.quota_project_per_minute, latency_ms=args.latency_ms,
        jitter_ms=args.jitter_ms, fault_rate=args.fault_rate,
        history_retention_s=args.history_retention_s, token_lifetime_s=args.token_lifetime_s,
        empty_history_page_rate=args.empty_history_page_rate,
        rate_limit_status=args.rate_limit_status, push_url=args.push_url,
        push_audience=args.push_audience, log_requests=args.log_requests)
    if args.push_service_account:
        config.push_service_account = args.push_service_account
    given = {name: getattr(args, name) for name in QUIRK_OPTIONS if getattr(args, name) is not None}
    config.update(**given, **({"unstable": True} if args.unstable else {}))
    emu = Emulator(config, client_id=args.client_id, client_secret=args.client_secret)
    specs = args.mailbox or ([] if args.mbox else ["demo@example.com:2000"])
    for spec in specs:
        email, _, count = spec.partition(":")
        emu.add_mailbox(email, int(count or 1000))
    for spec in args.mbox:
        email, sep, path = spec.partition("=")
        if not sep:
            email, path = "mbox@example.com", spec
        emu.add_mailbox_from_mbox(email, path)
    for spec in args.fault:
        try:
            script_fault_from(emu, spec)
        except (KeyError, TypeError, ValueError) as exc:
            sys.exit(f"--fault {json.dumps(spec)}: {exc}")
    base_url = emu.start(args.host, args.port)
    if args.activity_per_minute > 0:
        emu.start_activity(args.activity_per_minute)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the first line: a parent may stop us
        signal.signal(sig, lambda *_: done.set())  # as soon as it has read it
    print(json.dumps({
        "base_url": base_url, "client_id": emu.client_id, "client_secret": emu.client_secret,
        "mailboxes": [{"email": mb.email, "access_token": mb.access_token,
                       "refresh_token": mb.refresh_token} for mb in emu.mailboxes.values()],
    }), flush=True)
    done.wait()
    emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
