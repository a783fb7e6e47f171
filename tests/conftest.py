"""Fixtures shared by the whole suite: small factories, as allauth's tests do."""

from __future__ import annotations

import itertools

import pytest

pytest_plugins = ["tests.gmail_fixtures"]

_counter = itertools.count(1)


@pytest.fixture
def user_factory(django_user_model):
    def make(email: str | None = None, **fields):
        n = next(_counter)
        email = email or f"user{n}@example.com"
        return django_user_model.objects.create_user(username=email, email=email, **fields)

    return make
