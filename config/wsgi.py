"""WSGI entry point. A malformed setting stops the start with one line naming it."""

import os

from django.core.wsgi import get_wsgi_application

from config.startup import explained_start

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
application = explained_start(get_wsgi_application)
