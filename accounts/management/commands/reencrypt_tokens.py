"""Re-encrypt every stored Google token with the newest TOKEN_ENCRYPTION_KEYS key.

Key rotation: put the new key first in TOKEN_ENCRYPTION_KEYS (keep the old ones
after it), restart, run this, then remove the old keys.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import GoogleToken


def reencrypt_chunk(after_pk: int, size: int) -> list[int]:
    """Re-encrypt up to `size` rows with a pk above `after_pk`, locked so that a
    concurrent token refresh is not overwritten. Returns their pks."""
    with transaction.atomic():
        rows = list(
            GoogleToken.objects.select_for_update().filter(pk__gt=after_pk).order_by("pk")[:size]
        )
        for row in rows:  # loaded in clear with any key, saved with the newest
            row.save(update_fields=["access_token", "refresh_token"])
    return [row.pk for row in rows]


class Command(BaseCommand):
    help = "Re-encrypt every stored Google token with the newest key, in bounded chunks."

    def add_arguments(self, parser):
        parser.add_argument(
            "--chunk-size", type=int, default=500, help="rows per transaction (500)"
        )

    def handle(self, *args, chunk_size: int, **options):
        if chunk_size < 1:
            raise CommandError(f"--chunk-size {chunk_size} must be at least 1")
        done = chunks = last = 0
        while pks := reencrypt_chunk(last, chunk_size):
            done += len(pks)
            chunks += 1
            last = pks[-1]
        self.stdout.write(f"Re-encrypted {done} token rows with the newest key in {chunks} chunks.")
