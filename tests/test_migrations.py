"""Data migrations fill what they say, and only that."""

from __future__ import annotations

import importlib

import pytest
from django.apps import apps

from mailsync.models import EmailMessage

pytestmark = pytest.mark.django_db


def test_sender_addresses_of_messages_stored_before_are_filled(user_factory):
    user = user_factory()
    old = EmailMessage.objects.create(user=user, gmail_id="a1", sender="Ann <Ann@Example.com>")
    no_address = EmailMessage.objects.create(user=user, gmail_id="a2", sender="Mailer Daemon")
    unfetched = EmailMessage.objects.create(user=user, gmail_id="a3")
    filled = EmailMessage.objects.create(
        user=user, gmail_id="a4", sender="Bob <bob@example.com>", sender_address="kept@example.com"
    )
    migration = importlib.import_module("mailsync.migrations.0010_fill_sender_address")

    migration.fill(apps, None)

    addresses = dict(EmailMessage.objects.values_list("gmail_id", "sender_address"))
    assert addresses == {
        old.gmail_id: "ann@example.com",
        no_address.gmail_id: "",
        unfetched.gmail_id: "",
        filled.gmail_id: "kept@example.com",
    }
