"""Count each existing mailbox once; from now on the sync keeps the totals."""

from django.db import migrations
from django.db.models import Count, Q


def fill(apps, schema_editor):
    User = apps.get_model("accounts", "User")
    EmailMessage = apps.get_model("mailsync", "EmailMessage")
    Label = apps.get_model("mailsync", "Label")
    MailboxCounts = apps.get_model("mailsync", "MailboxCounts")
    user_ids = list(User.objects.values_list("pk", flat=True))
    for start in range(0, len(user_ids), 500):
        rows = []
        for user_id in user_ids[start : start + 500]:
            found = EmailMessage.objects.filter(user_id=user_id).aggregate(
                messages=Count("pk"),
                fetched=Count("pk", filter=Q(internal_date__isnull=False)),
            )
            rows.append(
                MailboxCounts(
                    user_id=user_id,
                    messages=found["messages"],
                    fetched=found["fetched"],
                    labels=Label.objects.filter(user_id=user_id).count(),
                )
            )
        MailboxCounts.objects.bulk_create(rows, ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [("mailsync", "0003_messages_unavailable_runs_retry_counts")]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop)]
