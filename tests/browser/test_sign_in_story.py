"""The product's story in a real browser: a user signs in with Google and watches the
mirror fill; an operator then starts an incremental sync from the console.

Everything is real except Google: `manage.py runserver` and `manage.py qcluster`
subprocesses on the test database, the Gmail emulator (in this process) for OAuth and
the API, and Debian's headless Chromium. The server is a subprocess because allauth
reads the Google URLs when its views are imported: settings of its own, from the env.
"""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django_q.models import Schedule

from mailsync.models import SyncProgress
from tests.browser.conftest import console_page
from tests.cluster import cluster_env, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.browser]

MAILBOX = "story@example.com"
MESSAGES = 300
ADMIN_PASSWORD = "a long operator passphrase"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# While the test waits for a mid-sync screenshot, each Gmail call takes this long.
SLOW_GMAIL_MS = 400


def percentage(page) -> int:
    return int(page.get_attribute("#progress-bar", "data-percentage"))


def test_sign_in_watch_the_sync_then_an_operator_syncs_again(
    emulator, clusters, web_server, browser, screenshot_dir
):
    emulator.add_mailbox(MAILBOX, count=MESSAGES)
    emulator.add_mailbox("someone.else@example.com", count=20)
    # The story is about the operator's button: the every-minute dispatcher must not
    # start the same incremental sync in between (a flushed database has no schedules
    # either; the first transactional test still sees the migration's).
    Schedule.objects.all().delete()
    # Small sequential batches and a slow Gmail while we wait for a mid-sync picture;
    # Gmail is made fast again as soon as we have it.
    env = cluster_env(emulator, MAILSYNC_BATCH_SIZE="25", MAILSYNC_BATCHES_IN_FLIGHT="1")
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)  # for this process's Playwright only
    cluster = clusters.start(env)
    server = web_server(
        {**env, "DEBUG": "true", "ALLOWED_HOSTS": "127.0.0.1,localhost", "LOG_LEVEL": "WARNING"}
    )
    logs = [cluster, server]

    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(20_000)
    page = context.new_page()

    # --- The user: sign in with Google -------------------------------------------------
    page.goto(server.url + "/")
    assert "/accounts/login/" in page.url
    page.click("#google-login")  # a POST form
    page.wait_for_load_state()
    if page.locator("#google-continue").count():  # allauth's confirmation, if shown
        page.click("#google-continue")
    # The emulator's consent page: every mailbox it has, as Google's account chooser.
    page.wait_for_selector(f'[data-email="{MAILBOX}"]')
    assert page.url.startswith(emulator.base_url)
    emulator.config.latency_ms = SLOW_GMAIL_MS
    page.click(f'[data-email="{MAILBOX}"]')

    # --- Back on the app: the progress page fills by itself ------------------------------
    page.wait_for_url(server.url + "/")
    page.wait_for_selector("#progress-bar")
    assert page.inner_text("#user-email") == MAILBOX
    page.evaluate("window.storyMarker = 'not reloaded'")
    shoot = {"animations": "disabled", "full_page": True}
    page.screenshot(path=screenshot_dir / "progress-mid-sync.png", **shoot)  # fallback
    seen: list[int] = []
    mid_sync_taken = False
    deadline = time.monotonic() + 45
    while (value := percentage(page)) < 100:
        if not seen or seen[-1] != value:
            seen.append(value)
        if not mid_sync_taken and 20 <= value <= 80:
            page.screenshot(path=screenshot_dir / "progress-mid-sync.png", **shoot)
            mid_sync_taken = True
            emulator.config.latency_ms = 0
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the page stayed at {seen}%\n" + "\n".join(p.output() for p in logs)
            )
        page.wait_for_timeout(100)
    emulator.config.latency_ms = 0
    seen.append(100)
    page.wait_for_selector('#stage-messages[data-state="done"]')
    page.wait_for_selector('#progress-bar[data-state="done"]')
    # The page polled /status/ and swapped its fragments: it was never reloaded.
    assert page.evaluate("window.storyMarker") == "not reloaded"
    assert seen[0] < 100, seen
    assert page.inner_text("#progress-text") == f"{MESSAGES} / {MESSAGES} messages"
    assert page.get_attribute("#stage-labels", "data-state") == "done"
    assert page.get_attribute("#stage-listing", "data-state") == "done"
    shown = set(
        page.locator("#label-list li").evaluate_all("els => els.map(e => e.dataset.labelId)")
    )
    gmail_labels = {label["id"] for label in emulator.snapshot(MAILBOX)["labels"]}
    assert shown == gmail_labels
    assert {"INBOX", "SENT", "TRASH"} <= shown
    assert page.locator("#label-list li.label-user").count() >= 5
    page.screenshot(path=screenshot_dir / "progress-complete.png", **shoot)

    phone = browser.new_context(
        viewport=PHONE, device_scale_factor=2, is_mobile=True, storage_state=context.storage_state()
    )
    phone_page = phone.new_page()
    phone_page.goto(server.url + "/")
    phone_page.wait_for_selector('#progress-bar[data-state="done"]')
    phone_page.screenshot(path=screenshot_dir / "progress-phone.png", **shoot)
    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page scrolls sideways on a phone ({width}px)"
    phone.close()

    user = get_user_model().objects.get(email=MAILBOX)

    def initial_sync_done() -> bool:
        user.refresh_from_db()
        return (
            user.can_sync_incrementally
            and not SyncProgress.objects.filter(
                user=user, status__in=SyncProgress.ACTIVE_STATUSES
            ).exists()
        )

    wait_for(initial_sync_done, 30, "the initial run to complete", logs)
    assert not SyncProgress.objects.filter(user=user, sync_type="incremental").exists()

    # --- The operator: an incremental sync from the console ------------------------------
    admin = get_user_model().objects.create_superuser(
        username="operator", email="operator@example.com", password=ADMIN_PASSWORD
    )
    console = console_page(browser, server.url, admin.username, ADMIN_PASSWORD, DESKTOP)
    console.goto(server.url + "/admin/accounts/user/")
    console.check(f'input.action-select[value="{user.pk}"]')
    console.select_option('select[name="action"]', "run_incremental_sync")
    console.click('button[name="index"]')
    message = console.locator(".messagelist li.success")
    message.wait_for()
    assert "queued 1 user," in message.inner_text(), message.inner_text()

    runs = SyncProgress.objects.filter(user=user, sync_type="incremental")
    assert runs.count() == 1
    run = runs.get()

    def finished() -> bool:
        run.refresh_from_db()
        return not run.is_active

    wait_for(finished, 30, "the incremental run", logs)
    assert run.status == "completed", run.error_message

    # The user's page says so at its next poll.
    page.reload()
    assert page.get_attribute("#stage-incremental", "data-state") == "done"
    context.close()
