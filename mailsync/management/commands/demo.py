"""`make demo`: migrate the embedded database and start the application."""

from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Migrate the SQLite database and serve the application on 127.0.0.1:8000."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=8000)

    def handle(self, *args, port: int, **options):
        call_command("migrate", interactive=False, verbosity=0)
        self.stdout.write(f"Open http://127.0.0.1:{port}/admin/")
        call_command("runserver", f"127.0.0.1:{port}", use_reloader=False)
