from django.apps import AppConfig


class MailsyncConfig(AppConfig):
    name = "mailsync"
    verbose_name = "Gmail mirror"

    def ready(self) -> None:
        from django_q.signals import post_execute, pre_execute

        from .health import beat_after_task

        pre_execute.connect(forget_logged_queries, dispatch_uid="mailsync.forget_logged_queries")
        post_execute.connect(beat_after_task, dispatch_uid="mailsync.heartbeat")


def forget_logged_queries(sender, **kwargs) -> None:
    """With DEBUG on, Django keeps every SQL statement of a connection (message bodies
    included) until a request ends; a worker has no requests, so its memory would
    grow with the mailbox. Forget them before each task."""
    from django.db import reset_queries

    reset_queries()
