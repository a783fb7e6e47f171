"""Google's OAuth 2.0 endpoints: consent page, authorization codes, tokens, userinfo.

Enough of accounts.google.com/oauth2.googleapis.com for django-allauth and google-auth:
codes are single use, refresh tokens can be revoked (then `invalid_grant`), access
tokens expire after `token_lifetime_s`, and the id_token is an HS256 JWT signed with
the client secret (allauth checks iss/aud/exp, not the signature, for tokens it fetched).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from .errors import auth_error

Response = tuple[int, dict[str, str], bytes]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def make_jwt(claims: dict[str, Any], secret: str) -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "emulator"}).encode())
    body = _b64(json.dumps(claims).encode())
    signing_input = f"{header}.{body}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(sig)}"


def sub_of(email: str) -> str:
    """A stable 21-digit numeric subject per mailbox, like Google's."""
    return str(int(hashlib.sha256(email.lower().encode()).hexdigest(), 16) % 10**21).rjust(21, "1")


@dataclass
class Grant:
    email: str
    scope: str
    revoked: bool = False
    issued: float = field(default_factory=time.time)


@dataclass
class Code:
    email: str
    scope: str
    redirect_uri: str
    client_id: str
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None
    expires: float


@dataclass
class TokenStore:
    """Access tokens, refresh tokens and authorization codes of one emulator."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    access: dict[str, tuple[str, float, str]] = field(default_factory=dict)  # tok->(email,exp,refresh)
    refresh: dict[str, Grant] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)

    def issue_access(self, email: str, refresh_token: str, lifetime_s: float) -> str:
        token = "ya29.emu-" + secrets.token_urlsafe(24)
        with self.lock:
            self.access[token] = (email, time.time() + lifetime_s, refresh_token)
        return token

    def issue_refresh(self, email: str, scope: str) -> str:
        token = "1//emu-" + secrets.token_urlsafe(24)
        with self.lock:
            self.refresh[token] = Grant(email, scope)
        return token

    def check(self, token: str | None) -> str:
        """The mailbox an access token belongs to; 401 if unknown, expired or revoked."""
        if not token:
            raise auth_error()
        with self.lock:
            entry = self.access.get(token)
            if entry is None or entry[1] < time.time():
                raise auth_error()
            grant = self.refresh.get(entry[2])
            if grant is not None and grant.revoked:
                raise auth_error()
            return entry[0]

    def revoke(self, refresh_token: str) -> bool:
        with self.lock:
            grant = self.refresh.get(refresh_token)
            if grant is None:
                return False
            grant.revoked = True
            for tok in [t for t, e in self.access.items() if e[2] == refresh_token]:
                del self.access[tok]
            return True

    def revoke_any(self, token: str) -> bool:
        """Google's revoke endpoint accepts an access or a refresh token."""
        with self.lock:
            entry = self.access.get(token)
        return self.revoke(entry[2] if entry else token)


def _json(status: int, obj: dict[str, Any], extra: dict[str, str] | None = None) -> Response:
    headers = {"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"}
    headers.update(extra or {})
    return status, headers, json.dumps(obj).encode()


def _oauth_error(status: int, error: str, description: str) -> Response:
    return _json(status, {"error": error, "error_description": description})


def _html(status: int, body: str) -> Response:
    return status, {"Content-Type": "text/html; charset=utf-8"}, body.encode()


class OAuthServer:
    """The OAuth endpoints; `emu` supplies config, mailboxes and the client credentials."""

    def __init__(self, emu: Any) -> None:
        self.emu = emu
        self.tokens = TokenStore()

    # ---- consent ------------------------------------------------------------------
    def authorize(self, params: dict[str, list[str]], base_url: str) -> Response:
        p = {k: v[0] for k, v in params.items() if v}
        if p.get("client_id") != self.emu.client_id:
            return _html(400, "<h1>Error 401: invalid_client</h1><p>The OAuth client was not found.</p>")
        redirect_uri = p.get("redirect_uri", "")
        if not redirect_uri.startswith(("http://", "https://")):
            return _html(400, "<h1>Error 400: redirect_uri_mismatch</h1>")
        chosen = p.get("login_hint") if p.get("emulator_choose") else None
        if chosen:
            return self._grant_code(p, chosen)
        items = []
        for email in self.emu.mailbox_emails():
            query = dict(p, emulator_choose="1", login_hint=email)
            href = "?" + urllib.parse.urlencode(query)
            esc = html.escape(email)
            items.append(f'<li><a class="account" data-email="{esc}" href="{html.escape(href)}">'
                         f"{esc}</a></li>")
        scope = html.escape(p.get("scope", ""))
        page = ("<!doctype html><html><head><meta charset='utf-8'><title>Sign in - Google "
                "Accounts (emulator)</title></head><body><h1>Choose an account</h1>"
                f"<p>to continue to the application. Requested scope: <code>{scope}</code></p>"
                f"<ul>{''.join(items)}</ul></body></html>")
        return _html(200, page)

    def _grant_code(self, p: dict[str, str], email: str) -> Response:
        if email not in self.emu.mailbox_emails():
            return _html(400, "<h1>Unknown account</h1>")
        code = "4/emu-" + secrets.token_urlsafe(24)
        with self.tokens.lock:
            self.tokens.codes[code] = Code(
                email, p.get("scope", ""), p.get("redirect_uri", ""), p["client_id"],
                p.get("code_challenge"), p.get("code_challenge_method"), p.get("nonce"),
                time.time() + 600)
        query = {"code": code, "scope": p.get("scope", "")}
        if "state" in p:
            query["state"] = p["state"]
        sep = "&" if "?" in p["redirect_uri"] else "?"
        location = p["redirect_uri"] + sep + urllib.parse.urlencode(query)
        return 302, {"Location": location, "Content-Length": "0"}, b""

    # ---- token --------------------------------------------------------------------
    def token(self, headers: dict[str, str], body: bytes) -> Response:
        form = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode("utf-8", "replace")).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        auth = headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:].strip()).decode()
                cid, _, secret = decoded.partition(":")
                client_id = urllib.parse.unquote_plus(cid)
                client_secret = urllib.parse.unquote_plus(secret)
            except (ValueError, UnicodeDecodeError):
                return _oauth_error(401, "invalid_client", "Malformed basic auth.")
        if client_id != self.emu.client_id or client_secret != self.emu.client_secret:
            return _oauth_error(401, "invalid_client", "The OAuth client was not found.")
        grant_type = form.get("grant_type")
        lifetime = self.emu.config.token_lifetime_s
        if grant_type == "authorization_code":
            with self.tokens.lock:
                code = self.tokens.codes.pop(form.get("code", ""), None)
            if code is None or code.expires < time.time():
                return _oauth_error(400, "invalid_grant", "Malformed auth code.")
            if form.get("redirect_uri") and form["redirect_uri"] != code.redirect_uri:
                return _oauth_error(400, "redirect_uri_mismatch", "Bad Request")
            if code.code_challenge:
                verifier = form.get("code_verifier", "")
                if code.code_challenge_method == "S256":
                    expected = _b64(hashlib.sha256(verifier.encode()).digest())
                else:
                    expected = verifier
                if expected != code.code_challenge:
                    return _oauth_error(400, "invalid_grant", "Invalid code verifier.")
            refresh = self.tokens.issue_refresh(code.email, code.scope)
            access = self.tokens.issue_access(code.email, refresh, lifetime)
            return _json(200, {
                "access_token": access, "expires_in": int(lifetime), "refresh_token": refresh,
                "scope": code.scope, "token_type": "Bearer",
                "id_token": self.id_token(code.email, access, code.nonce),
            })
        if grant_type == "refresh_token":
            rt = form.get("refresh_token", "")
            with self.tokens.lock:
                grant = self.tokens.refresh.get(rt)
            # Quirk: refresh tokens expire by age (7 days for apps in testing, Google's docs).
            max_age = self.emu.config.refresh_token_max_age_s
            expired = grant is not None and max_age is not None and \
                time.time() - grant.issued > max_age
            if grant is None or grant.revoked or expired:
                return _oauth_error(400, "invalid_grant", "Token has been expired or revoked.")
            access = self.tokens.issue_access(grant.email, rt, lifetime)
            return _json(200, {"access_token": access, "expires_in": int(lifetime),
                               "scope": grant.scope, "token_type": "Bearer",
                               "id_token": self.id_token(grant.email, access, None)})
        return _oauth_error(400, "unsupported_grant_type", f"Invalid grant_type: {grant_type}")

    def id_token(self, email: str, access_token: str, nonce: str | None) -> str:
        now = int(time.time())
        name = email.split("@")[0].replace(".", " ").title()
        claims: dict[str, Any] = {
            "iss": "https://accounts.google.com", "azp": self.emu.client_id,
            "aud": self.emu.client_id, "sub": sub_of(email), "email": email,
            "email_verified": True,
            "at_hash": _b64(hashlib.sha256(access_token.encode()).digest()[:16]),
            "name": name, "given_name": name.split(" ")[0],
            "family_name": name.split(" ")[-1] if " " in name else "",
            "iat": now, "exp": now + int(self.emu.config.token_lifetime_s),
        }
        if nonce:
            claims["nonce"] = nonce
        return make_jwt(claims, self.emu.client_secret)

    # ---- userinfo / revoke -----------------------------------------------------------
    def userinfo(self, headers: dict[str, str], params: dict[str, list[str]]) -> Response:
        auth = headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        token = token or (params.get("access_token") or [None])[0]
        try:
            email = self.tokens.check(token)
        except Exception as exc:
            return 401, {"Content-Type": "application/json"}, exc.body_bytes()  # type: ignore[attr-defined]
        name = email.split("@")[0].replace(".", " ").title()
        sub = sub_of(email)
        return _json(200, {
            "id": sub, "sub": sub, "email": email, "verified_email": True,
            "email_verified": True, "name": name, "given_name": name.split(" ")[0],
            "family_name": name.split(" ")[-1] if " " in name else "",
            "picture": "https://lh3.googleusercontent.com/a/emulator=s96-c",
        })

    def revoke(self, params: dict[str, list[str]], body: bytes) -> Response:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or params.get("token") or [""])[0]
        if self.tokens.revoke_any(token):
            return _json(200, {})
        return _oauth_error(400, "invalid_token", "Token expired or revoked")
