"""Fixtures: an emulator serving a small generated mailbox and a real Gmail client for it.

Every JSON answer the emulator gives during the session is collected (config
record_responses) so test_zz_conformance can check them against the discovery schemas.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import google.oauth2.credentials
import pytest
from googleapiclient.discovery import build
from googleapiclient.http import BatchHttpRequest

from gmail_emulator import Emulator, EmulatorConfig

ALICE = "alice@example.com"
RECORDED: list[tuple[str, Any]] = []


def make_service(base_url: str, token: str) -> Any:
    creds = google.oauth2.credentials.Credentials(token)
    return build(
        "gmail",
        "v1",
        credentials=creds,
        client_options={"api_endpoint": base_url},
        cache_discovery=False,
        static_discovery=True,
    )


def raw_batch(
    base_url: str,
    targets: list[str],
    token: str | None = None,
    path: str = "batch/gmail/v1",
    content_ids: list[str] | None = None,
) -> str:
    """POST GET `targets` as one hand-written multipart batch; the answer's text. For what the
    client library will not send (a format outside discovery's enum, odd Content-IDs)."""
    ids = content_ids or [f"a+{i}" for i in range(len(targets))]
    parts = [
        f"--XX\r\nContent-Type: application/http\r\nContent-ID: <{cid}>\r\n\r\n"
        f"GET {target} HTTP/1.1\r\n\r\n\r\n"
        for cid, target in zip(ids, targets, strict=True)
    ]
    headers = {"Content-Type": "multipart/mixed; boundary=XX"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = ("".join(parts) + "--XX--\r\n").encode()
    req = urllib.request.Request(base_url + path, data=body, method="POST", headers=headers)
    with urllib.request.urlopen(req) as resp:
        return resp.read().decode()


@pytest.fixture
def config() -> EmulatorConfig:
    return EmulatorConfig(seed=7, empty_history_page_rate=0.0, record_responses=True)


@pytest.fixture
def emu(config: EmulatorConfig) -> Iterator[Emulator]:
    emulator = Emulator(config)
    emulator.add_mailbox(ALICE, count=300)
    yield emulator
    RECORDED.extend(emulator.responses)


@pytest.fixture
def base_url(emu: Emulator) -> Iterator[str]:
    with emu.serve() as url:
        yield url


@pytest.fixture
def gmail(emu: Emulator, base_url: str) -> Any:
    return make_service(base_url, emu.mailbox(ALICE).access_token)


@pytest.fixture
def run_batch(gmail: Any, base_url: str) -> Callable[[list[Any]], dict[str, tuple[Any, Any]]]:
    """Execute requests as one batch; returns {request id: (response, exception)}."""

    def run(requests: list[Any]) -> dict[str, tuple[Any, Any]]:
        results: dict[str, tuple[Any, Any]] = {}
        batch = BatchHttpRequest(
            batch_uri=base_url + "batch/gmail/v1",
            callback=lambda rid, resp, exc: results.__setitem__(rid, (resp, exc)),
        )
        for request in requests:
            batch.add(request)
        batch.execute(http=gmail._http)
        return results

    return run
