"""Model fields of the mirror: compressed text, and a column whose type depends on the
database."""

from __future__ import annotations

import zlib

from django.contrib.postgres.search import SearchVectorField
from django.db import models

# zlib level 6: email text shrinks to about a third of its size at a fraction of the
# cost of parsing it (measured in bench/bench_storage.py).
COMPRESSION_LEVEL = 6


class CompressedTextField(models.BinaryField):
    """Text stored zlib-compressed in a binary column; Python code sees a str.

    Bodies are most of a mirror's bytes and are read one message at a time (the
    message view), never searched in SQL (search has its own column), so
    compressing them costs little and saves most of the space. "" is stored as b"".
    """

    description = "Text (stored compressed)"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("default", b"")
        kwargs.setdefault("blank", True)
        super().__init__(*args, **kwargs)

    def get_default(self) -> str:
        return decompress(super().get_default())

    def from_db_value(self, value, expression, connection) -> str:
        return decompress(value)

    def to_python(self, value) -> str:
        if isinstance(value, str):
            return value
        return decompress(value)

    def get_prep_value(self, value):
        if isinstance(value, str):
            return compress(value)
        return super().get_prep_value(value)

    def value_to_string(self, obj) -> str:
        return self.value_from_object(obj)


def compress(text: str) -> bytes:
    return zlib.compress(text.encode("utf-8"), COMPRESSION_LEVEL) if text else b""


def decompress(value) -> str:
    if not value:
        return ""
    return zlib.decompress(bytes(value)).decode("utf-8")


class TsVectorField(SearchVectorField):
    """PostgreSQL's ``tsvector`` (with Django's ``@@`` lookup); text elsewhere, left NULL.

    Only PostgreSQL has full-text search: on SQLite the mailbox search falls back to
    LIKE lookups (see mailsync/search.py). The column exists on every database, so the
    same migrations run everywhere.
    """

    description = "Full-text search document (tsvector on PostgreSQL)"

    def db_type(self, connection) -> str:
        return "tsvector" if connection.vendor == "postgresql" else "text"
