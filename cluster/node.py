"""This node in the cluster: its registration heartbeat, its studio claims, its directory view.

Every `heartbeat_interval` the node writes its entry (URL, role, region, capacity, load,
edge pulls served, live feeds) with a TTL of `node_ttl`, claims the studios that publish
to it and releases those that stopped, reads the whole directory back, and lets its
pulls follow (drop idle ones, re-pull broken ones).

Redis unavailable: nothing a viewer has is touched. The node logs it loudly (at most
every `LOUD_LOG_INTERVAL` seconds), keeps serving, routes from the last snapshot until it
is `node_ttl` old and then serves every viewer itself; the Redis client reconnects by
itself and the next heartbeat writes everything again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from cluster.directory import (
    UNAVAILABLE,
    Directory,
    Feed,
    NodeInfo,
    Snapshot,
    role_serves_viewers,
    role_takes_studios,
)
from cluster.pulls import PullManager
from config.settings import ClusterSettings, ServerSettings
from ingest.edge_pull import EdgePull
from relay.rtc_internals import SharedCertificate
from relay.source import Source

log = logging.getLogger("meridian.cluster")

LOUD_LOG_INTERVAL = 10.0
# Stopping the heartbeat: how often to cancel it, and how long to wait each time.
STOP_ATTEMPTS = 10
STOP_WAIT_SECONDS = 0.5
# How long a viewer's request may wait for this edge to pull the studio.
PULL_WAIT_SECONDS = 10.0
# Directory reads outside the heartbeat (see `refresh`) at most this often.
REFRESH_INTERVAL = 0.2


def default_node_id(server: ServerSettings) -> str:
    return f"{socket.gethostname()}-{server.port}".lower()


def default_public_url(server: ServerSettings) -> str:
    host = server.host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{server.port}"


def redis_location(url: str) -> str:
    """The Redis URL without credentials, for logs."""
    parsed = URL(url)
    return str(parsed.with_user(None)) if parsed.host else parsed.scheme + "://..."


class ClusterNode:
    def __init__(
        self,
        settings: ClusterSettings,
        server: ServerSettings,
        sources: Mapping[str, Source],
        certificate: SharedCertificate,
        connect_timeout: float,
    ) -> None:
        self.settings = settings
        self.node_id = settings.node_id or default_node_id(server)
        self.url = settings.public_url or default_public_url(server)
        self.sources = sources
        self.certificate = certificate
        self.pull_connect_timeout = min(connect_timeout, PULL_WAIT_SECONDS)
        self.pulls = PullManager(self)
        # Viewers this node sent to each node since its last directory read (see routing).
        self.pending: Counter[str] = Counter()
        self.redis_ok: bool | None = None  # None until the first heartbeat
        self._snapshot: Snapshot | None = None
        self._claimed: set[str] = set()
        self._directory: Directory | None = None
        self._http: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_loud_log = -1e9
        self._refreshing = asyncio.Lock()

    # ------------------------------------------------------------------ what it is

    @property
    def role(self) -> str:
        return self.settings.role

    @property
    def serves_viewers(self) -> bool:
        return role_serves_viewers(self.role)

    @property
    def takes_studios(self) -> bool:
        return role_takes_studios(self.role)

    @property
    def http(self) -> aiohttp.ClientSession:
        assert self._http is not None, "the cluster node is not started"
        return self._http

    def load(self) -> int:
        """Viewer sessions on this node (joining ones too: they take a place)."""
        return sum(len(source.viewers) for source in self.sources.values())

    def pulls_served(self) -> int:
        """Edge pulls other nodes hold from this one."""
        return sum(len(source.downstream) for source in self.sources.values())

    def feeds(self) -> dict[str, Feed]:
        """The studios live here, and where each comes from."""
        feeds: dict[str, Feed] = {}
        for studio, source in self.sources.items():
            if not source.live:
                continue
            publisher = source.publisher
            if isinstance(publisher, EdgePull):
                feeds[studio] = Feed(publisher.upstream, publisher.depth)
            else:
                feeds[studio] = Feed("", 0)
        return feeds

    def info(self) -> NodeInfo:
        s = self.settings
        return NodeInfo(
            node_id=self.node_id,
            url=self.url,
            role=s.role,
            region=s.region,
            countries=s.countries,
            capacity=s.capacity,
            load=self.load(),
            pulls=self.pulls_served(),
            max_pulls=s.max_edge_pulls,
            feeds=self.feeds(),
        )

    def current(self) -> Snapshot | None:
        """The directory as last read, while it is fresh enough to route by."""
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() - snapshot.read_at > self.settings.node_ttl:
            return None
        return snapshot

    async def refresh(self) -> Snapshot | None:
        """Read the directory now (a pull about to start for a studio that just went live);
        at most every `REFRESH_INTERVAL` seconds. The last snapshot when Redis is away."""
        async with self._refreshing:
            snapshot = self._snapshot
            if snapshot is not None and time.monotonic() - snapshot.read_at < REFRESH_INTERVAL:
                return snapshot
            directory = self._directory
            if directory is None:
                return self.current()
            try:
                async with asyncio.timeout(1.0):
                    self._snapshot = await directory.snapshot()
            except (*UNAVAILABLE, TimeoutError) as exc:
                self._redis_failed(exc)
            return self.current()

    def in_cluster(self, url: str) -> bool:
        """A URL of a node of this cluster: the cluster token may be sent there."""
        snapshot = self._snapshot
        return snapshot is not None and snapshot.node_at(url) is not None

    # ------------------------------------------------------------------ lifetime

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15))
        self._directory = Directory(self.settings.redis_url, ttl=self.settings.node_ttl)
        log.info(
            "joining the cluster",
            extra={
                "node": self.node_id,
                "role": self.role,
                "url": self.url,
                "region": self.settings.region,
                "redis": redis_location(self.settings.redis_url),
            },
        )
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        task = self._task
        # Cancel until it ends: a cancellation that lands just as a Redis call's
        # asyncio.timeout() fires can be taken for that timeout and swallowed.
        for _ in range(STOP_ATTEMPTS):
            if task is None or task.done():
                break
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_WAIT_SECONDS)
        self.pulls.close()
        directory = self._directory
        if directory is not None:
            with contextlib.suppress(*UNAVAILABLE, TimeoutError):
                async with asyncio.timeout(2.0):
                    for studio in list(self._claimed):
                        await directory.release_studio(studio, self.node_id)
                    await directory.unregister(self.node_id)
            await directory.close()
        if self._http is not None:
            await self._http.close()

    async def _run(self) -> None:
        interval = self.settings.heartbeat_interval
        while True:
            started = time.monotonic()
            try:
                await self.heartbeat()
                self.pulls.tick()
            except Exception:  # a bug here must not end the heartbeat for good
                log.exception("cluster heartbeat failed", extra=self._log_fields())
            await asyncio.sleep(max(0.05, interval - (time.monotonic() - started)))

    async def heartbeat(self) -> None:
        directory = self._directory
        assert directory is not None
        try:
            async with asyncio.timeout(max(1.0, self.settings.heartbeat_interval)):
                await directory.register(self.info())
                await self._update_claims(directory)
                snapshot = await directory.snapshot()
        except (*UNAVAILABLE, TimeoutError) as exc:
            self._redis_failed(exc)
            return
        if self.redis_ok is False:
            log.warning("Redis is reachable again; directory updated", extra=self._log_fields())
        self.redis_ok = True
        self._snapshot = snapshot
        self.pending.clear()  # the loads just read include the viewers sent so far

    async def _update_claims(self, directory: Directory) -> None:
        live = {
            studio
            for studio, feed in self.feeds().items()
            if feed.depth == 0 and self.takes_studios
        }
        for studio in live:
            await directory.claim_studio(studio, self.node_id)  # again: Redis may be new
            if studio not in self._claimed:
                log.info("studio live here: claimed", extra={"studio": studio})
        for studio in self._claimed - live:
            await directory.release_studio(studio, self.node_id)
            log.info("studio ended here: released", extra={"studio": studio})
        self._claimed = live

    def _redis_failed(self, exc: BaseException) -> None:
        self.redis_ok = False
        now = time.monotonic()
        if now - self._last_loud_log < LOUD_LOG_INTERVAL:
            return
        self._last_loud_log = now
        log.error(
            "Redis unreachable: serving what this node has; no viewer is cut, "
            "directory updates resume when it is back",
            extra={**self._log_fields(), "error": repr(exc)},
        )

    def _log_fields(self) -> dict[str, Any]:
        return {"node": self.node_id, "redis": redis_location(self.settings.redis_url)}

    def describe(self) -> dict[str, Any]:
        """For /api/cluster: this node, its directory view, its pulls."""
        snapshot = self._snapshot
        return {
            "node": {
                "id": self.node_id,
                "url": self.url,
                "role": self.role,
                "region": self.settings.region,
                "capacity": self.settings.capacity,
                "load": self.load(),
                "pulls_served": self.pulls_served(),
            },
            "redis": {None: "starting", True: "ok", False: "unreachable"}[self.redis_ok],
            "directory": None
            if snapshot is None
            else {
                "age_seconds": round(time.monotonic() - snapshot.read_at, 3),
                "nodes": {
                    n.node_id: {
                        "url": n.url,
                        "role": n.role,
                        "region": n.region,
                        "load": n.load,
                        "capacity": n.capacity,
                        "pulls": n.pulls,
                        "feeds": sorted(n.feeds),
                    }
                    for n in snapshot.nodes.values()
                },
                "studios": dict(snapshot.studios),
            },
            "pulls": self.pulls.status(),
        }
