"""The debug page and error reports without the passwords inside URLs.

Django hides settings whose names look secret (KEY, SECRET, PASS, TOKEN...), but
DATABASE_URL, REDIS_URL and the cache and broker locations built from them carry
a password in the URL under harmless-looking names.
"""

from __future__ import annotations

import re
from typing import Any

from django.views.debug import SafeExceptionReporterFilter

# scheme://user:password@host -> the password part.
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]*)@", re.I)


def mask_url_passwords(text: str) -> str:
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{'*' * 8}@", text)


class PasswordMaskingFilter(SafeExceptionReporterFilter):
    def cleanse_setting(self, key: Any, value: Any) -> Any:
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            return mask_url_passwords(cleansed)
        return cleansed
