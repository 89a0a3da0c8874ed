"""JSON API, health and Prometheus exposition."""

from __future__ import annotations

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from server.state import REGISTRY, SETTINGS, SOURCES


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def studios(request: web.Request) -> web.Response:
    """Every configured studio, live or not, with its codecs and viewer count."""
    sources = request.app[SOURCES]
    listing = []
    for studio in request.app[SETTINGS].current.studios:
        source = sources[studio.id]
        listing.append(
            {
                "id": studio.id,
                "name": studio.name,
                "city": studio.city,
                "country": studio.country,
                "live": source.live,
                "codecs": {kind: codec.mime_type for kind, codec in source.codecs().items()},
                "viewers": sum(1 for v in source.viewers if v.flowing),
                "whep": f"/whep/{studio.id}",
            }
        )
    return json_response({"studios": listing})


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def metrics_app(registry: CollectorRegistry) -> web.Application:
    """/metrics alone, for `server.metrics_port`: scraped apart from the public endpoints."""
    app = web.Application()
    app[REGISTRY] = registry
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/studios", studios)
    app.router.add_get("/healthz", healthz)
    if not app[SETTINGS].current.server.metrics_port:  # else on its own listener
        app.router.add_get("/metrics", metrics)
