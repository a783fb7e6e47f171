"""Fill the search vector of fetched messages that have none (after an upgrade)."""

from __future__ import annotations

from django.core.management.base import BaseCommand
from django.db import connection

from mailsync.models import EmailMessage
from mailsync.search import fill_search_vectors


class Command(BaseCommand):
    help = (
        "Compute the full-text search vector of every fetched message that has none, in "
        "chunks of --chunk-size messages (one short transaction each). PostgreSQL only; "
        "safe to interrupt and to run again, also while the workers sync."
    )

    def add_arguments(self, parser):
        parser.add_argument("--chunk-size", type=int, default=1000)

    def handle(self, *args, chunk_size: int, **options):
        if connection.vendor != "postgresql":
            self.stdout.write("Nothing to do: full-text search needs PostgreSQL.")
            return
        missing = EmailMessage.objects.filter(
            search_vector__isnull=True, internal_date__isnull=False
        ).order_by("pk")
        last_pk, total = 0, 0
        while True:
            pks = list(missing.filter(pk__gt=last_pk).values_list("pk", flat=True)[:chunk_size])
            if not pks:
                break
            total += fill_search_vectors(pks)
            last_pk = pks[-1]
            self.stdout.write(f"{total} messages filled (up to id {last_pk})")
        self.stdout.write(self.style.SUCCESS(f"Done: {total} messages filled."))
