"""Viewer tokens: signed, expiring, bound to one studio (JWT, RFC 7519, signed with HS256).

Watching is free by default. A studio with `require_viewer_token = true` admits a WHEP
offer only with `Authorization: Bearer <token>`, where the token is a JWT signed with
HMAC-SHA256 under `viewer_tokens.secret` whose claims name the studio and an expiry:

    header  {"alg": "HS256", "typ": "JWT"}
    claims  {"studio": "berlin", "exp": 1767225600}      ("iat", "nbf" optional)

Any JWT library (or a ticketing system) can mint them with the shared secret; so can the
admin API (`POST /admin/viewer-tokens`). A token is checked when the session is set up;
a session already watching is not ended when its token expires. Expiry and not-before
allow `LEEWAY_SECONDS` of clock difference. Only the standard library is used: base64url,
HMAC-SHA256, and a constant-time comparison of the signature.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from typing import Any

import orjson
from aiohttp import web

from config.settings import StudioSettings
from server.problems import Problem
from server.state import SETTINGS

ALGORITHM = "HS256"
LEEWAY_SECONDS = 30.0
MAX_TOKEN_LENGTH = 4096
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")


class ViewerTokenError(ValueError):
    """The token cannot admit this viewer; the message says why (never the token)."""


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    if not _BASE64URL.fullmatch(text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, signing_input: str) -> bytes:
    return hmac.new(secret.encode(), signing_input.encode("ascii"), hashlib.sha256).digest()


def issue(secret: str, studio: str, ttl: float, *, now: float | None = None) -> str:
    """A token for watching `studio`, valid for `ttl` seconds from `now` (Unix time)."""
    issued = time.time() if now is None else now
    header = _encode(orjson.dumps({"alg": ALGORITHM, "typ": "JWT"}))
    claims = _encode(orjson.dumps({"studio": studio, "iat": int(issued), "exp": int(issued + ttl)}))
    signing_input = f"{header}.{claims}"
    return f"{signing_input}.{_encode(_sign(secret, signing_input))}"


def _number(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ViewerTokenError(f"the token's {name!r} claim is not a number")
    return float(value)


def verify(secret: str, token: str, studio: str, *, now: float | None = None) -> dict[str, Any]:
    """The token's claims if it admits a viewer of `studio` now; else ViewerTokenError."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise ViewerTokenError(f"the token is longer than {MAX_TOKEN_LENGTH} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise ViewerTokenError("the token is not a JWT (header.claims.signature)")
    try:
        header = orjson.loads(_decode(parts[0]))
        _decode(parts[1])  # well-formed before it is signed (only ASCII can be)
        signature = _decode(parts[2])
    except (ValueError, binascii.Error):
        raise ViewerTokenError("the token is not a well-formed JWT") from None
    if not isinstance(header, dict) or header.get("alg") != ALGORITHM:
        raise ViewerTokenError(f"the token must be signed with {ALGORITHM}")
    if not hmac.compare_digest(signature, _sign(secret, f"{parts[0]}.{parts[1]}")):
        raise ViewerTokenError("the token's signature is not valid")
    try:
        claims = orjson.loads(_decode(parts[1]))
    except (ValueError, binascii.Error):
        raise ViewerTokenError("the token's claims are not a JSON object") from None
    if not isinstance(claims, dict):
        raise ViewerTokenError("the token's claims are not a JSON object")
    at = time.time() if now is None else now
    expires = _number(claims, "exp")
    if expires is None:
        raise ViewerTokenError("the token has no expiry ('exp' claim)")
    if at > expires + LEEWAY_SECONDS:
        raise ViewerTokenError("the token has expired")
    not_before = _number(claims, "nbf")
    if not_before is not None and at + LEEWAY_SECONDS < not_before:
        raise ViewerTokenError("the token is not valid yet")
    if claims.get("studio") != studio:
        raise ViewerTokenError(f"the token is not for studio {studio!r}")
    return claims


def require_viewer_token(request: web.Request, studio: StudioSettings) -> None:
    """A WHEP offer for a studio that requires viewer tokens must bring a valid one."""
    if not studio.require_viewer_token:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Problem(
            401,
            "Unauthorized",
            f"watching {studio.id!r} needs a viewer token (Authorization: Bearer)",
            problem="viewer-token-required",
            headers={"WWW-Authenticate": 'Bearer realm="meridian"'},
        )
    secret = request.app[SETTINGS].current.viewer_tokens.secret
    try:
        verify(secret, token, studio.id)
    except ViewerTokenError as exc:
        raise Problem(
            401,
            "Unauthorized",
            str(exc),
            problem="invalid-viewer-token",
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="meridian", error="invalid_token", error_description="{exc}"'
                )
            },
        ) from None
