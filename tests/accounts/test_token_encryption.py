"""OAuth tokens are encrypted at rest, never shown, and re-encrypted on key rotation."""

from __future__ import annotations

from pathlib import Path

import pytest
from allauth.socialaccount.models import SocialAccount, SocialToken
from cryptography.fernet import Fernet
from django.contrib import admin
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from accounts.models import GoogleToken
from mailsync.credentials import credentials_for
from tests.views.google_sign_in import sign_in_with_google

KEY_A, KEY_B = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def raw_values() -> bytes:
    """Every row of every table as the database stores it (no field decrypts it)."""
    chunks = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            quoted = connection.ops.quote_name(table)
            if connection.vendor == "postgresql":
                cursor.execute(f"SELECT t::text FROM {quoted} AS t")  # noqa: S608 (our tables)
            else:
                cursor.execute(f"SELECT * FROM {quoted}")  # noqa: S608
            chunks.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(chunks).encode()


def database_files() -> bytes:
    """The SQLite database's bytes on disk (the file and its write-ahead log)."""
    name = Path(connection.settings_dict["NAME"])
    return b"".join(p.read_bytes() for p in (name, Path(f"{name}-wal")) if p.exists())


@pytest.mark.django_db(transaction=True)
def test_a_signed_in_users_tokens_are_nowhere_in_the_database(client, google_at_emulator):
    mailbox = google_at_emulator.add_mailbox("erin@example.com", count=3)
    sign_in_with_google(client, "erin@example.com")
    stored = GoogleToken.objects.get(account__user__email="erin@example.com")
    refresh, access = stored.refresh_token, stored.access_token
    assert refresh
    assert access
    assert refresh != mailbox.refresh_token

    dumps = [raw_values()]
    if connection.vendor == "sqlite":
        dumps.append(database_files())
    for dump in dumps:
        assert b"gAAAAA" in dump  # the dump does hold the (Fernet-encrypted) token row
        assert refresh.encode() not in dump
        assert access.encode() not in dump
    assert not SocialToken.objects.exists()  # allauth keeps no copy
    # ...and the app still reads them.
    assert credentials_for(stored.account.user_id).token == access


@pytest.mark.django_db
def test_keys_rotate_with_reencrypt_tokens_in_chunks(settings, user_factory, capsys):
    settings.TOKEN_ENCRYPTION_KEYS = [KEY_A]
    for n in range(5):
        account = SocialAccount.objects.create(
            user=user_factory(), provider="google", uid=f"sub-{n}"
        )
        GoogleToken.objects.create(account=account, access_token=f"a{n}", refresh_token=f"r{n}")
    before = dict(GoogleToken.objects.values_list("pk", "refresh_token"))

    settings.TOKEN_ENCRYPTION_KEYS = [KEY_B, KEY_A]  # a new key, newest first
    call_command("reencrypt_tokens", "--chunk-size", "2")

    assert "Re-encrypted 5 token rows with the newest key in 3 chunks." in capsys.readouterr().out
    settings.TOKEN_ENCRYPTION_KEYS = [KEY_B]  # the old key is gone
    after = {t.pk: (t.access_token, t.refresh_token) for t in GoogleToken.objects.all()}
    assert sorted(after.values()) == [(f"a{n}", f"r{n}") for n in range(5)]
    assert set(before) == set(after)


@pytest.mark.django_db
def test_the_admin_shows_no_token(client, google_user, user_factory):
    user = google_user()
    operator = user_factory(is_staff=True, is_superuser=True)
    client.force_login(operator)

    assert not admin.site.is_registered(SocialToken)
    assert not admin.site.is_registered(GoogleToken)
    page = client.get(reverse("admin:accounts_user_change", args=[user.pk])).content.decode()
    assert "refresh" not in page.split('id="content"')[1].lower().replace("refresh_from", "")
    index = client.get(reverse("admin:index")).content.decode()
    assert "Social application tokens" not in index


@pytest.mark.django_db(transaction=True)
def test_migration_moves_plain_tokens_into_encrypted_rows():
    """Rows stored by the previous release (plain SocialToken) end up encrypted, and
    existing accounts get how they were created."""
    executor = MigrationExecutor(connection)
    before = [("accounts", "0002_google_token_and_account_lifecycle")]
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    User, Account = (
        old.get_model("accounts", "User"),
        old.get_model("socialaccount", "SocialAccount"),
    )
    google = User.objects.create(username="g@example.com", email="g@example.com")
    account = Account.objects.create(user=google, provider="google", uid="sub-1")
    old.get_model("socialaccount", "SocialToken").objects.create(
        account=account, token="plain-access", token_secret="plain-refresh"
    )
    staff = User.objects.create(username="ops@example.com", is_staff=True)
    stranger = User.objects.create(username="x@example.com", email="x@example.com")

    MigrationExecutor(connection).migrate(executor.loader.graph.leaf_nodes())

    token = GoogleToken.objects.get(account_id=account.pk)
    assert (token.access_token, token.refresh_token) == ("plain-access", "plain-refresh")
    assert b"plain-refresh" not in raw_values()
    assert not SocialToken.objects.exists()
    created = dict(
        User.objects.filter(pk__in=[google.pk, staff.pk, stranger.pk]).values_list(
            "pk", "created_via"
        )
    )
    assert created == {google.pk: "google", staff.pk: "operator", stranger.pk: "unknown"}
