"""RFC 9457 problem details for every error a client can cause; never a bare 500."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

import orjson
from aiohttp import web

log = logging.getLogger("meridian.http")

PROBLEM_TYPE_BASE = "https://meridian.invalid/problems/"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Problem(web.HTTPException):
    """An HTTP error answered as application/problem+json."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        problem: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status
        super().__init__(headers=headers)
        body = {
            "type": PROBLEM_TYPE_BASE + (problem or title.lower().replace(" ", "-")),
            "title": title,
            "status": status,
            "detail": detail,
        }
        self.body = orjson.dumps(body)
        self.content_type = "application/problem+json"


def problem_from_http_error(request: web.Request, exc: web.HTTPException) -> Problem:
    """aiohttp's own errors (404 route, 405, 413 body) in the same shape."""
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        detail = f"{exc.method} is not allowed on {request.path}; allowed: {allowed}"
    elif isinstance(exc, web.HTTPNotFound):
        detail = f"nothing is served at {request.path}"
    elif exc.text and not exc.text.startswith(f"{exc.status}:"):
        detail = exc.text
    else:
        detail = exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
    return Problem(exc.status, exc.reason, detail or exc.reason, headers=headers)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except Problem:
        raise
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        raise problem_from_http_error(request, exc) from None
    except Exception:
        log.exception("unexpected error answering %s %s", request.method, request.path)
        raise Problem(
            500, "Internal Server Error", "the server failed; it has been logged"
        ) from None
