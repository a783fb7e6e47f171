"""The Content-Security-Policy breaks nothing a person uses: the Google sign-in (a form
that ends on Google's consent page), the progress page's script, the admin's scripts
and the sandboxed email frame, in Debian's headless Chromium, with no violation."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from mailsync.models import EmailMessage
from tests.cluster import cluster_env

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.browser]

MAILBOX = "csp@example.com"
PASSWORD = "a long operator passphrase"


def test_pages_work_under_the_policy(emulator, web_server, browser):
    emulator.add_mailbox(MAILBOX, count=5)
    env = cluster_env(emulator)
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    server = web_server({**env, "DEBUG": "true", "LOG_LEVEL": "WARNING"})
    violations: list[str] = []

    def watch(page) -> None:
        page.on(
            "console",
            lambda message: (
                violations.append(message.text)
                if "Content Security Policy" in message.text or "Refused to" in message.text
                else None
            ),
        )

    user_context = browser.new_context()
    user_context.set_default_timeout(20_000)
    page = user_context.new_page()
    watch(page)
    page.goto(server.url + "/accounts/login/")
    page.click("#google-login")
    page.wait_for_selector(f'[data-email="{MAILBOX}"]')  # form-action let us reach Google
    page.click(f'[data-email="{MAILBOX}"]')
    page.wait_for_url(server.url + "/")
    page.wait_for_function("() => document.querySelector('#progress-bar') !== null")
    page.wait_for_timeout(1500)  # status.js polls at least once
    page.goto(server.url + "/account/")

    user = get_user_model().objects.get(email=MAILBOX)
    message = EmailMessage.objects.create(
        user=user,
        gmail_id="m1",
        subject="Hello",
        body_html='<p>Hi <b>there</b> <img alt="pixel" src="data:image/png;base64,iVBORw0KGgo="></p>',
    )
    get_user_model().objects.create_superuser("operator", "operator@example.com", PASSWORD)
    console = browser.new_context().new_page()
    console.set_default_timeout(20_000)
    watch(console)
    console.goto(server.url + "/admin/login/?next=/admin/")
    console.fill("#id_username", "operator")
    console.fill("#id_password", PASSWORD)
    console.click('input[type="submit"]')
    console.wait_for_url(server.url + "/admin/")
    console.goto(server.url + "/admin/accounts/user/")
    console.check(f'input.action-select[value="{user.pk}"]')  # the actions script runs
    assert console.inner_text(".action-counter").startswith("1 of")
    console.goto(server.url + f"/admin/mailsync/emailmessage/{message.pk}/change/")
    frame = console.frame_locator("iframe.email-html")
    assert frame.locator("b").inner_text() == "there"

    assert violations == []
