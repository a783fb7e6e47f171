"""Per-user and per-project quota in a moving window, plus per-user concurrency.

Google meters Gmail in units per minute as a moving average; a refused request costs
nothing, so the client can retry as soon as enough units have slid out of the window.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from .errors import ApiError

# Units per discovery method id; Google's table plus its secondary copies.
COSTS: dict[str, int] = {
    "gmail.users.getProfile": 1,
    "gmail.users.watch": 100,
    "gmail.users.stop": 50,
    "gmail.users.history.list": 2,
    "gmail.users.labels.list": 1,
    "gmail.users.labels.get": 1,
    "gmail.users.labels.create": 5,
    "gmail.users.labels.patch": 5,
    "gmail.users.labels.update": 5,
    "gmail.users.labels.delete": 5,
    "gmail.users.messages.list": 5,
    "gmail.users.messages.get": 5,
    "gmail.users.messages.insert": 25,
    "gmail.users.messages.import": 25,
    "gmail.users.messages.modify": 5,
    "gmail.users.messages.batchModify": 50,
    "gmail.users.messages.batchDelete": 50,
    "gmail.users.messages.trash": 5,
    "gmail.users.messages.untrash": 5,
    "gmail.users.messages.delete": 10,
    "gmail.users.messages.attachments.get": 5,
    "gmail.users.threads.list": 10,
    "gmail.users.threads.get": 10,
    "gmail.users.threads.modify": 10,
    "gmail.users.threads.trash": 10,
    "gmail.users.threads.untrash": 10,
    "gmail.users.threads.delete": 20,
}


def cost_of(method_id: str) -> int:
    return COSTS.get(method_id, 5)


class Window:
    """Units spent in the last `window_s` seconds."""

    def __init__(self) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.used = 0

    def _expire(self, now: float, window_s: float) -> None:
        events = self.events
        while events and events[0][0] <= now - window_s:
            self.used -= events.popleft()[1]

    def try_spend(self, units: int, limit: int, window_s: float, now: float) -> float | None:
        """Spend and return None, or return the seconds until `units` would fit."""
        self._expire(now, window_s)
        if self.used + units <= limit:
            self.events.append((now, units))
            self.used += units
            return None
        need = self.used + units - limit
        freed = 0
        for ts, spent in self.events:
            freed += spent
            if freed >= need:
                return max(0.0, ts + window_s - now)
        return window_s  # cost exceeds the limit itself: wait a full window

    def refund(self, units: int, now: float) -> None:
        """Undo the latest spend (the project was charged but the user refused)."""
        if self.events and self.events[-1] == (now, units):
            self.events.pop()
            self.used -= units


class Quota:
    """Thread-safe ledger for all users of one emulator (= one project)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users: dict[str, Window] = {}
        self.project = Window()
        self.in_flight: dict[str, int] = {}

    def charge(self, user: str, units: int, user_limit: int, project_limit: int,
               window_s: float, status: int) -> None:
        now = time.monotonic()
        with self.lock:
            wait = self.project.try_spend(units, project_limit, window_s, now)
            scope = "project"
            if wait is None:
                window = self.users.setdefault(user, Window())
                wait = window.try_spend(units, user_limit, window_s, now)
                scope = "user"
                if wait is not None:
                    self.project.refund(units, now)
        if wait is None:
            return
        retry_after = str(max(1, math.ceil(wait)))
        headers = {"Retry-After": retry_after}
        if scope == "user" and status == 403:
            raise ApiError(403, "userRateLimitExceeded",
                           "User-rate limit exceeded. Retry after " + retry_after + " seconds.",
                           headers=headers)
        limit_name = "Queries per minute per user" if scope == "user" else "Queries per minute"
        message = (f"Quota exceeded for quota metric 'Queries' and limit '{limit_name}' of "
                   "service 'gmail.googleapis.com' for consumer 'project_number:000000000000'.")
        if status == 403:
            raise ApiError(403, "rateLimitExceeded", message, headers=headers)
        raise ApiError(429, "rateLimitExceeded", message, headers=headers)

    def enter(self, user: str, limit: int) -> None:
        with self.lock:
            current = self.in_flight.get(user, 0)
            if current >= limit:
                # Google's wording, no full stop (google-api-dotnet-client#1982).
                raise ApiError(429, "rateLimitExceeded", "Too many concurrent requests for user")
            self.in_flight[user] = current + 1

    def leave(self, user: str) -> None:
        with self.lock:
            self.in_flight[user] = max(0, self.in_flight.get(user, 0) - 1)

    def reset(self) -> None:
        with self.lock:
            self.users.clear()
            self.project = Window()
