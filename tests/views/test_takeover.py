"""Account takeover before first sign-in (issue 9): users sign in with Google only, and
a Google account never lands in an account it did not create (or an operator's).

The sign-ins are real: allauth's views, the emulator's consent page and token endpoint
over HTTP."""

from __future__ import annotations

import pytest
from allauth.account.models import EmailAddress
from allauth.socialaccount.models import SocialAccount
from django.contrib.auth import SESSION_KEY, get_user_model
from django.core.management import call_command
from django.urls import reverse

from accounts.models import CreatedVia, GoogleToken
from mailsync.models import SyncProgress

from .google_sign_in import sign_in_with_google

pytestmark = pytest.mark.django_db

VICTIM = "victim@example.com"
User = get_user_model()


def signed_in_user(client):
    return client.session.get(SESSION_KEY)


def test_sign_up_creates_nothing(client):
    response = client.post(
        "/accounts/signup/", {"email": VICTIM, "password1": "x" * 20, "password2": "x" * 20}
    )

    assert response.status_code == 404  # there is no local sign-up at all
    assert not User.objects.exists()
    assert not EmailAddress.objects.exists()


def test_the_site_login_page_takes_no_email_only_or_password_login(client, user_factory):
    user = user_factory(email=VICTIM)
    user.set_password("a long passphrase")
    user.save()

    by_email = client.post(reverse("account_login"), {"login": VICTIM})
    by_password = client.post(
        reverse("account_login"), {"login": VICTIM, "password": "a long passphrase"}
    )

    assert by_email.status_code == 403  # no login by emailed code
    assert by_password.status_code == 403  # users sign in with Google
    assert signed_in_user(client) is None
    assert "/accounts/login/code/" not in client.get(reverse("account_login")).content.decode()


def test_staff_keep_password_login_to_the_admin(client, user_factory):
    operator = user_factory(email="operator@example.com", is_staff=True)
    operator.set_password("a long passphrase")
    operator.save()

    response = client.post(
        reverse("admin:login"), {"username": operator.username, "password": "a long passphrase"}
    )

    assert response.status_code == 302
    assert signed_in_user(client) == str(operator.pk)


def test_takeover_a_pre_registered_account_is_refused(client, google_at_emulator, user_factory):
    """The attack: an account for the victim's address exists before the victim ever
    signs in (a legacy sign-up, any path but Google or an operator). The victim's
    Google sign-in must not land in it, or its creator would read the mailbox."""
    google_at_emulator.add_mailbox(VICTIM, count=5)
    planted = user_factory(email=VICTIM)  # created_via: unknown
    EmailAddress.objects.create(user=planted, email=VICTIM, verified=False, primary=True)

    response = sign_in_with_google(client, VICTIM)

    assert response.status_code == 403
    html = response.content.decode()
    assert 'id="sign-in-refused"' in html
    assert "not created by Google sign-in" in html
    assert signed_in_user(client) is None
    assert client.get("/").status_code == 302  # nobody is signed in
    assert not SocialAccount.objects.exists()
    assert not GoogleToken.objects.exists()
    assert not SyncProgress.objects.exists()
    assert User.objects.get() == planted  # and no second account either


def test_a_google_account_of_another_sub_is_refused(client, google_at_emulator, user_factory):
    """An account made by Google sign-in, but by another Google account (`sub`) that
    used this address: a new Google account with the same address stays out."""
    google_at_emulator.add_mailbox(VICTIM, count=5)
    earlier = user_factory(email=VICTIM, created_via=CreatedVia.GOOGLE)
    SocialAccount.objects.create(user=earlier, provider="google", uid="an-older-google-id")

    response = sign_in_with_google(client, VICTIM)

    assert response.status_code == 403
    assert "another Google account" in response.content.decode()
    assert signed_in_user(client) is None
    assert SocialAccount.objects.get().uid == "an-older-google-id"
    assert not GoogleToken.objects.exists()


def test_an_operator_account_is_attached_at_first_sign_in(client, google_at_emulator):
    google_at_emulator.add_mailbox(VICTIM, count=5)
    call_command("createsuperuser", username="boss", email=VICTIM, interactive=False, verbosity=0)
    operator = User.objects.get()
    assert operator.created_via == CreatedVia.OPERATOR

    response = sign_in_with_google(client, VICTIM)

    assert response.status_code == 302
    assert signed_in_user(client) == str(operator.pk)
    account = SocialAccount.objects.get(provider="google")
    assert account.user == operator
    assert GoogleToken.objects.get(account=account).refresh_token
    assert SyncProgress.objects.filter(user=operator).count() == 1
    # Later sign-ins find it by its Google id.
    client.logout()
    assert sign_in_with_google(client, VICTIM).status_code == 302
    assert User.objects.count() == 1


def test_the_admin_add_user_form_records_an_operator(client, user_factory):
    admin_user = user_factory(email="root@example.com", is_staff=True, is_superuser=True)
    client.force_login(admin_user)

    response = client.post(
        reverse("admin:accounts_user_add"),
        {
            "username": "new@example.com",
            "password1": "a long passphrase 1",
            "password2": "a long passphrase 1",
            "usable_password": "true",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    assert User.objects.get(username="new@example.com").created_via == CreatedVia.OPERATOR


def test_google_sign_in_records_how_the_account_was_made(client, google_at_emulator):
    google_at_emulator.add_mailbox("erin@example.com", count=5)

    sign_in_with_google(client, "erin@example.com")

    assert User.objects.get(email="erin@example.com").created_via == CreatedVia.GOOGLE


def test_connecting_a_second_google_account_is_refused(client, google_at_emulator, google_user):
    google_at_emulator.add_mailbox("second@example.com", count=5)
    user = google_user(email="first@example.com")
    client.force_login(user)

    started = client.post(reverse("google_login") + "?process=connect")
    assert started.status_code == 302
    # Follow the consent page the way sign_in_with_google does, for another account.
    response = sign_in_with_google(client, "second@example.com", start=started)

    assert response.status_code == 403
    assert SocialAccount.objects.filter(user=user).count() == 1


def test_connect_gmail_does_not_attach_to_an_account_it_may_not(
    gmail_settings, emulator, user_factory
):
    from django.core.management import CommandError

    mailbox = emulator.add_mailbox(VICTIM, count=1)
    user_factory(email=VICTIM)  # created_via: unknown

    with pytest.raises(CommandError, match="not created by Google sign-in"):
        call_command("connect_gmail", VICTIM, "--refresh-token", mailbox.refresh_token)
    assert not GoogleToken.objects.exists()
