"""Move the Google tokens out of allauth's plain-text SocialToken into the encrypted
GoogleToken, and record how existing accounts were created.

Existing accounts: one with a Google account was created (or is owned) by a Google
sign-in; a staff account without one by an operator; any other is "unknown", so a
Google sign-in never attaches to it.
"""

from django.db import migrations

CHUNK = 500


def _chunks(queryset):
    last = 0
    while True:
        rows = list(queryset.filter(pk__gt=last).order_by("pk")[:CHUNK])
        if not rows:
            return
        yield rows
        last = rows[-1].pk


def encrypt_tokens(apps, schema_editor):
    SocialToken = apps.get_model("socialaccount", "SocialToken")
    GoogleToken = apps.get_model("accounts", "GoogleToken")
    User = apps.get_model("accounts", "User")
    google_tokens = SocialToken.objects.filter(account__provider="google")
    for rows in _chunks(google_tokens):
        for row in rows:
            GoogleToken.objects.update_or_create(
                account_id=row.account_id,
                defaults={
                    "access_token": row.token,
                    "refresh_token": row.token_secret,
                    "expires_at": row.expires_at,
                },
            )
        SocialToken.objects.filter(pk__in=[row.pk for row in rows]).delete()
    User.objects.filter(socialaccount__provider="google").update(created_via="google")
    User.objects.filter(created_via="unknown", is_staff=True).update(created_via="operator")


def decrypt_tokens(apps, schema_editor):
    SocialToken = apps.get_model("socialaccount", "SocialToken")
    GoogleToken = apps.get_model("accounts", "GoogleToken")
    for rows in _chunks(GoogleToken.objects.all()):
        for row in rows:
            SocialToken.objects.update_or_create(
                account_id=row.account_id,
                app=None,
                defaults={
                    "token": row.access_token,
                    "token_secret": row.refresh_token,
                    "expires_at": row.expires_at,
                },
            )
        GoogleToken.objects.filter(pk__in=[row.pk for row in rows]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_google_token_and_account_lifecycle"),
        ("socialaccount", "0006_alter_socialaccount_extra_data"),
    ]

    operations = [migrations.RunPython(encrypt_tokens, decrypt_tokens)]
