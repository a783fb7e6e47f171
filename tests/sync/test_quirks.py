"""Each quirk of real Gmail alone (docs/emulator.md, "Quirks of real Gmail"), through the
emulator over HTTP: the failure it caused, and that the mirror stays exact."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from gmail_emulator import EmulatorConfig
from mailsync import gmail, sync
from mailsync.models import EmailMessage, Label, MessageLabel, SyncProgress
from mailsync.status import NOT_LISTED_MARK, mailbox_status
from tests.gmail_fixtures import assert_exact_mirror

pytestmark = pytest.mark.django_db

User = get_user_model()
QUICK = {"quota_user_per_minute": 600_000, "concurrent_requests_per_user": 1000}


def mirror(connected_mailbox, count: int):
    user, _ = connected_mailbox(count=count)
    run = sync.run_until_finished(sync.start_initial_sync(user))
    assert run.status == "completed", run.error_message
    user.refresh_from_db()
    return user


def poll(user) -> None:
    sync.run_inline([sync.Step("poll", user.pk)])
    user.refresh_from_db()


def gmail_calls(emulator) -> dict[str, int]:
    return {k: v for k, v in emulator.stats()["by_method"].items() if k.startswith("gmail.")}


class TestHistoryRunsAhead:
    @pytest.fixture
    def emulator_config(self):
        # Records show 3 s after they are made: each first read below must come within
        # 3 s of the insert it must not see yet (1 s was tight on a slow machine). The
        # tests end the lag themselves rather than sleep it out.
        return EmulatorConfig(**QUICK, history_lag_s=3.0)

    def test_a_poll_that_sees_nothing_yet_does_not_skip_the_hidden_records(
        self, connected_mailbox, emulator
    ):
        user = mirror(connected_mailbox, 40)
        stored = user.gmail_history_id
        added = emulator.insert_message(user.email)
        poll(user)  # the record is not shown yet; the answer's historyId counts it
        assert not SyncProgress.objects.filter(user=user, sync_type="incremental").exists()
        assert user.gmail_history_id == stored  # (Gmail's answer id would skip it)
        assert int(user.history_candidate_id) > int(stored)
        emulator.config.history_lag_s = 0.0
        poll(user)
        assert EmailMessage.objects.filter(user=user, gmail_id=added).exists()
        assert_exact_mirror(user, emulator.snapshot(user.email))

    def test_a_run_stores_the_largest_record_applied(self, connected_mailbox, emulator):
        user = mirror(connected_mailbox, 40)
        early = emulator.insert_message(user.email)
        time.sleep(3.1)
        late = emulator.insert_message(user.email)  # hidden from the first run
        run = sync.run_until_finished(sync.start_incremental_sync(user))
        assert run.status == "completed", run.error_message
        user.refresh_from_db()
        assert EmailMessage.objects.filter(user=user, gmail_id=early).exists()
        assert user.gmail_history_id == run.end_history_id
        assert int(user.gmail_history_id) < int(emulator.snapshot(user.email)["historyId"])
        emulator.config.history_lag_s = 0.0
        sync.run_until_finished(sync.start_incremental_sync(user))
        assert EmailMessage.objects.filter(user=user, gmail_id=late).exists()
        assert_exact_mirror(user, emulator.snapshot(user.email))

    def test_a_candidate_settles_only_after_the_settle_time(self, user_factory, settings):
        from mailsync.sync.history_ids import settled_fields

        settings.MAILSYNC_HISTORY_SETTLE_SECONDS = 60
        now = timezone.now()
        user = user_factory(gmail_history_id="100")
        first = settled_fields(user, None, 120, now, now)
        assert first["gmail_history_id"] == "100"
        assert first["history_candidate_id"] == "120"
        User.objects.filter(pk=user.pk).update(**first)
        user.refresh_from_db()
        soon = settled_fields(user, None, 130, now + dt.timedelta(seconds=30), now)
        assert (soon["gmail_history_id"], soon["history_candidate_id"]) == ("100", "120")
        later = now + dt.timedelta(seconds=61)
        settled = settled_fields(user, None, 130, later, later)
        assert (settled["gmail_history_id"], settled["history_candidate_id"]) == ("120", "130")


class TestFreshHistoryIdsAnswer404:
    @pytest.fixture
    def emulator_config(self):
        # Long enough for a slow machine; the test ends the window itself.
        return EmulatorConfig(**QUICK, fresh_history_404_s=60.0)

    def test_resyncs_at_most_every_interval_and_keeps_polling(
        self, connected_mailbox, emulator, settings
    ):
        user = mirror(connected_mailbox, 40)
        emulator.insert_message(user.email)
        emulator.expire_history(user.email)
        poll(user)  # the first 404: the mailbox is re-listed
        incremental = SyncProgress.objects.filter(user=user, sync_type="incremental")
        assert incremental.get().fell_back_to_full
        assert_exact_mirror(user, emulator.snapshot(user.email))
        user.refresh_from_db()
        assert user.history_resynced_at is not None
        # The fresh id it took answers 404 for a while: no second re-listing, one call.
        emulator.insert_message(user.email)
        emulator.reset_stats()
        with CaptureQueriesContext(connection) as queries:
            poll(user)
        assert gmail_calls(emulator) == {"gmail.users.history.list": 1}
        writes = [
            q["sql"]
            for q in queries.captured_queries
            if q["sql"].startswith(("INSERT", "UPDATE", "DELETE"))
            and "quota" not in q["sql"].split("SET")[0]
        ]
        assert len(writes) == 1, writes  # the user's row, in place
        assert incremental.count() == 1
        note = mailbox_status(user)["stages"]["incremental"]["history_note"]
        assert note.startswith("Gmail's history is not ready yet; next full check at ")
        assert user.next_sync_at > timezone.now()
        assert user.sync_claimed_at is None
        # Polling goes on: once Gmail knows the id, history is applied as usual.
        emulator.config.fresh_history_404_s = 0.0
        poll(user)
        assert incremental.count() == 2
        assert not incremental.first().fell_back_to_full
        assert_exact_mirror(user, emulator.snapshot(user.email))
        assert user.history_note == ""

    def test_a_404_long_after_the_last_resync_resyncs(self, connected_mailbox, emulator):
        user = mirror(connected_mailbox, 40)
        User.objects.filter(pk=user.pk).update(
            history_resynced_at=timezone.now() - dt.timedelta(hours=4)
        )
        emulator.insert_message(user.email)
        emulator.expire_history(user.email)
        poll(user)
        run = SyncProgress.objects.get(user=user, sync_type="incremental")
        assert run.fell_back_to_full
        assert run.status == "completed"
        assert_exact_mirror(user, emulator.snapshot(user.email))


class TestUnknownLabelIds:
    @pytest.fixture
    def emulator_config(self):
        return EmulatorConfig(**QUICK, unknown_label_rate=0.05)

    def test_kept_marked_without_churn(self, connected_mailbox, emulator):
        user = mirror(connected_mailbox, 200)
        unlisted = Label.objects.filter(user=user, not_listed=True)
        assert unlisted.exists()
        rows = dict(unlisted.values_list("gmail_id", "pk"))
        links = MessageLabel.objects.filter(label__in=unlisted).count()
        assert links
        assert_exact_mirror(user, emulator.snapshot(user.email))
        # A label sync (labels.list) and an incremental run (labels.list) keep them.
        labels_run = sync.start_label_sync(user)
        sync.run_inline(sync.resume_steps(labels_run))
        emulator.insert_message(user.email)
        incremental = sync.run_until_finished(sync.start_incremental_sync(user))
        assert incremental.status == "completed", incremental.error_message
        assert dict(unlisted.values_list("gmail_id", "pk")) == rows
        assert MessageLabel.objects.filter(label__in=unlisted).count() == links
        assert_exact_mirror(user, emulator.snapshot(user.email))
        # No label sync was started for them (it ran once, by hand, above).
        assert SyncProgress.objects.filter(user=user, sync_type="labels").count() == 1
        names = [label["name"] for label in mailbox_status(user)["labels"]]
        assert sum(name.endswith(NOT_LISTED_MARK) for name in names) == len(rows)

    def test_a_label_gmail_no_longer_lists_and_nothing_carries_is_deleted(
        self, connected_mailbox, emulator
    ):
        user = mirror(connected_mailbox, 60)
        label_id = emulator.create_label(user.email, "Short-lived")
        message_id = next(iter(emulator.snapshot(user.email)["messages"]))
        emulator.modify_message(user.email, message_id, add=[label_id])
        sync.run_until_finished(sync.start_incremental_sync(user))
        assert Label.objects.filter(user=user, gmail_id=label_id, not_listed=False).exists()
        emulator.delete_label(user.email, label_id)
        sync.run_until_finished(sync.start_incremental_sync(user))
        sync.run_until_finished(sync.start_incremental_sync(user))
        assert not Label.objects.filter(user=user, gmail_id=label_id).exists()
        assert_exact_mirror(user, emulator.snapshot(user.email))

    def test_a_resync_goes_on_when_gmail_refuses_to_list_by_such_a_label(
        self, connected_mailbox, emulator
    ):
        user = mirror(connected_mailbox, 200)
        unlisted = set(
            Label.objects.filter(user=user, not_listed=True).values_list("gmail_id", flat=True)
        )
        check = sync.start_health_check(user)
        queue, refused = list(sync.resume_steps(check)), 0
        while queue:
            step = queue.pop(0)
            if step.stage == "rescan_label_page" and step.args[1] in unlisted:
                # Real Gmail may answer 400 to a listing by a label id it does not list.
                emulator.script_fault(
                    "^/gmail/v1/users/me/messages$", status=400, reason="invalidArgument"
                )
                refused += 1
            queue.extend(sync.run_step(step))
        check.refresh_from_db()
        assert refused
        assert check.status == "completed", check.error_message
        assert_exact_mirror(user, emulator.snapshot(user.email))


class TestChatsRefuseRaw:
    @pytest.fixture
    def emulator_config(self):
        return EmulatorConfig(**QUICK, chat_rate=0.1, chat_raw_refused=True)

    def test_chats_are_fetched_whole_once(self, connected_mailbox, emulator):
        user = mirror(connected_mailbox, 200)
        snapshot = emulator.snapshot(user.email)
        assert any("CHAT" in m["labelIds"] for m in snapshot["messages"].values())
        assert_exact_mirror(user, snapshot)
        assert set(emulator.stats()["fetches"].values()) == {1}
        chats = EmailMessage.objects.filter(user=user, labels__gmail_id="CHAT")
        assert chats.exists()
        assert not chats.filter(internal_date__isnull=True).exists()


class TestPerUserConcurrency:
    @pytest.fixture
    def emulator_config(self):
        return EmulatorConfig(quota_user_per_minute=600_000, concurrent_requests_per_user=25)

    def test_a_normal_run_sees_no_concurrency_refusal(self, connected_mailbox, emulator):
        emulator.config.latency_ms = 20  # parts are served side by side
        user = mirror(connected_mailbox, 300)
        assert_exact_mirror(user, emulator.snapshot(user.email))
        assert emulator.stats()["by_status"].get("429", 0) == 0


class TestLivePageTokens:
    @pytest.fixture
    def emulator_config(self):
        return EmulatorConfig(**QUICK, list_offset_page_tokens=True)

    def test_a_message_the_listing_skips_is_not_deleted(
        self, connected_mailbox, emulator, settings
    ):
        settings.MAILSYNC_LIST_TASK_SECONDS = 0  # one page per step: mail changes between
        user = mirror(connected_mailbox, 700)  # the whole mailbox lists in two pages
        client = gmail.GmailClient(user.pk)
        first = client.list_message_ids()
        skipped = client.list_message_ids(page_token=first.next_page_token).ids[0][0]
        resync = sync.start_initial_sync(user)
        queue = list(sync.resume_steps(resync))
        deleted = None
        while queue:
            queue.extend(sync.run_step(queue.pop(0)))
            resync.refresh_from_db()
            if deleted is None and resync.pages_listed == resync.inbox_pages + 1:
                # Mail leaves above the cut between two pages: the next page skips one.
                deleted = first.ids[0][0]
                emulator.delete_message(user.email, deleted)
        resync.refresh_from_db()
        assert resync.status == "completed", resync.error_message
        assert deleted is not None
        assert EmailMessage.objects.filter(user=user, gmail_id=skipped).exists()
        emulator.reset_stats()
        sync.run_until_finished(sync.start_incremental_sync(user))  # the deletion's history
        assert_exact_mirror(user, emulator.snapshot(user.email))
        assert emulator.stats()["fetches"] == {}  # the skipped one was kept, not lost
