"""ControlClient: the Emulator's Python API over HTTP, for tests in another process."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class ControlError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"control API answered {status}: {body}")
        self.status = status


class ControlClient:
    """Same method names as gmail_emulator.Emulator; `base_url` is the emulator's root URL."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/") + "/_emulator/v1/"
        self.timeout = timeout

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            raise ControlError(exc.code, exc.read().decode("utf-8", "replace")) from None

    @staticmethod
    def _mb(email: str) -> str:
        return "mailboxes/" + urllib.parse.quote(email, safe="@")

    def add_mailbox(self, email: str, count: int = 1000, seed: int | None = None) -> dict[str, Any]:
        return self._call("POST", "mailboxes", {"email": email, "count": count, "seed": seed})

    def add_mailbox_from_mbox(self, email: str, path: str) -> dict[str, Any]:
        return self._call("POST", "mailboxes", {"email": email, "mbox": path})

    def mailboxes(self) -> list[dict[str, Any]]:
        return self._call("GET", "mailboxes")

    def snapshot(self, email: str) -> dict[str, Any]:
        return self._call("GET", self._mb(email) + "/snapshot")

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "stats")

    def reset_stats(self) -> None:
        self._call("POST", "stats/reset", {})

    def insert_message(self, email: str, label_ids: Any = ("INBOX", "UNREAD"),
                       raw: bytes | None = None) -> str:
        body: dict[str, Any] = {"label_ids": list(label_ids)}
        if raw is not None:
            body["raw"] = base64.b64encode(raw).decode()
        return self._call("POST", self._mb(email) + "/messages", body)["id"]

    def modify_message(self, email: str, msg_id: str, add: Any = (), remove: Any = ()) -> None:
        self._call("POST", f"{self._mb(email)}/messages/{msg_id}/modify",
                   {"add": list(add), "remove": list(remove)})

    def trash_message(self, email: str, msg_id: str) -> None:
        self._call("POST", f"{self._mb(email)}/messages/{msg_id}/trash", {})

    def untrash_message(self, email: str, msg_id: str) -> None:
        self._call("POST", f"{self._mb(email)}/messages/{msg_id}/untrash", {})

    def delete_message(self, email: str, msg_id: str) -> None:
        self._call("POST", f"{self._mb(email)}/messages/{msg_id}/delete", {})

    def create_label(self, email: str, name: str, color: dict[str, str] | None = None) -> str:
        return self._call("POST", self._mb(email) + "/labels", {"name": name, "color": color})["id"]

    def update_label(self, email: str, label_id: str, **fields: Any) -> None:
        self._call("POST", f"{self._mb(email)}/labels/{label_id}", fields)

    def delete_label(self, email: str, label_id: str) -> None:
        self._call("POST", f"{self._mb(email)}/labels/{label_id}/delete", {})

    def expire_history(self, email: str) -> None:
        self._call("POST", self._mb(email) + "/expire-history", {})

    def revoke_refresh_token(self, refresh_token: str) -> bool:
        return self._call("POST", "tokens/revoke", {"refresh_token": refresh_token})["revoked"]

    def issue_access_token(self, email: str, lifetime_s: float | None = None) -> str:
        return self._call("POST", "tokens/access", {"email": email, "lifetime_s": lifetime_s})[
            "access_token"]

    def script_fault(self, path_regex: str, count: int = 1, status: int = 503,
                     reason: str = "backendError", seconds: float | None = None) -> None:
        body = {"path_regex": path_regex, "count": count, "status": status, "reason": reason}
        if seconds is not None:
            body["seconds"] = seconds
        self._call("POST", "faults", body)

    def clear_faults(self) -> None:
        self._call("POST", "faults", {"clear": True})

    def set_daily_limit_exceeded(self, email: str, exceeded: bool = True) -> None:
        self._call("POST", self._mb(email) + "/daily-limit", {"exceeded": exceeded})

    def force_empty_history_pages(self, email: str, n: int) -> None:
        self._call("POST", self._mb(email) + "/empty-history-pages", {"n": n})

    def update_config(self, **fields: Any) -> dict[str, Any]:
        return self._call("POST", "config", fields)

    def config(self) -> dict[str, Any]:
        return self._call("GET", "config")

    def start_activity(self, per_minute: float) -> None:
        self._call("POST", "activity", {"per_minute": per_minute})

    def stop_activity(self) -> None:
        self._call("POST", "activity", {"per_minute": 0})
