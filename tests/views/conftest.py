"""Small factories for the views' tests: a signed-in Google user and mailbox rows."""

from __future__ import annotations

import itertools

import pytest
from allauth.socialaccount.models import SocialAccount
from django.db import transaction

from accounts.models import CreatedVia, GoogleToken
from mailsync import counters
from mailsync.models import EmailMessage, Label, SyncProgress

from .google_sign_in import google_at_emulator  # noqa: F401 (a fixture)

_ids = itertools.count(1)


@pytest.fixture
def google_user(user_factory):
    """A user who signed in with Google and whose tokens are stored."""

    def make(email: str | None = None, **fields):
        fields.setdefault("created_via", CreatedVia.GOOGLE)
        user = user_factory(email=email, **fields)
        account = SocialAccount.objects.create(user=user, provider="google", uid=f"g{user.pk}")
        GoogleToken.objects.create(account=account, access_token="access", refresh_token="refresh")
        return user

    return make


@pytest.fixture
def label_factory():
    def make(user, name: str, type: str = Label.Type.USER, **fields):
        fields.setdefault(
            "gmail_id", name.upper() if type == Label.Type.SYSTEM else f"Label_{next(_ids)}"
        )
        with transaction.atomic():  # as the sync writes: the totals move with the rows
            label = Label.objects.create(user=user, name=name, type=type, **fields)
            counters.count_labels(user.pk)
        return label

    return make


@pytest.fixture
def message_factory():
    def make(user, fetched: bool = True, labels=(), **fields):
        from django.utils import timezone

        n = next(_ids)
        fields.setdefault("gmail_id", f"m{n:06x}")
        if fetched:
            fields.setdefault("internal_date", timezone.now())
        with transaction.atomic():  # as the sync writes: the totals move with the rows
            counters.lock(user.pk)
            message = EmailMessage.objects.create(user=user, **fields)
            counters.add(user.pk, messages=1, fetched=int(message.internal_date is not None))
        message.labels.set(labels)
        return message

    return make


@pytest.fixture
def run_factory():
    def make(user, sync_type=SyncProgress.SyncType.INITIAL, **fields):
        return SyncProgress.objects.create(user=user, sync_type=sync_type, **fields)

    return make
