"""The application factory: routes, middlewares, and the relay's lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from cluster import http as cluster_http
from config.settings import Settings
from metrics.geo import GeoResolver
from metrics.relay_metrics import RelayMetrics
from relay import rtc_internals
from relay.source import Source
from server import admin, api, audience, pages, whep, whip
from server.admission import Admission
from server.cors import cors_middleware
from server.live_settings import LiveSettings, SettingsLoader
from server.problems import Handler, problem_middleware
from server.ratelimit import rate_limit_middleware
from server.sessions import SessionRegistry
from server.state import (
    ADMISSION,
    CERTIFICATE,
    GEO,
    METRICS,
    REGISTRY,
    SESSIONS,
    SETTINGS,
    SOURCES,
)

# SIGTERM: seconds for every session's goodbye while draining, then for any left at cleanup.
# With the HTTP server's own wait, the process exits within 5 s.
DRAIN_GRACE_SECONDS = 2.0
SHUTDOWN_GRACE_SECONDS = 1.5


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    protocol = request.path.partition("/")[2].partition("/")[0]  # "" for a bare "*" or URL
    if protocol not in ("whip", "whep"):
        return await handler(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        request.app[METRICS].http_request_answered(protocol, request.method, status)


def create_app(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    *,
    reload: SettingsLoader | None = None,
) -> web.Application:
    """The relay's application; `reload` reads the configuration again (SIGHUP, admin)."""
    rtc_internals.check_internals()
    rtc_internals.register_forwarded_codecs()
    live = LiveSettings(settings, reload)
    geo = GeoResolver(settings.geo)
    app = web.Application(
        middlewares=[
            count_requests,
            cors_middleware(settings.server.cors_origins),
            problem_middleware,
            rate_limit_middleware(live, geo),
        ],
        client_max_size=settings.server.max_body_bytes,
    )
    registry = registry if registry is not None else CollectorRegistry()
    app[SETTINGS] = live
    app[REGISTRY] = registry
    app[SOURCES] = {
        studio.id: Source(
            studio.id,
            keyframe_request_interval=settings.relay.keyframe_request_interval,
            silence_timeout=settings.relay.studio_silence_timeout,
        )
        for studio in settings.studios
    }
    app[SESSIONS] = SessionRegistry()
    app[ADMISSION] = Admission()
    app[CERTIFICATE] = rtc_internals.SharedCertificate()
    app[METRICS] = RelayMetrics(registry, lambda: app[SOURCES], settings.geo.unknown_label)
    app[GEO] = geo
    app.cleanup_ctx.append(end_sessions_on_shutdown)
    app.on_cleanup.append(close_geo_database)
    whip.add_routes(app)
    whep.add_routes(app)
    api.add_routes(app)
    admin.add_routes(app)
    audience.add_routes(app)
    pages.add_routes(app)
    if settings.cluster.role != "single":
        cluster_http.install(app, settings)  # Redis directory, redirects, edge pulls
    return app


async def close_geo_database(app: web.Application) -> None:
    app[GEO].close()


async def end_all_sessions(app: web.Application, reason: str, grace: float) -> None:
    """End every session and wait (at most `grace` s) for each to close its peer connection,
    so that every peer sees a clean goodbye (RTCP BYE, DTLS close_notify), not a timeout."""
    resources = app[SESSIONS].all()
    for resource in resources:
        resource.session.end(reason)
    closing = [
        asyncio.ensure_future(r.session.ended.wait())
        for r in resources
        if not r.session.ended.is_set()
    ]
    if closing:
        _, late = await asyncio.wait(closing, timeout=grace)
        for waiter in late:
            waiter.cancel()


async def drain(app: web.Application, grace: float = DRAIN_GRACE_SECONDS) -> None:
    """SIGTERM: take no new session (503 with Retry-After), end every session cleanly."""
    app[ADMISSION].draining = True
    await end_all_sessions(app, "shutdown", grace)


async def end_sessions_on_shutdown(app: web.Application) -> AsyncIterator[None]:
    yield
    await end_all_sessions(app, "shutdown", SHUTDOWN_GRACE_SECONDS)
    for source in app[SOURCES].values():
        source.close()
