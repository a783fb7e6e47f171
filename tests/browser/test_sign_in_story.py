"""The product's story in a real browser: a user signs in with Google, watches the
mirror fill, reads it (a label, a search, a message and its thread, an attachment);
an operator then starts an incremental sync from the console; the user disconnects
Google (keeping the mirror), signs in again (the mirror catches up), and deletes the
account.

Everything is real except Google: `manage.py runserver` and `manage.py qcluster`
subprocesses on the test database, the Gmail emulator (in this process) for OAuth and
the API, and Debian's headless Chromium. The server is a subprocess because allauth
reads the Google URLs when its views are imported: settings of its own, from the env.

The story is a sequence of steps, each a function of the `Story`.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.db.models import Count
from django_q.models import Schedule

from accounts.models import GoogleToken
from mailsync.models import EmailMessage, Label, SyncProgress
from tests.browser.conftest import console_page
from tests.cluster import cluster_env, wait_for
from tests.gmail_fixtures import assert_exact_mirror, attachment_bytes

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.browser]

MAILBOX = "story@example.com"
MESSAGES = 300
ADMIN_PASSWORD = "a long operator passphrase"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# While the test waits for a mid-sync screenshot, each Gmail call takes this long.
SLOW_GMAIL_MS = 400
# The story samples the progress figure as a person would glance at it.
SAMPLE_EVERY_MS = 500
SHOOT = {"animations": "disabled", "full_page": True}
# A list is as long as its page of 50: its first screen is the picture.
SHOOT_SCREEN = {"animations": "disabled"}
ROW_IDS = "els => els.map(e => Number(e.dataset.messageId))"


@dataclass
class Story:
    emulator: Any
    browser: Any
    server: Any
    screenshots: Path
    logs: list
    context: Any = None
    page: Any = None
    user: Any = None
    notes: dict = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.server.url + path

    def listed_ids(self) -> list[int]:
        return self.page.locator("#message-list li.mail-row").evaluate_all(ROW_IDS)

    def fail(self, message: str) -> None:
        raise AssertionError(message + "\n" + "\n".join(p.output() for p in self.logs))


def newest_first(**filters) -> list[int]:
    rows = EmailMessage.objects.filter(internal_date__isnull=False, **filters)
    return list(rows.order_by("-internal_date", "-pk").values_list("pk", flat=True))


def percentage(page) -> int:
    return int(page.get_attribute("#progress-bar", "data-percentage"))


def test_sign_in_watch_read_the_mailbox_then_an_operator_syncs_again(
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
    story = Story(emulator, browser, server, screenshot_dir, [cluster, server])

    sign_in_with_google(story)
    watch_the_first_sync(story)
    see_the_progress_on_a_phone(story)
    open_a_label(story)
    search(story)
    read_a_message_and_its_thread(story)
    download_an_attachment(story)
    read_the_mailbox_on_a_phone(story)
    an_operator_runs_an_incremental_sync(story)
    disconnect_google_keeping_the_mirror(story)
    sign_in_again(story)
    delete_the_account(story)
    story.context.close()


# --- The user ----------------------------------------------------------------------------
def sign_in_with_google(story: Story) -> None:
    story.context = story.browser.new_context(viewport=DESKTOP)
    story.context.set_default_timeout(20_000)
    page = story.page = story.context.new_page()
    page.goto(story.url("/"))
    assert "/accounts/login/" in page.url
    page.click("#google-login")  # a POST form
    page.wait_for_load_state()
    if page.locator("#google-continue").count():  # allauth's confirmation, if shown
        page.click("#google-continue")
    # The emulator's consent page: every mailbox it has, as Google's account chooser.
    page.wait_for_selector(f'[data-email="{MAILBOX}"]')
    assert page.url.startswith(story.emulator.base_url)
    story.emulator.config.latency_ms = SLOW_GMAIL_MS
    page.click(f'[data-email="{MAILBOX}"]')
    page.wait_for_url(story.url("/"))
    page.wait_for_selector("#progress-bar")
    assert page.inner_text("#user-email") == MAILBOX
    story.user = get_user_model().objects.get(email=MAILBOX)


def watch_the_first_sync(story: Story) -> None:
    """The page fills by itself, and its one figure never goes back."""
    page = story.page
    page.evaluate("window.storyMarker = 'not reloaded'")
    page.screenshot(path=story.screenshots / "progress-mid-sync.png", **SHOOT)  # fallback
    seen: list[int] = []
    mid_sync_taken = False
    deadline = time.monotonic() + 60
    while (value := percentage(page)) < 100:
        seen.append(value)
        if not mid_sync_taken and 20 <= value <= 80:
            page.screenshot(path=story.screenshots / "progress-mid-sync.png", **SHOOT)
            mid_sync_taken = True
            story.emulator.config.latency_ms = 0
        if time.monotonic() > deadline:
            story.fail(f"the page stayed at {seen[-5:]}%")
        page.wait_for_timeout(SAMPLE_EVERY_MS)
    story.emulator.config.latency_ms = 0
    seen.append(100)
    assert seen == sorted(seen), f"the progress went back: {seen}"
    assert seen[0] < 100, seen
    page.wait_for_selector('#stage-messages[data-state="done"]')
    page.wait_for_selector('#progress-bar[data-state="done"]')
    # The page polled /status/ and swapped its fragments: it was never reloaded.
    assert page.evaluate("window.storyMarker") == "not reloaded"
    assert page.inner_text("#progress-text") == f"{MESSAGES} / {MESSAGES} messages"
    assert page.get_attribute("#stage-labels", "data-state") == "done"
    assert page.get_attribute("#stage-listing", "data-state") == "done"
    shown = set(
        page.locator("#label-list li").evaluate_all("els => els.map(e => e.dataset.labelId)")
    )
    gmail_labels = {label["id"] for label in story.emulator.snapshot(MAILBOX)["labels"]}
    assert shown == gmail_labels
    assert {"INBOX", "SENT", "TRASH"} <= shown
    assert page.locator("#label-list li.label-user").count() >= 5
    page.screenshot(path=story.screenshots / "progress-complete.png", **SHOOT)

    def initial_sync_done() -> bool:
        story.user.refresh_from_db()
        return (
            story.user.can_sync_incrementally
            and not SyncProgress.objects.filter(
                user=story.user, status__in=SyncProgress.ACTIVE_STATUSES
            ).exists()
        )

    wait_for(initial_sync_done, 30, "the initial run to complete", story.logs)
    assert not SyncProgress.objects.filter(user=story.user, sync_type="incremental").exists()


def see_the_progress_on_a_phone(story: Story) -> None:
    phone = phone_context(story)
    on_a_phone(story, phone.new_page(), "/", '#progress-bar[data-state="done"]', "progress")
    phone.close()


def open_a_label(story: Story) -> None:
    """From the progress page to the mailbox, then a label from the sidebar."""
    page = story.page
    page.click("#read-mail")
    page.wait_for_selector("#message-list")
    assert page.inner_text("#mail-title") == "Inbox"
    assert story.listed_ids() == newest_first(user=story.user, labels__gmail_id="INBOX")[:50]
    # Keyboard: j moves to the first row, j again to the second.
    page.keyboard.press("j")
    page.keyboard.press("j")
    focused = page.evaluate("document.activeElement.closest('li').dataset.messageId")
    assert int(focused) == story.listed_ids()[1]
    page.screenshot(path=story.screenshots / "mailbox-list.png", **SHOOT_SCREEN)

    label = (
        Label.objects.filter(user=story.user, type=Label.Type.USER)
        .annotate(n=Count("messages"))
        .filter(n__gte=3)
        .order_by("-n")
        .first()
    )
    page.click(f'#mail-labels a[data-label-id="{label.gmail_id}"]')
    page.wait_for_url(re.compile(f"/mail/label/{label.gmail_id}/$"))
    assert page.inner_text("#mail-title") == label.name
    assert story.listed_ids() == newest_first(labels=label)[:50]


def search(story: Story) -> None:
    page = story.page
    newest = EmailMessage.objects.get(pk=newest_first(user=story.user)[0])
    word = max(re.findall(r"[A-Za-z]{4,}", newest.subject), key=len)
    page.keyboard.press("/")  # the search box
    page.keyboard.type(word)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/mail/search/\?q="))
    assert page.input_value("#mail-search-input") == word
    assert newest.pk in story.listed_ids()
    assert word.lower() in page.inner_text("#message-list").lower()


def read_a_message_and_its_thread(story: Story) -> None:
    """A recent message of a conversation, opened from All mail: the whole thread is
    there, and an earlier message of it opens from the thread."""
    page = story.page
    recent = newest_first(user=story.user)[:50]
    sizes = dict(
        EmailMessage.objects.filter(user=story.user, internal_date__isnull=False)
        .values_list("thread_id")
        .annotate(n=Count("pk"))
        .filter(n__gte=2)
        .values_list("thread_id", "n")
    )
    message = next(m for m in EmailMessage.objects.filter(pk__in=recent) if m.thread_id in sizes)
    page.click("#mail-labels a[data-label-id='all']")
    page.wait_for_selector("#message-list")
    page.click(f'li.mail-row[data-message-id="{message.pk}"] a')
    page.wait_for_selector("#open-message")
    assert page.inner_text("#header-subject") == (message.subject or "(no subject)")
    assert page.locator("#thread > li").count() == sizes[message.thread_id]
    if message.body_html:
        frame = page.locator("iframe.email-html")
        assert frame.get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
    other = page.locator("#thread a.thread-link").first
    other_id = int(other.get_attribute("data-message-id"))
    other.click()
    page.wait_for_url(re.compile(f"/mail/message/{other_id}/$"))
    assert page.locator("#thread > li").count() == sizes[message.thread_id]
    assert EmailMessage.objects.get(pk=other_id).thread_id == message.thread_id


def download_an_attachment(story: Story) -> None:
    """The bytes come from Gmail's attachments.get, as the emulator has them."""
    page = story.page
    message, item = next(
        (m, a)
        for m in EmailMessage.objects.filter(user=story.user).exclude(attachments=[])
        for a in m.attachments
        if a.get("attachment_id") and a.get("filename")
    )
    story.notes["message with attachment"] = message.pk
    page.goto(story.url(f"/mail/message/{message.pk}/"))
    page.wait_for_selector("#attachments")
    wait_for_the_message_body(page)
    page.screenshot(path=story.screenshots / "mailbox-message.png", **SHOOT)
    link = page.locator("a.attachment-link", has_text=item["filename"])
    with page.expect_download() as download:
        link.click()
    path = download.value.path()
    assert download.value.suggested_filename == item["filename"]
    assert Path(path).read_bytes() == attachment_bytes(
        story.emulator, MAILBOX, message.gmail_id, item["filename"]
    )


def read_the_mailbox_on_a_phone(story: Story) -> None:
    phone = phone_context(story)
    page = phone.new_page()
    on_a_phone(story, page, "/mail/", "#message-list", "mailbox-list", SHOOT_SCREEN)
    message = f"/mail/message/{story.notes['message with attachment']}/"
    on_a_phone(story, page, message, "#open-message", "mailbox-message")
    phone.close()


# --- The operator ------------------------------------------------------------------------
def an_operator_runs_an_incremental_sync(story: Story) -> None:
    user = story.user
    admin = get_user_model().objects.create_superuser(
        username="operator", email="operator@example.com", password=ADMIN_PASSWORD
    )
    console = console_page(story.browser, story.server.url, admin.username, ADMIN_PASSWORD, DESKTOP)
    console.goto(story.url("/admin/accounts/user/"))
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

    wait_for(finished, 30, "the incremental run", story.logs)
    assert run.status == "completed", run.error_message

    # The user's page says so at its next poll.
    story.page.goto(story.url("/"))
    assert story.page.get_attribute("#stage-incremental", "data-state") == "done"
    assert story.page.inner_text("#incremental-last") == "just now"
    console.context.close()


# --- Leaving, coming back, leaving for good ------------------------------------------------
def disconnect_google_keeping_the_mirror(story: Story) -> None:
    page, user = story.page, story.user
    kept = EmailMessage.objects.filter(user=user).count()
    page.goto(story.url("/account/"))
    assert page.get_attribute("#google-status", "data-connected") == "true"
    assert page.is_checked('input[name="mirror"][value="keep"]')  # keeping is the default
    page.click("#disconnect-google")
    page.wait_for_selector('#google-status[data-connected="false"]')
    assert not GoogleToken.objects.filter(account__user=user).exists()
    assert EmailMessage.objects.filter(user=user).count() == kept
    # Nothing syncs a disconnected mailbox: the mail that arrives now waits for Gmail.
    story.notes["arrived while away"] = story.emulator.insert_message(MAILBOX)


def sign_in_again(story: Story) -> None:
    page, user = story.page, story.user
    page.click("#reconnect-google")
    page.wait_for_selector(f'[data-email="{MAILBOX}"]')
    page.click(f'[data-email="{MAILBOX}"]')
    page.wait_for_url(story.url("/"))
    assert GoogleToken.objects.filter(account__user=user).exists()
    assert get_user_model().objects.filter(email=MAILBOX).count() == 1  # the same account

    def caught_up() -> bool:
        runs = SyncProgress.objects.filter(user=user)
        return not any(run.is_active for run in runs) and EmailMessage.objects.filter(
            user=user, gmail_id=story.notes["arrived while away"], internal_date__isnull=False
        ).exists()

    wait_for(caught_up, 60, "the mirror to catch up after signing in again", story.logs)
    assert_exact_mirror(user, story.emulator.snapshot(MAILBOX))


def delete_the_account(story: Story) -> None:
    page, user = story.page, story.user
    page.goto(story.url("/account/"))
    page.click("#delete-account-link")
    page.click("#confirm-delete-account")
    page.wait_for_url(re.compile(r".*/accounts/login/.*"))
    page.goto(story.url("/mail/"))
    assert "/accounts/login/" in page.url  # signed out at once
    wait_for(
        lambda: not get_user_model().objects.filter(pk=user.pk).exists(),
        60,
        "the account to be deleted",
        story.logs,
    )
    assert not EmailMessage.objects.filter(user_id=user.pk).exists()
    assert not Label.objects.filter(user_id=user.pk).exists()


# --- Helpers -----------------------------------------------------------------------------
def phone_context(story: Story):
    return story.browser.new_context(
        viewport=PHONE,
        device_scale_factor=2,
        is_mobile=True,
        storage_state=story.context.storage_state(),
    )


def on_a_phone(story: Story, page, path: str, ready: str, name: str, shoot=SHOOT) -> None:
    """Open `path` on the phone, screenshot it as docs/screenshots/<name>-phone.png, and
    check that nothing scrolls sideways."""
    page.goto(story.url(path))
    page.wait_for_selector(ready)
    wait_for_the_message_body(page)
    page.screenshot(path=story.screenshots / f"{name}-phone.png", **shoot)
    assert_no_sideways_scroll(page)


def wait_for_the_message_body(page) -> None:
    """The sanitized HTML is rendered in its frame (a srcdoc loads after the page).
    Chromium does not paint a sandboxed (cross-origin) frame while it is off screen:
    scroll to it, or a full-page screenshot shows it empty."""
    frame = page.locator("iframe.email-html")
    if frame.count():
        page.frame_locator("iframe.email-html").locator("body *").first.wait_for()
        frame.scroll_into_view_if_needed()
        page.wait_for_timeout(300)


def assert_no_sideways_scroll(page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"{page.url} scrolls sideways on a phone ({width}px)"
