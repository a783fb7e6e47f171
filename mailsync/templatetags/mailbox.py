"""Template filters of the mailbox pages."""

from __future__ import annotations

import datetime as dt

from django import template
from django.utils import timezone

register = template.Library()


@register.filter
def short_date(value: dt.datetime | None) -> str:
    """A list row's date, as a mail client shows it: "14:05" today, "Mar 5" this year,
    "2019-03-05" before."""
    if value is None:
        return ""
    local = timezone.localtime(value)
    today = timezone.localdate()
    if local.date() == today:
        return local.strftime("%H:%M")
    if local.year == today.year:
        return f"{local:%b} {local.day}"
    return local.strftime("%Y-%m-%d")
