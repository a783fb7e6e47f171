"""Encryption at rest for the Google tokens: MultiFernet over TOKEN_ENCRYPTION_KEYS.

Fernet (from the `cryptography` package) is authenticated encryption: a value that
was tampered with, or encrypted with a key that is no longer configured, fails to
decrypt instead of yielding garbage. The first key encrypts; every key decrypts,
so keys rotate without downtime (see `manage.py reencrypt_tokens`).
"""

from __future__ import annotations

from functools import cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.dispatch import receiver


@cache
def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in settings.TOKEN_ENCRYPTION_KEYS])


@receiver(setting_changed)
def _forget_keys(setting: str, **kwargs) -> None:
    if setting == "TOKEN_ENCRYPTION_KEYS":
        _fernet.cache_clear()


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode("ascii")


def decrypt(ciphertext: str) -> str:
    try:
        return _fernet().decrypt(ciphertext.encode("ascii")).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "TOKEN_ENCRYPTION_KEYS: a stored token cannot be decrypted with any configured "
            "key (was a key removed before `manage.py reencrypt_tokens` ran?)"
        ) from None


def reencrypt(ciphertext: str) -> str:
    """The same secret under the newest key (decrypted with whichever key fits)."""
    return _fernet().rotate(ciphertext.encode("ascii")).decode("ascii")


class EncryptedTextField(models.TextField):
    """Text that Python code sees in clear and the database only encrypted.

    An empty value stays empty (there is nothing to hide, and "no refresh token"
    stays visible to queries). Encryption is randomised, so the field cannot be
    filtered on: look rows up by their other columns.
    """

    description = "Text encrypted with Fernet (TOKEN_ENCRYPTION_KEYS)"

    def from_db_value(self, value, expression, connection):
        return decrypt(value) if value else value

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        return encrypt(value) if value else value
