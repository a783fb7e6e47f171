"""A process that cannot start says why on one line, naming the setting.

manage.py and wsgi.py run through `explained_start`: a malformed setting
(ImproperlyConfigured, raised by config/settings.py with the variable's name) or
a database that cannot be reached ends the process with one line on stderr and
exit status 1, instead of a traceback of 24-88 lines.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# How psycopg and sqlite3 say that no connection could be made (as opposed to a
# failing query, whose traceback stays useful).
_CONNECTION_FAILURES = (
    "connection failed",
    "could not connect",
    "connection refused",
    "could not translate host name",
    "unable to open database file",
    "timeout expired",
)


def startup_error(exc: BaseException) -> str | None:
    """The one line to print for an error that stops the start, or None."""
    from django.core.exceptions import ImproperlyConfigured
    from django.db.utils import OperationalError

    from .exception_filter import mask_url_passwords

    if isinstance(exc, ImproperlyConfigured):
        return mask_url_passwords(" ".join(str(exc).split()))
    if isinstance(exc, OperationalError):
        text = " ".join(str(exc).split())
        if any(marker in text.lower() for marker in _CONNECTION_FAILURES):
            return f"DATABASE_URL: cannot connect to the database: {mask_url_passwords(text)}"
    return None


def explained_start(start: Callable[[], T]) -> T:
    try:
        return start()
    except Exception as exc:
        line = startup_error(exc)
        if line is None:
            raise
        sys.stderr.write(f"Configuration error: {line}\n")
        raise SystemExit(1) from None
