#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.conf import settings
    from django.core.management import execute_from_command_line

    from config.startup import explained_start

    # Read the settings first: a malformed one stops here, on one line.
    explained_start(lambda: settings.INSTALLED_APPS)
    explained_start(lambda: execute_from_command_line(sys.argv))


if __name__ == "__main__":
    main()
