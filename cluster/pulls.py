"""An edge's pulls: started by its first viewer of a studio, dropped after its last.

One `EdgePull` per studio at a time. It starts when a viewer (or a downstream edge)
asks for a studio this node does not have live, from the studio's origin as the
directory names it (or, with `upstream = "region"`, from an edge of this node's region
that has the feed). It is dropped `pull_grace` seconds after the last viewer left. A
pull that breaks is started again, with a short backoff, from wherever the directory
then says the studio is; a studio that moved to another origin is pulled from there
and the new pull replaces the old one at its first packet (seamlessly, as a studio's
reconnect). While Redis is away, a broken pull is retried from the node it came from.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiortc import RTCPeerConnection

from clients.webrtc_client import RemoteSession, WebRtcHttpError, end_session, negotiate
from cluster import routing
from cluster.directory import Snapshot
from ingest.edge_pull import EdgePull
from relay.errors import OfferRejected
from relay.source import Source

if TYPE_CHECKING:
    from cluster.node import ClusterNode

log = logging.getLogger("meridian.cluster")

NODE_HEADER = "X-Meridian-Node"  # which node is pulling (for the upstream's tree routing)
BACKOFF_SECONDS = (0.25, 0.5, 1.0, 2.0, 4.0)
# From a viewer's pull being ready to its session being set up (the offer is answered).
JOIN_SECONDS = 3.0
# Reasons a pull ends that need no new pull ("failed": it never started; _pull retries).
_DELIBERATE = frozenset({"idle", "shutdown", "replaced", "failed"})
# Upstream answers that mean the studio is not there to pull: no point retrying at once.
_OFFLINE_STATUSES = frozenset({404, 409, 422})


class WhepSignalling:
    """WHEP for an edge pull: the cluster token, and redirects within the cluster only."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        endpoint: str,
        token: str,
        node_id: str,
        in_cluster: Callable[[str], bool],
    ) -> None:
        self.endpoint = endpoint
        self.remote: RemoteSession | None = None
        self._http = http
        self._token = token
        self._node_id = node_id
        self._in_cluster = in_cluster

    async def negotiate(self, pc: RTCPeerConnection) -> None:
        self.remote = await negotiate(
            self._http,
            self.endpoint,
            pc,
            self._token,
            headers={NODE_HEADER: self._node_id},
            token_follows=self._in_cluster,
        )

    async def close(self) -> None:
        if self.remote is not None:
            await end_session(self._http, self.remote, self._token)


@dataclass
class _Upstream:
    url: str  # the WHEP endpoint
    node_id: str
    depth: int  # the pull's depth once connected there


@dataclass
class _PullState:
    session: EdgePull | None = None
    starting: asyncio.Task[None] | None = None
    wanted_until: float = 0.0  # a viewer is joining: keep (or start) the pull until then
    idle_since: float | None = None
    failures: int = 0
    next_try: float = 0.0
    origin: str | None = None  # the studio's origin when the pull started
    last: _Upstream | None = None  # what to retry while the directory is unreachable
    last_error: str = ""
    offline: bool = False  # the last try found the studio live nowhere

    @property
    def active(self) -> EdgePull | None:
        session = self.session
        return session if session is not None and session.end_reason is None else None

    @property
    def in_flight(self) -> bool:
        return self.starting is not None and not self.starting.done()


class PullManager:
    def __init__(self, node: ClusterNode) -> None:
        self._node = node
        self._states: dict[str, _PullState] = {}

    # ------------------------------------------------------------------ viewers ask

    async def ensure(self, studio: str, within: float) -> bool:
        """Have `studio` live here, pulling it if needed; False if it is not live anywhere."""
        source = self._node.sources[studio]
        if source.live:
            return True
        if source.publisher is not None and not isinstance(source.publisher, EdgePull):
            return False  # this node is the studio's origin and the studio is silent
        state = self._states.setdefault(studio, _PullState())
        now = time.monotonic()
        state.wanted_until = max(state.wanted_until, now + within + self._grace)
        if state.active is None:
            self._start(studio, state, force=True)
        else:
            snapshot = await self._node.refresh()
            if snapshot is not None and snapshot.origin_of(studio) is None:
                return False  # live nowhere: the pull waits for the studio, the viewer retries
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline and not source.live:
            if not state.in_flight and state.active is None:
                if state.offline:
                    break  # the studio is live nowhere: the viewer is told to retry later
                self._start(studio, state)  # a transient failure: again, after the backoff
            await asyncio.sleep(0.05)
        # The viewer's session is set up next and holds the pull from then on.
        state.wanted_until = time.monotonic() + JOIN_SECONDS + self._grace
        return source.live

    def feed_of(self, studio: str) -> EdgePull | None:
        state = self._states.get(studio)
        return state.active if state is not None else None

    # ------------------------------------------------------------------ heartbeat

    def tick(self) -> None:
        """Drop idle pulls, restart broken ones, follow a studio that moved."""
        now = time.monotonic()
        snapshot = self._node.current()
        for studio, state in list(self._states.items()):
            source = self._node.sources.get(studio)
            session = state.active
            if source is None:  # the studio left the configuration (a reload)
                if session is not None:
                    session.end("shutdown")
                del self._states[studio]
                continue
            wanted = bool(source.viewers or source.downstream) or now < state.wanted_until
            if not wanted:
                if state.idle_since is None:
                    state.idle_since = now
                elif now - state.idle_since >= self._grace and not state.in_flight:
                    if session is not None:
                        log.info(
                            "pull dropped: no viewer left",
                            extra={"studio": studio, "upstream": session.upstream},
                        )
                        session.end("idle")
                    del self._states[studio]
                continue
            state.idle_since = None
            if session is None:
                self._start(studio, state)
            elif session.connected:
                state.failures = 0
                moved_to = snapshot.studios.get(studio) if snapshot is not None else None
                if session.depth == 1 and moved_to not in (None, state.origin):
                    log.info(
                        "studio moved to another origin; pulling from there",
                        extra={"studio": studio, "from": state.origin, "to": moved_to},
                    )
                    self._start(studio, state, force=True)

    def close(self) -> None:
        for state in self._states.values():
            if state.starting is not None:
                state.starting.cancel()
            if state.active is not None:
                state.active.end("shutdown")
        self._states.clear()

    def status(self) -> dict[str, dict[str, Any]]:
        """For /api/cluster: each pull, whom from, and how it is doing."""
        out: dict[str, dict[str, Any]] = {}
        for studio, state in self._states.items():
            session = state.active
            out[studio] = {
                "upstream": session.upstream if session is not None else None,
                "depth": session.depth if session is not None else None,
                "connected": bool(session is not None and session.connected),
                "live": studio in self._node.sources and self._node.sources[studio].live,
                "failures": state.failures,
                "last_error": state.last_error,
            }
        return out

    # ------------------------------------------------------------------ pulling

    @property
    def _grace(self) -> float:
        return self._node.settings.pull_grace

    def _start(self, studio: str, state: _PullState, *, force: bool = False) -> None:
        if state.in_flight or (not force and time.monotonic() < state.next_try):
            return
        state.starting = asyncio.ensure_future(self._pull(studio, state))

    def _upstream(self, studio: str, snapshot: Snapshot | None, state: _PullState) -> _Upstream:
        node = self._node
        if snapshot is None:
            if state.last is not None:
                return state.last  # Redis is away: the node that had it is the best guess
            raise LookupError("the directory is unreachable and no earlier upstream is known")
        origin = snapshot.origin_of(studio)
        if origin is None:
            raise LookupError(f"studio {studio!r} is not live on any origin")
        if origin.node_id == node.node_id:
            raise LookupError(f"this node is the origin of {studio!r}")
        target, depth = origin, 1
        if node.settings.upstream == "region":
            nearby = routing.choose_pull_source(snapshot, studio=studio, requester=node.node_id)
            if nearby is not None and nearby.region == node.settings.region:
                target, depth = nearby, nearby.feeds[studio].depth + 1
        return _Upstream(f"{target.url}/whep/{studio}", target.node_id, depth)

    async def _pull(self, studio: str, state: _PullState) -> None:
        node = self._node
        source: Source | None = node.sources.get(studio)
        if source is None:
            return  # the studio left the configuration meanwhile
        snapshot = node.current()
        if snapshot is None or snapshot.origin_of(studio) is None:
            snapshot = await node.refresh()  # the studio may have gone live a moment ago
        try:
            upstream = self._upstream(studio, snapshot, state)
        except LookupError as exc:
            self._failed(studio, state, str(exc), offline=True)
            return
        signalling = WhepSignalling(
            node.http, upstream.url, node.settings.token, node.node_id, node.in_cluster
        )
        session = EdgePull(
            source,
            signalling,
            upstream=upstream.node_id,
            connect_timeout=node.pull_connect_timeout,
            certificate=node.certificate,
            on_end=self._ended(studio),
        )
        try:
            await asyncio.wait_for(session.start(), node.pull_connect_timeout)
        except (
            WebRtcHttpError,
            OfferRejected,
            aiohttp.ClientError,
            OSError,
            TimeoutError,
        ) as exc:
            session.end("failed")
            status = exc.status if isinstance(exc, WebRtcHttpError) else None
            reason = f"HTTP {status}" if status is not None else repr(exc)
            self._failed(
                studio,
                state,
                f"pull from {upstream.node_id} failed: {reason}",
                offline=status in _OFFLINE_STATUSES,
            )
            return
        except BaseException:
            session.end("failed")
            raise
        # After redirects (a tree), the node that answered is the upstream.
        answered = signalling.remote.url if signalling.remote is not None else upstream.url
        final = snapshot.node_at(answered) if snapshot is not None else None
        if final is not None and final.node_id != upstream.node_id:
            feed = final.feeds.get(studio)
            upstream = _Upstream(
                f"{final.url}/whep/{studio}", final.node_id, feed.depth + 1 if feed else 2
            )
        session.upstream, session.depth = upstream.node_id, upstream.depth
        state.session, state.last, state.last_error, state.offline = session, upstream, "", False
        state.origin = snapshot.studios.get(studio) if snapshot is not None else state.origin
        log.info(
            "pulling studio",
            extra={"studio": studio, "upstream": upstream.node_id, "depth": upstream.depth},
        )

    def _failed(self, studio: str, state: _PullState, error: str, *, offline: bool = False) -> None:
        state.offline = offline
        state.failures += 1
        delay = BACKOFF_SECONDS[min(state.failures, len(BACKOFF_SECONDS)) - 1]
        state.next_try = time.monotonic() + delay
        if error != state.last_error:
            log.info("cannot pull studio", extra={"studio": studio, "error": error})
        state.last_error = error

    def _ended(self, studio: str) -> Callable[[Any, str], None]:
        def ended(session: Any, reason: str) -> None:
            state = self._states.get(studio)
            if state is None or reason in _DELIBERATE:
                return
            if state.session is session:
                state.session = None
            self._failed(studio, state, f"pull ended: {reason}")
            log.warning(
                "pull broke; pulling again",
                extra={"studio": studio, "upstream": session.upstream, "reason": reason},
            )
            delay = max(0.0, state.next_try - time.monotonic())
            # After close() the state is gone and the retry does nothing.
            asyncio.get_running_loop().call_later(delay, self._retry, studio)

        return ended

    def _retry(self, studio: str) -> None:
        state = self._states.get(studio)
        source = self._node.sources.get(studio)
        if state is None or source is None or state.active is not None:
            return
        if source.viewers or source.downstream or time.monotonic() < state.wanted_until:
            self._start(studio, state)
