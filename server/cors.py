"""CORS for browser WHIP/WHEP clients, preflight included (RFC 9725 section 4.2)."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import CIMultiDict

from server.problems import Handler

ALLOWED_METHODS = "GET, HEAD, POST, PATCH, DELETE, OPTIONS"
ALLOWED_HEADERS = "Authorization, Content-Type, If-Match"
EXPOSED_HEADERS = "Location, ETag, Link, Accept-Post, Accept-Patch, Retry-After, WWW-Authenticate"


def cors_middleware(origins: tuple[str, ...]) -> Middleware:
    any_origin = "*" in origins

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _add_headers(exc.headers, origin, any_origin, origins)
            raise
        _add_headers(response.headers, origin, any_origin, origins)
        return response

    return middleware


def _add_headers(
    headers: CIMultiDict[str], origin: str | None, any_origin: bool, origins: tuple[str, ...]
) -> None:
    if origin is None or not (any_origin or origin in origins):
        return
    headers["Access-Control-Allow-Origin"] = "*" if any_origin else origin
    if not any_origin:
        headers["Vary"] = "Origin"
    headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
    headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    headers["Access-Control-Max-Age"] = "600"
