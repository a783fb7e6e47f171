"""Model fields whose column type depends on the database."""

from __future__ import annotations

from django.contrib.postgres.search import SearchVectorField


class TsVectorField(SearchVectorField):
    """PostgreSQL's ``tsvector`` (with Django's ``@@`` lookup); text elsewhere, left NULL.

    Only PostgreSQL has full-text search: on SQLite the mailbox search falls back to
    LIKE lookups (see mailsync/search.py). The column exists on every database, so the
    same migrations run everywhere.
    """

    description = "Full-text search document (tsvector on PostgreSQL)"

    def db_type(self, connection) -> str:
        return "tsvector" if connection.vendor == "postgresql" else "text"
