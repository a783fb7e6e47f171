"""Scripted faults (POST _emulator/v1/faults) apply to the OAuth endpoints too."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from .conftest import ALICE


def _post(url: str, data: dict, json_body: bool = False) -> tuple[int, dict]:
    body = json.dumps(data).encode() if json_body else urllib.parse.urlencode(data).encode()
    headers = {"Content-Type": "application/json"} if json_body else {}
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _script(base_url: str, path_regex: str, count: int, status: int = 503) -> None:
    fault = {"path_regex": path_regex, "count": count, "status": status}
    assert _post(base_url + "_emulator/v1/faults", fault, json_body=True)[0] == 200


def test_token_endpoint_answers_the_scripted_503s_then_recovers(base_url, emu):
    refresh = emu.mailbox(ALICE).refresh_token
    grant = {
        "grant_type": "refresh_token",
        "refresh_token": refresh,
        "client_id": emu.client_id,
        "client_secret": emu.client_secret,
    }
    _script(base_url, "^/token$", count=3)

    answers = [_post(base_url + "token", grant)[0] for _ in range(4)]

    assert answers == [503, 503, 503, 200]


@pytest.mark.parametrize(
    ("path", "method"),
    [("revoke", "POST"), ("oauth2/v2/userinfo", "GET"), ("o/oauth2/v2/auth", "GET")],
)
def test_other_oauth_endpoints_take_faults_too(base_url, emu, path, method):
    _script(base_url, "^/" + path.replace("/", "\\/") + "$", count=1, status=500)
    request = urllib.request.Request(
        base_url + path, method=method, data=b"" if method == "POST" else None
    )

    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=10)

    assert answer.value.code == 500
