"""The live audience for pages: `GET /api/audience` (JSON) and `GET /api/events` (SSE).

`/api/audience` answers the document built by `metrics.audience.audience_snapshot`:

    {"viewers": 12, "countries_now": 3, "countries_since_start": 5,
     "sessions_since_start": 40,
     "studios": [{"id": "berlin", "viewers": 9, "countries": {"DE": 6, "FR": 3}}, ...],
     "countries": [{"country": "DE", "viewers": 7}, ...]}          (most viewers first)

`/api/events` is a server-sent event stream of the same document, as
`event: audience` messages: one at once on connect, then at most one per second and
only when it changed, and a `: keepalive` comment after 15 s of silence. One task
computes the document once per second for every listener (and only while there are
listeners); a listener that disconnects is noticed within a second, and every stream
ends when the server shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web

from metrics.audience import audience_snapshot
from server.state import METRICS, SETTINGS, SOURCES

UPDATE_INTERVAL = 1.0
KEEPALIVE_INTERVAL = 15.0


@dataclass(eq=False)
class _Listener:
    alive: Callable[[], bool]
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class AudienceFeed:
    """The latest audience document, and who is waiting for the next one."""

    def __init__(
        self,
        snapshot: Callable[[], bytes],
        interval: float = UPDATE_INTERVAL,
        keepalive: float = KEEPALIVE_INTERVAL,
    ) -> None:
        self._snapshot = snapshot
        self.interval = interval
        self.keepalive = keepalive
        self.payload = b""
        self.version = 0
        self.closing = False
        self._announced = 0
        self._listeners: set[_Listener] = set()

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def refresh(self) -> tuple[int, bytes]:
        """Build the document now; a new version when it differs from the last."""
        data = self._snapshot()
        if data != self.payload:
            self.payload = data
            self.version += 1
        return self.version, self.payload

    def listen(self, alive: Callable[[], bool]) -> _Listener:
        listener = _Listener(alive)
        self._listeners.add(listener)
        return listener

    def forget(self, listener: _Listener) -> None:
        self._listeners.discard(listener)

    def tick(self) -> None:
        """Wake the listeners when the document changed, and those whose client left."""
        if not self._listeners:
            return
        self.refresh()
        changed = self.version != self._announced
        self._announced = self.version
        for listener in list(self._listeners):
            if changed or not listener.alive():
                listener.wake.set()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.tick()

    def close(self) -> None:
        """End every stream (server shutdown)."""
        self.closing = True
        for listener in list(self._listeners):
            listener.wake.set()


FEED = web.AppKey("audience_feed", AudienceFeed)


def _message(data: bytes) -> bytes:
    return b"event: audience\ndata: " + data + b"\n\n"


async def audience(request: web.Request) -> web.Response:
    return web.Response(body=request.app[FEED].refresh()[1], content_type="application/json")


async def events(request: web.Request) -> web.StreamResponse:
    feed = request.app[FEED]
    loop = asyncio.get_running_loop()
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # no buffering in nginx-like proxies
        }
    )
    origin = request.headers.get("Origin")
    allowed = request.app[SETTINGS].current.server.cors_origins
    if origin is not None and ("*" in allowed or origin in allowed):
        # The CORS middleware adds its headers after the handler, too late for a stream.
        response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
    await response.prepare(request)

    def alive() -> bool:
        transport = request.transport
        return transport is not None and not transport.is_closing()

    listener = feed.listen(alive)
    try:
        version, data = feed.refresh()
        await response.write(_message(data))
        sent_at = loop.time()
        quiet_until = sent_at + feed.keepalive
        while not feed.closing:
            try:
                await asyncio.wait_for(listener.wake.wait(), max(0.0, quiet_until - loop.time()))
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                quiet_until = loop.time() + feed.keepalive
                continue
            listener.wake.clear()
            if feed.closing or not alive():
                break
            if feed.version == version:
                continue
            await asyncio.sleep(max(0.0, sent_at + feed.interval - loop.time()))
            version, data = feed.version, feed.payload
            await response.write(_message(data))
            sent_at = loop.time()
            quiet_until = sent_at + feed.keepalive
    except ConnectionResetError:
        pass  # the client left while we wrote
    finally:
        feed.forget(listener)
    return response


async def _run_feed(app: web.Application) -> AsyncIterator[None]:
    feed = app[FEED]
    task = asyncio.create_task(feed.run())
    yield
    feed.close()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _end_streams(app: web.Application) -> None:
    app[FEED].close()  # before the server waits for its handlers to finish


def add_routes(app: web.Application) -> None:
    def snapshot() -> bytes:
        studio_ids = [studio.id for studio in app[SETTINGS].current.studios]
        return orjson.dumps(audience_snapshot(studio_ids, app[SOURCES], app[METRICS].audience))

    app[FEED] = AudienceFeed(snapshot)
    app.cleanup_ctx.append(_run_feed)
    app.on_shutdown.append(_end_streams)
    app.router.add_get("/api/audience", audience)
    app.router.add_get("/api/events", events, allow_head=False)  # a stream has no HEAD
