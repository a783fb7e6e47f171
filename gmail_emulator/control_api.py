"""The control API under `_emulator/v1/`: drive a running emulator from another process.

No authentication: it only ever listens on loopback. Bodies and answers are JSON.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any
from urllib.parse import unquote

from .errors import ApiError

Response = tuple[int, dict[str, str], bytes]


def _ok(obj: Any = None, status: int = 200) -> Response:
    return status, {"Content-Type": "application/json"}, json.dumps({} if obj is None else obj).encode()


def _mailbox_info(mb: Any) -> dict[str, Any]:
    return {"email": mb.email, "access_token": mb.access_token, "refresh_token": mb.refresh_token,
            "messages": len(mb.msgs)}


def script_fault_from(emu: Any, spec: dict[str, Any]) -> None:
    """Emulator.script_fault from a JSON object (control API body or --fault)."""
    unknown = set(spec) - {"path_regex", "count", "status", "reason", "seconds"}
    if unknown:
        raise ValueError(f"unknown fault fields: {sorted(unknown)}")
    seconds = spec.get("seconds")
    emu.script_fault(spec["path_regex"], int(spec.get("count", 1)), int(spec.get("status", 503)),
                     spec.get("reason", "backendError"), None if seconds is None else float(seconds))


def handle(emu: Any, method: str, path: str, params: dict[str, list[str]], body: bytes) -> Response:
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError:
        return _ok({"error": "invalid JSON"}, 400)
    try:
        return _route(emu, method, path.strip("/"), data)
    except ApiError as exc:
        return exc.code, {"Content-Type": "application/json"}, exc.body_bytes()
    except KeyError as exc:
        return _ok({"error": f"not found: {exc}"}, 404)
    except (ValueError, TypeError) as exc:
        return _ok({"error": str(exc)}, 400)


def _route(emu: Any, method: str, path: str, d: dict[str, Any]) -> Response:
    if path == "stats" and method == "GET":
        return _ok(emu.stats())
    if path == "stats/reset" and method == "POST":
        emu.reset_stats()
        return _ok()
    if path == "config":
        if method in ("POST", "PATCH"):
            emu.config.update(**d)
        return _ok(emu.config.as_dict())
    if path == "mailboxes":
        if method == "GET":
            return _ok([_mailbox_info(mb) for mb in emu.mailboxes.values()])
        if "mbox" in d:
            return _ok(_mailbox_info(emu.add_mailbox_from_mbox(d["email"], d["mbox"])))
        return _ok(_mailbox_info(emu.add_mailbox(d["email"], int(d.get("count", 1000)), d.get("seed"))))
    if path == "tokens/revoke" and method == "POST":
        return _ok({"revoked": emu.revoke_refresh_token(d["refresh_token"])})
    if path == "tokens/access" and method == "POST":
        return _ok({"access_token": emu.issue_access_token(d["email"], d.get("lifetime_s"))})
    if path == "faults" and method == "POST":
        if d.get("clear"):
            emu.clear_faults()
        else:
            script_fault_from(emu, d)
        return _ok()
    if path == "activity" and method == "POST":
        if float(d.get("per_minute", 0)) > 0:
            emu.start_activity(float(d["per_minute"]))
        else:
            emu.stop_activity()
        return _ok()
    match = re.fullmatch(r"mailboxes/([^/]+)(/.*)?", path)
    if match is None:
        return _ok({"error": f"unknown control path {path}"}, 404)
    email, rest = unquote(match[1]), match[2] or ""
    emu.mailbox(email)  # KeyError -> 404
    if rest == "/snapshot" and method == "GET":
        return _ok(emu.snapshot(email))
    if rest == "" and method == "GET":
        return _ok(_mailbox_info(emu.mailbox(email)))
    if method != "POST":
        return _ok({"error": "use POST"}, 405)
    if rest == "/messages":
        raw = base64.b64decode(d["raw"]) if d.get("raw") else None
        labels = d.get("label_ids", ["INBOX", "UNREAD"])
        return _ok({"id": emu.insert_message(email, labels, raw)})
    if (m := re.fullmatch(r"/messages/([^/]+)/(modify|trash|untrash|delete)", rest)):
        msg_id, action = m[1], m[2]
        if action == "modify":
            emu.modify_message(email, msg_id, d.get("add", ()), d.get("remove", ()))
        else:
            getattr(emu, f"{action}_message")(email, msg_id)
        return _ok()
    if rest == "/labels":
        return _ok({"id": emu.create_label(email, d["name"], d.get("color"))})
    if (m := re.fullmatch(r"/labels/([^/]+)/delete", rest)):
        emu.delete_label(email, m[1])
        return _ok()
    if (m := re.fullmatch(r"/labels/([^/]+)", rest)):
        emu.update_label(email, m[1], **{k: v for k, v in d.items() if k in ("name", "color")})
        return _ok()
    if rest == "/expire-history":
        emu.expire_history(email)
        return _ok()
    if rest == "/daily-limit":
        emu.set_daily_limit_exceeded(email, bool(d.get("exceeded", True)))
        return _ok()
    if rest == "/empty-history-pages":
        emu.force_empty_history_pages(email, int(d.get("n", 1)))
        return _ok()
    return _ok({"error": f"unknown control path {path}"}, 404)
