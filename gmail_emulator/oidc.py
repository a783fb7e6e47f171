"""Pub/Sub's OIDC tokens for push deliveries: RS256 JWTs signed with the emulator's own
key, and the matching certificates served like https://www.googleapis.com/oauth2/v1/certs
(`{"key id": "PEM X.509 certificate"}`).

The only module of the emulator that needs more than the standard library: RSA and
X.509 come from `cryptography` (in requirements.txt), imported here alone.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import time
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

ISSUER = "https://accounts.google.com"
TOKEN_LIFETIME_S = 3600  # Pub/Sub's tokens live an hour


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Signer:
    """One RSA key with its self-signed certificate; made on first use (~50 ms)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: rsa.RSAPrivateKey | None = None
        self._kid = ""
        self._pem = ""

    def _ensure(self) -> rsa.RSAPrivateKey:
        with self._lock:
            if self._key is None:
                key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
                name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gmail-emulator-oidc")])
                now = dt.datetime.now(dt.UTC)
                cert = (
                    x509.CertificateBuilder()
                    .subject_name(name)
                    .issuer_name(name)
                    .public_key(key.public_key())
                    .serial_number(x509.random_serial_number())
                    .not_valid_before(now - dt.timedelta(days=1))
                    .not_valid_after(now + dt.timedelta(days=365))
                    .sign(key, hashes.SHA256())
                )
                der = cert.public_bytes(serialization.Encoding.DER)
                self._kid = hashlib.sha1(der).hexdigest()  # noqa: S324 (an id, as Google's)
                self._pem = cert.public_bytes(serialization.Encoding.PEM).decode()
                self._key = key
            return self._key

    def certs(self) -> dict[str, str]:
        self._ensure()
        return {self._kid: self._pem}

    def sign(self, claims: dict[str, Any]) -> str:
        key = self._ensure()
        header = {"alg": "RS256", "kid": self._kid, "typ": "JWT"}
        signing_input = (
            _b64(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64(json.dumps(claims, separators=(",", ":")).encode())
        )
        signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64(signature)


def push_claims(audience: str, service_account: str, now: float | None = None) -> dict[str, Any]:
    """The claims Pub/Sub puts in a push request's token."""
    issued = int(now if now is not None else time.time())
    return {
        "iss": ISSUER,
        "aud": audience,
        "azp": "100000000000000000001",
        "email": service_account,
        "email_verified": True,
        "sub": "100000000000000000001",
        "iat": issued,
        "exp": issued + TOKEN_LIFETIME_S,
    }
