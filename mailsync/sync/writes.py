"""The statements that list and store messages, written for speed (issue 13).

A listed page: one INSERT of its new rows (on PostgreSQL from arrays with `unnest`:
Django's bulk_create spent as long building and binding 500 rows x 30 columns as
PostgreSQL spent inserting them). A fetched batch: on PostgreSQL one UPDATE from
arrays too, with the search vector computed in it from the text just parsed (an
UPDATE per row, pipelined, cost PostgreSQL 0.6 ms of CPU per message, one per batch
0.46: each row's statement was parsed and planned); on SQLite one prepared UPDATE run
for every row (`executemany`: parsed once).

The ORM spent more time building one UPDATE per row (19 columns, each prepared by its
field) than the database spent running it: ~1 ms of CPU per message, against ~0.1 ms
here. Values still go through each field's `get_db_prep_save` where the field does
something (compressed bodies, JSON, and dates on SQLite); text, numbers and, on
PostgreSQL, aware datetimes are passed as they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import psycopg
from django.db import connection, models
from django.utils import timezone

from ..models import EmailMessage
from ..parsing import ParsedMessage
from ..search import search_document, vector_expression

# What a fetch writes on a message row, besides the claim it releases (see `_values`).
FETCHED_FIELDS = (
    "thread_id",
    "internal_date",
    "history_id",
    "snippet",
    "size_estimate",
    "subject",
    "sender",
    "sender_address",
    "to",
    "cc",
    "date_header",
    "message_id_header",
    "body_text",
    "body_html",
    "attachments",
    "parse_error",
)
RELEASED = ("claimed_until", "fetch_failures", "last_fetch_error", "unavailable_since")
# Fields whose Python value is what the database driver takes.
_PLAIN = (
    models.CharField,
    models.TextField,
    models.PositiveIntegerField,
    models.PositiveSmallIntegerField,
)


def _converter(name: str) -> Callable[[Any], Any] | None:
    field = EmailMessage._meta.get_field(name)
    if type(field) in _PLAIN:
        return None
    if connection.vendor == "postgresql" and isinstance(field, models.DateTimeField):
        return None  # aware (parsing.py makes them UTC): psycopg takes them as they are
    return lambda value: field.get_db_prep_save(value, connection)


@cache
def _converters() -> tuple[Callable[[Any], Any] | None, ...]:
    return tuple(_converter(n) for n in (*FETCHED_FIELDS, *RELEASED, "updated_at"))


@cache
def _row_statement() -> str:
    """SQLite: the UPDATE of one row (no search vector there)."""
    quote = connection.ops.quote_name
    names = (*FETCHED_FIELDS, *RELEASED, "updated_at")
    assignments = [f"{quote(EmailMessage._meta.get_field(n).column)} = %s" for n in names]
    table = quote(EmailMessage._meta.db_table)
    return f"UPDATE {table} SET {', '.join(assignments)} WHERE {quote('id')} = %s"  # noqa: S608


def prepare_fetched(parsed: Iterable[ParsedMessage]) -> dict[str, list]:
    """The UPDATE's parameters of each message (by Gmail id), but its row's pk:
    computed before the transaction (compressing the bodies, the search text), so
    that the mailbox's lock is held for the writes alone."""
    vendor = connection.vendor
    converters = _converters()
    now = timezone.now()
    prepared = {}
    for p in parsed:
        values = [getattr(p, name) for name in FETCHED_FIELDS]
        values += [None, 0, "", None, now]
        row = [v if c is None else c(v) for v, c in zip(values, converters, strict=True)]
        if vendor == "postgresql":
            document = search_document(
                p.subject, p.sender, f"{p.to} {p.cc}", p.body_text, p.body_html, p.snippet
            )
            row += [document["A"], document["B"], document["C"], document["D"]]
        prepared[p.gmail_id] = row
    return prepared


def write_fetched(rows: list[tuple[int, list]]) -> None:
    """Store each message on its row: (pk, its prepare_fetched parameters); the
    claim is released."""
    if not rows:
        return
    if connection.vendor == "postgresql":
        execute_binary(_batch_statement(), _batch_parameters(rows))
        return
    with connection.cursor() as cursor:
        cursor.executemany(_row_statement(), [[*params, pk] for pk, params in rows])


def execute_binary(sql: str, params: list) -> int:
    """PostgreSQL: run `sql` with its `%b` parameters sent in binary form (server-side
    binding); returns the rows it touched. Django's cursor quotes every parameter into
    the SQL text: for a batch's arrays of bodies 11 ms of the worker's CPU in Python
    (psycopg's text array dumper), against 1.3 ms to send them in binary."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


@cache
def _batch_statement() -> str:
    """PostgreSQL: one UPDATE for the whole batch, from arrays with `unnest` (one
    statement to parse, plan and run instead of one per message). The released
    claim's columns take one value for every row."""
    quote = connection.ops.quote_name
    fields = [EmailMessage._meta.get_field(name) for name in FETCHED_FIELDS]
    constant = [EmailMessage._meta.get_field(name) for name in (*RELEASED, "updated_at")]
    assignments = [f"{quote(f.column)} = u.f{i}" for i, f in enumerate(fields)]
    assignments += [f"{quote(f.column)} = %b" for f in constant]
    assignments.append(f"{quote('search_vector')} = {vector_expression('u.a, u.b, u.c, u.d')}")
    arrays = ["%b::bigint[]", *(f"%b::{f.db_type(connection)}[]" for f in fields)]
    arrays += ["%b::text[]"] * 4
    names = ["id", *(f"f{i}" for i in range(len(fields))), "a", "b", "c", "d"]
    table = quote(EmailMessage._meta.db_table)
    return (
        f"UPDATE {table} AS m SET {', '.join(assignments)} "  # noqa: S608 (no user input)
        f"FROM unnest({', '.join(arrays)}) AS u({', '.join(names)}) WHERE m.id = u.id"
    )


def _batch_parameters(rows: list[tuple[int, list]]) -> list:
    """The released claim's values (the same in every row), then one array per column."""
    fetched, released = len(FETCHED_FIELDS), len(RELEASED) + 1
    constant = rows[0][1][fetched : fetched + released]
    columns = [[pk for pk, _ in rows]]
    for index in [*range(fetched), *range(fetched + released, fetched + released + 4)]:
        columns.append([params[index] for _, params in rows])
    return [*constant, *columns]


# What a listing knows of a message; every other column takes its field's default.
LISTED_FIELDS = ("gmail_id", "thread_id", "listing_order")


@cache
def _insert_statement(vendor: str) -> tuple[str, tuple[str, ...]]:
    """The INSERT of listed rows (for this database) and its constant columns."""
    quote = connection.ops.quote_name
    constant = tuple(
        f.name
        for f in EmailMessage._meta.concrete_fields
        if not f.primary_key and f.name not in LISTED_FIELDS
    )
    column = {f.name: quote(f.column) for f in EmailMessage._meta.concrete_fields}
    columns = ", ".join(column[name] for name in (*LISTED_FIELDS, *constant))
    table = quote(EmailMessage._meta.db_table)
    if vendor == "postgresql":
        arrays = ", ".join(
            f"%b::{EmailMessage._meta.get_field(name).db_type(connection)}[]"
            for name in LISTED_FIELDS
        )
        values = ", ".join(["listed.*", *["%b"] * len(constant)])
        sql = (
            f"INSERT INTO {table} ({columns}) SELECT {values} "  # noqa: S608
            f"FROM unnest({arrays}) AS listed ON CONFLICT DO NOTHING"
        )
    else:
        marks = ", ".join(["%s"] * (len(LISTED_FIELDS) + len(constant)))
        sql = f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING"  # noqa: S608
    return sql, constant


def _constant_values(names: tuple[str, ...], given: dict[str, Any]) -> list:
    now = timezone.now()
    values = []
    for name in names:
        field = EmailMessage._meta.get_field(name)
        if name in given:
            value = given[name]
        elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            value = now
        else:
            value = field.get_default()
        values.append(field.get_db_prep_save(value, connection))
    return values


def insert_listed(user_id: int, run_id: int | None, rows: list[tuple[str, str, int]]) -> int:
    """Insert messages, unfetched: (gmail id, thread id, listing order) each; a row
    that exists already is left as it is. Returns how many rows were inserted."""
    if not rows:
        return 0
    sql, constant = _insert_statement(connection.vendor)
    fixed = _constant_values(constant, {"user": user_id, "listed_by_run": run_id})
    if connection.vendor == "postgresql":
        return execute_binary(sql, [*fixed, *(list(column) for column in zip(*rows, strict=True))])
    with connection.cursor() as cursor:
        cursor.executemany(sql, [[*row, *fixed] for row in rows])
        return cursor.rowcount
