from tests.views.conftest import google_user  # noqa: F401 (fixtures)
from tests.views.google_sign_in import google_at_emulator  # noqa: F401
