"""The admin tests use the same small factories as the views' tests."""

from tests.views.conftest import (  # noqa: F401 (fixtures, found by name)
    google_user,
    label_factory,
    message_factory,
    run_factory,
)
