"""Message bodies stored compressed: add compressed columns, fill them in chunks,
drop the text columns, take their names."""

from django.db import migrations

import mailsync.fields

CHUNK = 1000


def compress_bodies(apps, schema_editor):
    EmailMessage = apps.get_model("mailsync", "EmailMessage")
    last = 0
    while True:
        rows = list(
            EmailMessage.objects.filter(pk__gt=last)
            .order_by("pk")
            .only("pk", "body_text", "body_html")[:CHUNK]
        )
        if not rows:
            return
        for row in rows:
            row.body_text_z = row.body_text
            row.body_html_z = row.body_html
        EmailMessage.objects.bulk_update(rows, ["body_text_z", "body_html_z"])
        last = rows[-1].pk


class Migration(migrations.Migration):
    dependencies = [("mailsync", "0006_lease_holders")]

    operations = [
        migrations.AddField(
            model_name="emailmessage",
            name="body_text_z",
            field=mailsync.fields.CompressedTextField(),
        ),
        migrations.AddField(
            model_name="emailmessage",
            name="body_html_z",
            field=mailsync.fields.CompressedTextField(),
        ),
        migrations.RunPython(compress_bodies, migrations.RunPython.noop),
        migrations.RemoveField(model_name="emailmessage", name="body_text"),
        migrations.RemoveField(model_name="emailmessage", name="body_html"),
        migrations.RenameField(model_name="emailmessage", old_name="body_text_z", new_name="body_text"),
        migrations.RenameField(model_name="emailmessage", old_name="body_html_z", new_name="body_html"),
    ]
