"""The admin API, behind its own bearer token (`[admin]`: token, token_env or token_file).

    GET    /admin/sessions            every session: id, protocol, studio, country, state, age
    DELETE /admin/sessions/{session}  end a session now ("kicked"; its peer sees the closure)
    POST   /admin/reload              read the configuration again (as SIGHUP does)
    POST   /admin/viewer-tokens       mint a viewer token: {"studio": "berlin", "ttl": 3600}
    GET    /admin/memory              resident size, memory in use and kept by the allocators

Without an admin token configured, every /admin path answers 404 as if it did not exist.
Listings never carry addresses or tokens.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web

from config.loader import ConfigError
from config.settings import Settings
from relay.viewer import ViewerSession
from server import memory, viewer_tokens
from server.api import json_response
from server.problems import Problem
from server.reload import NothingToReload, reload_settings
from server.sessions import SessionResource
from server.state import SESSIONS, SETTINGS
from server.webrtc_http import same_token

DEFAULT_VIEWER_TOKEN_TTL = 3600.0
MAX_VIEWER_TOKEN_TTL = 7 * 24 * 3600.0


def require_admin(request: web.Request) -> None:
    token = request.app[SETTINGS].current.admin.token
    if not token:
        raise Problem(404, "Not Found", f"nothing is served at {request.path}")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise Problem(
            401,
            "Unauthorized",
            "the admin API needs its bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="meridian-admin"'},
        )
    if not same_token(given.strip(), token):
        raise Problem(
            401,
            "Unauthorized",
            "the token is not the admin token",
            headers={"WWW-Authenticate": 'Bearer realm="meridian-admin", error="invalid_token"'},
        )


def describe(resource: SessionResource, settings: Settings, now: float) -> dict[str, object]:
    session = resource.session
    if isinstance(session, ViewerSession):
        country: str | None = session.country
    else:  # a studio: where it is
        studio = settings.studio(resource.studio_id)
        country = studio.country if studio is not None else None
    if session.end_reason is not None:
        state = "ending"
    else:
        state = "connected" if session.connected else "connecting"
    return {
        "id": resource.id,
        "protocol": resource.protocol,
        "studio": resource.studio_id,
        "country": country,
        "state": state,
        "age_seconds": round(now - session.created_at, 1),
    }


async def list_sessions(request: web.Request) -> web.Response:
    require_admin(request)
    settings, now = request.app[SETTINGS].current, time.monotonic()
    sessions = [describe(r, settings, now) for r in request.app[SESSIONS].all()]
    return json_response({"sessions": sessions})


async def kick(request: web.Request) -> web.Response:
    require_admin(request)
    resource = request.app[SESSIONS].find(request.match_info["session"])
    if resource is None:
        raise Problem(404, "Not Found", "there is no such session (it may have ended)")
    resource.session.end("kicked")
    return json_response({"id": resource.id, "ended": "kicked"})


async def reload(request: web.Request) -> web.Response:
    require_admin(request)
    try:
        result = await reload_settings(request.app)
    except NothingToReload as exc:
        raise Problem(409, "Conflict", str(exc)) from None
    except ConfigError as exc:
        raise Problem(
            422,
            "Unprocessable Content",
            f"the configuration was not reloaded, the settings in force stay: {exc}",
            problem="invalid-configuration",
        ) from None
    return json_response(result.as_dict())


async def mint_viewer_token(request: web.Request) -> web.Response:
    require_admin(request)
    settings = request.app[SETTINGS].current
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise Problem(400, "Bad Request", "the body must be a JSON object") from None
    if not isinstance(body, dict) or not isinstance(body.get("studio"), str):
        raise Problem(400, "Bad Request", 'the body must be {"studio": "<id>", "ttl": <seconds>}')
    ttl = body.get("ttl", DEFAULT_VIEWER_TOKEN_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise Problem(400, "Bad Request", "ttl must be a number of seconds")
    if not 0 < ttl <= MAX_VIEWER_TOKEN_TTL:
        limit = f"{MAX_VIEWER_TOKEN_TTL:g}"
        raise Problem(400, "Bad Request", f"ttl must be above 0 and at most {limit} seconds")
    studio = settings.studio(body["studio"])
    if studio is None:
        raise Problem(404, "Not Found", f"there is no studio {body['studio']!r}")
    secret = settings.viewer_tokens.secret
    if not secret:
        raise Problem(409, "Conflict", "no viewer token secret is configured ([viewer_tokens])")
    now = time.time()
    token = viewer_tokens.issue(secret, studio.id, float(ttl), now=now)
    return json_response({"token": token, "studio": studio.id, "expires_at": int(now + ttl)})


async def memory_report(request: web.Request) -> web.Response:
    require_admin(request)
    return json_response(memory.report().as_dict())


def add_routes(app: web.Application) -> None:
    app.router.add_get("/admin/sessions", list_sessions)
    app.router.add_delete("/admin/sessions/{session}", kick)
    app.router.add_post("/admin/reload", reload)
    app.router.add_post("/admin/viewer-tokens", mint_viewer_token)
    app.router.add_get("/admin/memory", memory_report)
