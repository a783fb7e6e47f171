"""Google's error shape, so the client's HttpError sees exactly what production sends."""

from __future__ import annotations

import json
from typing import Any

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}

DEFAULT_MESSAGES = {
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
    404: "Requested entity was not found.",
}


class ApiError(Exception):
    """An error answer of the Gmail API; raised anywhere below the HTTP layer."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, str] | None = None,
        status: str | None = None,
    ) -> None:
        self.code = code
        self.reason = reason
        self.message = message or DEFAULT_MESSAGES.get(code, reason)
        self.headers = headers or {}
        self.extra = extra or {}
        self.status = status or STATUS_NAMES.get(code, "UNKNOWN")
        super().__init__(f"{code} {reason}: {self.message}")

    def body(self) -> dict[str, Any]:
        item = {"message": self.message, "domain": "global", "reason": self.reason}
        item.update(self.extra)
        return {
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [item],
                "status": self.status,
            }
        }

    def body_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()


class ConnectionDrop(Exception):
    """A scripted network failure: the HTTP layer closes the connection without answering."""


def bad_request(message: str, reason: str = "invalidArgument") -> ApiError:
    return ApiError(400, reason, message)


def not_found(message: str = "Requested entity was not found.") -> ApiError:
    return ApiError(404, "notFound", message)


def auth_error() -> ApiError:
    return ApiError(
        401,
        "authError",
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential. "
        "See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        extra={"message": "Invalid Credentials", "location": "Authorization",
               "locationType": "header"},
    )


def backend_error(code: int = 503) -> ApiError:
    return ApiError(code, "backendError")
