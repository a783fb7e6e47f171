"""Runtime settings of the emulator.

Every limit Google publishes is a field here rather than a constant, because Google
has changed them before and tests need to shrink them (a 1 s quota window, a tiny
concurrency limit) to exercise the client's back-off paths quickly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


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
    seed: int = 0
    history_id_step_max: int = 7
    record_responses: bool = False
    record_responses_max: int = 20000
    log_requests: bool = False
    # End of the generated mail's date range (epoch ms); None = start of today (UTC).
    generated_until_ms: int | None = None
    generated_span_days: int = 6 * 365

    def update(self, **fields: Any) -> None:
        """Set several fields at once, refusing unknown names (typos would be silent otherwise)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(fields) - names
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        for key, value in fields.items():
            setattr(self, key, value)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
