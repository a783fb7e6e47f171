"""OAuth endpoints: consent page, code exchange, refresh, revoke, id_token, userinfo."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

from .conftest import ALICE

REDIRECT = "http://127.0.0.1:9/callback"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _post_form(url, data, headers=None):
    req = urllib.request.Request(
        url, data=urllib.parse.urlencode(data).encode(), method="POST", headers=headers or {}
    )
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _consent(base_url, emu, **extra):
    params = {
        "client_id": emu.client_id,
        "redirect_uri": REDIRECT,
        "response_type": "code",
        "scope": "openid email https://www.googleapis.com/auth/gmail.readonly",
        "state": "xyz",
        "access_type": "offline",
        "prompt": "consent",
        **extra,
    }
    with urllib.request.urlopen(
        base_url + "o/oauth2/v2/auth?" + urllib.parse.urlencode(params)
    ) as r:
        page = r.read().decode()
    match = re.search(r'data-email="alice@example.com" href="([^"]+)"', page)
    assert match, page
    href = match[1].replace("&amp;", "&")
    opener = urllib.request.build_opener(_NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(base_url + "o/oauth2/v2/auth" + href)
    assert err.value.code == 302
    location = urllib.parse.urlsplit(err.value.headers["Location"])
    query = urllib.parse.parse_qs(location.query)
    assert location.path == "/callback"
    assert query["state"] == ["xyz"]
    return query["code"][0]


def _exchange(base_url, emu, code, **extra):
    return _post_form(
        base_url + "token",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
            **extra,
        },
    )


def _claims(jwt):
    body = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_consent_page_lists_mailboxes_and_code_flow(base_url, emu):
    code = _consent(base_url, emu)
    status, tokens = _exchange(base_url, emu, code)
    assert status == 200
    assert tokens["token_type"] == "Bearer"
    assert tokens["scope"].startswith("openid email")
    assert {"access_token", "refresh_token", "expires_in", "id_token"} <= set(tokens)
    status, again = _exchange(base_url, emu, code)  # codes are single use
    assert status == 400
    assert again["error"] == "invalid_grant"


def test_id_token_claims_and_signature(base_url, emu):
    _, tokens = _exchange(base_url, emu, _consent(base_url, emu))
    claims = _claims(tokens["id_token"])
    assert claims["iss"] == "https://accounts.google.com"
    assert claims["aud"] == emu.client_id
    assert claims["email"] == ALICE
    assert claims["email_verified"] is True
    assert claims["exp"] > time.time() > claims["iat"] - 5
    assert claims["name"]
    assert claims["sub"].isdigit()
    header, body, sig = tokens["id_token"].split(".")
    expected = hmac.new(
        emu.client_secret.encode(), f"{header}.{body}".encode(), hashlib.sha256
    ).digest()
    assert base64.urlsafe_b64encode(expected).rstrip(b"=").decode() == sig
    _, second = _exchange(base_url, emu, _consent(base_url, emu))
    assert _claims(second["id_token"])["sub"] == claims["sub"]


def test_pkce(base_url, emu):
    verifier = "v" * 50
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    code = _consent(base_url, emu, code_challenge=challenge, code_challenge_method="S256")
    assert _exchange(base_url, emu, code, code_verifier="wrong")[0] == 400
    code = _consent(base_url, emu, code_challenge=challenge, code_challenge_method="S256")
    assert _exchange(base_url, emu, code, code_verifier=verifier)[0] == 200


def test_refresh_basic_auth_and_revoke(base_url, emu):
    _, tokens = _exchange(base_url, emu, _consent(base_url, emu))
    basic = base64.b64encode(f"{emu.client_id}:{emu.client_secret}".encode()).decode()
    status, fresh = _post_form(
        base_url + "token",
        {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        {"Authorization": f"Basic {basic}"},
    )
    assert status == 200
    assert fresh["access_token"] != tokens["access_token"]
    assert "refresh_token" not in fresh
    assert emu.revoke_refresh_token(tokens["refresh_token"])
    status, err = _post_form(
        base_url + "o/oauth2/token",
        {
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": emu.client_id,
            "client_secret": emu.client_secret,
        },
    )
    assert status == 400
    assert err["error"] == "invalid_grant"
    assert err["error_description"]
    req = urllib.request.Request(
        base_url + "gmail/v1/users/me/profile",
        headers={"Authorization": f"Bearer {fresh['access_token']}"},
    )
    with pytest.raises(urllib.error.HTTPError) as http_err:
        urllib.request.urlopen(req)
    assert http_err.value.code == 401


def test_wrong_client_secret(base_url, emu):
    status, body = _post_form(
        base_url + "token",
        {
            "grant_type": "refresh_token",
            "refresh_token": emu.mailbox(ALICE).refresh_token,
            "client_id": emu.client_id,
            "client_secret": "nope",
        },
    )
    assert status == 401
    assert body["error"] == "invalid_client"


def test_wrong_client_id_on_consent(base_url):
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(base_url + "o/oauth2/auth?client_id=x&redirect_uri=" + REDIRECT)
    assert err.value.code == 400


@pytest.mark.parametrize(
    "path", ["v1/userinfo", "oauth2/v1/userinfo", "oauth2/v2/userinfo", "oauth2/v3/userinfo"]
)
def test_userinfo(base_url, emu, path):
    req = urllib.request.Request(
        base_url + path, headers={"Authorization": f"Bearer {emu.mailbox(ALICE).access_token}"}
    )
    with urllib.request.urlopen(req) as resp:
        info = json.load(resp)
    assert info["email"] == ALICE
    assert info["id"] == info["sub"]
    assert set(info) == {
        "id",
        "sub",
        "email",
        "verified_email",
        "email_verified",
        "name",
        "given_name",
        "family_name",
        "picture",
    }
