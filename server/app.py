"""The application factory: routes, middlewares, and the relay's lifetime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from config.settings import Settings
from metrics.geo import GeoResolver
from metrics.relay_metrics import RelayMetrics
from relay import rtc_internals
from relay.source import Source
from server import api, audience, pages, whep, whip
from server.cors import cors_middleware
from server.problems import Handler, problem_middleware
from server.sessions import SessionRegistry
from server.state import CERTIFICATE, GEO, METRICS, REGISTRY, SESSIONS, SETTINGS, SOURCES

SHUTDOWN_GRACE_SECONDS = 3.0


@web.middleware
async def count_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    protocol = request.path.split("/", 2)[1]
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


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> web.Application:
    rtc_internals.check_internals()
    rtc_internals.register_forwarded_codecs()
    app = web.Application(
        middlewares=[
            count_requests,
            cors_middleware(settings.server.cors_origins),
            problem_middleware,
        ],
        client_max_size=settings.server.max_body_bytes,
    )
    registry = registry if registry is not None else CollectorRegistry()
    app[SETTINGS] = settings
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
    app[CERTIFICATE] = rtc_internals.SharedCertificate()
    app[METRICS] = RelayMetrics(registry, lambda: app[SOURCES], settings.geo.unknown_label)
    app[GEO] = GeoResolver(settings.geo)
    app.cleanup_ctx.append(end_sessions_on_shutdown)
    app.on_cleanup.append(close_geo_database)
    whip.add_routes(app)
    whep.add_routes(app)
    api.add_routes(app)
    audience.add_routes(app)
    pages.add_routes(app)
    return app


async def close_geo_database(app: web.Application) -> None:
    app[GEO].close()


async def end_sessions_on_shutdown(app: web.Application) -> AsyncIterator[None]:
    yield
    resources = app[SESSIONS].all()
    for resource in resources:
        resource.session.end("shutdown")
    # Let every peer connection send its goodbye (RTCP BYE, DTLS close_notify).
    closing = [asyncio.ensure_future(r.session.ended.wait()) for r in resources]
    if closing:
        await asyncio.wait(closing, timeout=SHUTDOWN_GRACE_SECONDS)
    for source in app[SOURCES].values():
        source.close()
