"""The operator console in a real browser at 1280 px: the user, sync-run and message
lists fit without horizontal scrolling, trouble is red, Users come first."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from mailsync.models import EmailMessage, Label, MessageLabel, SyncProgress
from tests.browser.conftest import console_page
from tests.cluster import database_url

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.browser]

PASSWORD = "a long operator passphrase"
WIDTH = 1280


def seed_worst_case() -> None:
    """Long addresses, long errors, active runs: what widens a table."""
    User = get_user_model()
    now = timezone.now()
    for n in range(8):
        email = f"firstname.middlename.lastname.{n}@a-long-company-domain-name.example.com"
        user = User.objects.create_user(
            username=email,
            email=email,
            initial_sync_completed=n % 2 == 0,
            label_sync_completed=True,
            last_full_sync_at=now,
            last_incremental_sync_at=now,
            gmail_auth_error="invalid_grant: Token has been expired or revoked." if n == 3 else "",
        )
        SyncProgress.objects.create(
            user=user,
            sync_type="initial",
            status="in_progress",
            num_processed=1234,
            num_total=56789,
        )
        SyncProgress.objects.create(
            user=user,
            sync_type="incremental",
            status="failed",
            error_message="Gmail refused a request: Gmail answered 400 failedPrecondition: " * 3,
        )
        SyncProgress.objects.create(user=user, sync_type="labels", status="completed")
        label = Label.objects.create(
            user=user, gmail_id="CATEGORY_PERSONAL", name="CATEGORY_PERSONAL", type="system"
        )
        message = EmailMessage.objects.create(
            user=user,
            gmail_id=f"18c2f{n:011x}",
            internal_date=now,
            subject="A subject line that goes on and on about the quarterly figures " * 2,
            sender=f'"A Very Long Display Name Indeed" <{email}>',
            sender_address=email,
        )
        MessageLabel.objects.create(message=message, label=label)


def test_console_lists_fit_1280_px(web_server, browser, screenshot_dir):
    seed_worst_case()
    admin = get_user_model().objects.create_superuser(
        username="operator", email="operator@example.com", password=PASSWORD
    )
    server = web_server(
        {
            "DATABASE_URL": database_url(),
            "DEBUG": "true",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "LOG_LEVEL": "WARNING",
            "PATH": "/usr/bin:/bin",
        }
    )
    page = console_page(
        browser, server.url, admin.username, PASSWORD, {"width": WIDTH, "height": 900}
    )

    # Users is the first entry of the index.
    first_module = page.locator("#content-main .module").nth(1)  # after the task-queue box
    assert "Users" in first_module.inner_text()

    for path, name in (
        ("/admin/accounts/user/", "admin-users"),
        ("/admin/mailsync/syncprogress/", "admin-sync-runs"),
        ("/admin/mailsync/emailmessage/", "admin-messages"),
    ):
        page.goto(server.url + path)
        page.wait_for_selector("#result_list")
        page.screenshot(path=str(screenshot_dir / f"{name}.png"))
        # Neither the page nor the table's own scroll box (.results) scrolls sideways.
        page_width = page.evaluate("document.documentElement.scrollWidth")
        table, box = page.evaluate(
            "(() => { const r = document.querySelector('#changelist .results');"
            " return [r.scrollWidth, r.clientWidth]; })()"
        )
        assert page_width <= WIDTH, f"{path} is {page_width} px wide"
        assert table <= box, f"{path}: the table is {table} px in a {box} px box"

    page.goto(server.url + "/admin/accounts/user/")
    badge = page.locator(".badge-trouble").first
    assert badge.inner_text() == "Needs sign-in"
    assert badge.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(186, 33, 33)"
    assert page.locator("img[src$='icon-yes.svg']").count() == 0  # no green tick for trouble

    page.goto(server.url + "/admin/mailsync/emailmessage/")
    assert "Primary" in page.locator("#result_list").inner_text()
    assert "CATEGORY_PERSONAL" not in page.locator("#result_list").inner_text()
