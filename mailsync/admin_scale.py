"""What keeps a changelist fast with 100k users and millions of rows.

- `CappedCountPaginator`: counts at most CAP rows (COUNT over a LIMIT subquery, a
  bounded index scan), and says "more than CAP" beyond; pages go as far as the cap.
- `UserFilter`: the user filter as an autocomplete box (dalf, on Django's own
  autocomplete view) instead of a sidebar listing every user.
- `BoundedChangeList`: no full-result count, no facet counts, no click-to-sort
  columns (a sort on an unindexed column is a sort of the whole table).
"""

from __future__ import annotations

from functools import cached_property

from dalf.admin import DALFModelAdmin, DALFRelatedFieldAjax
from django.contrib.admin import ShowFacets
from django.core.paginator import Paginator

COUNT_CAP = 10_000
# A search's condition is evaluated row by row while counting (full text: one
# to_tsvector per row), so a searched list counts less far.
SEARCH_COUNT_CAP = 1_000


class CappedCountPaginator(Paginator):
    def __init__(self, *args, cap: int = COUNT_CAP, **kwargs):
        super().__init__(*args, **kwargs)
        self.cap = cap

    @cached_property
    def count(self) -> int:
        return self.object_list.values("pk")[: self.cap + 1].count()

    @property
    def capped(self) -> bool:
        """True when there are more rows than were counted."""
        return self.count > self.cap


class UserFilter(DALFRelatedFieldAjax):
    """Filter by user, typed into an autocomplete box (searches UserAdmin's fields)."""


class BoundedChangelist:
    """A changelist whose cost does not grow with the table (mix into a ModelAdmin)."""

    paginator = CappedCountPaginator
    show_full_result_count = False
    show_facets = ShowFacets.NEVER
    sortable_by = ()
    list_per_page = 50

    def get_paginator(self, request, queryset, per_page, orphans=0, allow_empty_first_page=True):
        cap = SEARCH_COUNT_CAP if request.GET.get("q", "").strip() else COUNT_CAP
        return self.paginator(queryset, per_page, orphans, allow_empty_first_page, cap=cap)


class BoundedAdmin(BoundedChangelist, DALFModelAdmin):
    """A bounded changelist with the user filter as an autocomplete box."""


def chosen_user_id(request) -> str | None:
    """The user id a changelist is filtered by (UserFilter), if any."""
    value = request.GET.get("user__id__exact", "")
    return value if value.isdigit() else None


def user_filter(field: str = "user"):
    """list_filter entry for a foreign key to the user."""
    return (field, UserFilter)
