"""Runtime settings of the emulator.

Every limit Google publishes is a field here rather than a constant, because Google
has changed them before and tests need to shrink them (a 1 s quota window, a tiny
concurrency limit) to exercise the client's back-off paths quickly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Real Gmail's quirks (docs/emulator.md, "Quirks"): each field's stable (kind) value is its
# default; `unstable=True` sets every quirk field still at that default to the value here.
UNSTABLE: dict[str, Any] = {
    "concurrent_requests_per_user": 25,
    "list_inversion_rate": 0.05,
    "list_offset_page_tokens": True,
    "history_lag_s": 2.0,
    "fresh_history_404_s": 10.0,
    "unknown_label_rate": 0.02,
    "chat_rate": 0.02,
    "chat_raw_refused": True,
    "refresh_token_max_age_s": 7 * 86400.0,
}


@dataclass
class EmulatorConfig:
    """Mutable settings; the server reads them on every request, so changes apply at once."""

    quota_user_per_minute: int = 15000
    quota_project_per_minute: int = 1_200_000
    quota_window_s: float = 60.0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    fault_rate: float = 0.0
    history_retention_s: float = 604800.0
    token_lifetime_s: float = 3600.0
    empty_history_page_rate: float = 0.1
    rate_limit_status: int = 429
    # Google publishes no figure; a recommended batch of 50 parts must pass.
    concurrent_requests_per_user: int = 100
    push_url: str | None = None
    # The OIDC token of push requests: `aud` (None = the push URL, as Pub/Sub's default)
    # and `email` (the subscription's service account); push_auth False sends none.
    push_audience: str | None = None
    push_service_account: str = "gmail-push@emulator.iam.gserviceaccount.com"
    push_auth: bool = True
    seed: int = 0
    history_id_step_max: int = 7
    record_responses: bool = False
    record_responses_max: int = 20000
    log_requests: bool = False
    # End of the generated mail's date range (epoch ms); None = start of today (UTC).
    generated_until_ms: int | None = None
    generated_span_days: int = 6 * 365
    # ----- quirks of real Gmail, off by default; see UNSTABLE and docs/emulator.md -----
    unstable: bool = False
    # messages.list: share of messages listed up to 6 h away from their date order.
    list_inversion_rate: float = 0.0
    # messages.list page tokens are offsets into the live order (skip/repeat on changes).
    list_offset_page_tokens: bool = False
    # history.list hides records younger than this while its historyId counts them.
    history_lag_s: float = 0.0
    # history.list answers 404 for a startHistoryId newer than the mailbox's id this long ago.
    fresh_history_404_s: float = 0.0
    # Share of generated messages carrying a label id labels.list/labels.get do not know.
    unknown_label_rate: float = 0.0
    # Share of generated messages turned into chats (label CHAT only), on top of the usual few.
    chat_rate: float = 0.0
    # messages.get format=raw of a CHAT message answers 400 (format=full works).
    chat_raw_refused: bool = False
    # The refresh grant answers invalid_grant once its refresh token is this old.
    refresh_token_max_age_s: float | None = None

    def __post_init__(self) -> None:
        if self.unstable:
            self._set_unstable(True, explicit=set())

    def update(self, **fields: Any) -> None:
        """Set several fields at once, refusing unknown names (typos would be silent otherwise)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(fields) - names
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        for key, value in fields.items():
            setattr(self, key, value)
        if "unstable" in fields:
            self._set_unstable(bool(fields["unstable"]), explicit=set(fields))

    def _set_unstable(self, on: bool, explicit: set[str]) -> None:
        """Switch every quirk not set explicitly: on to UNSTABLE, off to the default."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for name, unstable_value in UNSTABLE.items():
            current = getattr(self, name)
            if name in explicit:
                continue
            if on and current == defaults[name]:
                setattr(self, name, unstable_value)
            elif not on and current == unstable_value:
                setattr(self, name, defaults[name])

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
