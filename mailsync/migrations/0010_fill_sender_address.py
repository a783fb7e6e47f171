"""Fill sender_address for messages stored before it existed, in chunks (each its own
transaction, so a large mirror is never locked long and an interrupted run resumes)."""

from django.db import migrations, transaction

CHUNK = 5000


def fill(apps, schema_editor):
    from mailsync.parsing import address_of

    EmailMessage = apps.get_model("mailsync", "EmailMessage")
    todo = EmailMessage.objects.filter(sender_address="").exclude(sender="")
    last_pk = 0
    while True:
        rows = list(todo.filter(pk__gt=last_pk).order_by("pk").values_list("pk", "sender")[:CHUNK])
        if not rows:
            return
        with transaction.atomic():
            for pk, sender in rows:
                address = address_of(sender)
                if address:
                    EmailMessage.objects.filter(pk=pk).update(sender_address=address)
        last_pk = rows[-1][0]


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("mailsync", "0009_message_search_fields"),
    ]

    operations = [migrations.RunPython(fill, migrations.RunPython.noop, elidable=True)]
