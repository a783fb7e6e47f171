"""A pytest plugin (pytest.ini: `-p tests.development_mode`), imported before Django's
settings: the suite runs the app in development mode, as `make test` does, unless
the environment says otherwise. Test subprocesses inherit it."""

import os

os.environ.setdefault("DEBUG", "true")
