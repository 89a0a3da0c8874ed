"""The cluster's directory in Redis: which nodes are alive, and which origin holds which studio.

Keys (all under `meridian:`):

- `meridian:node:<id>`: a hash per node (URL, role, region, countries, capacity, load,
  edge pulls served, the feeds it has), written every heartbeat with a TTL of a few
  heartbeats, so a node that dies disappears by itself.
- `meridian:nodes`: the set of node ids; readers drop ids whose hash has expired.
- `meridian:studios`: a hash studio id -> the node id of the origin it publishes to,
  set by that origin when the studio goes live and removed when it ends (only by the
  node that holds it). Readers ignore entries whose node is gone (a crashed origin).

Every node reads the whole directory once per heartbeat (a few small commands, whatever
the number of viewers) and routes requests from that snapshot: no request waits on Redis.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis.asyncio as redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

PREFIX = "meridian:"
NODES = PREFIX + "nodes"
STUDIOS = PREFIX + "studios"

# Removes a studio's entry only while it still names this node: a studio that moved to
# another origin meanwhile keeps its new entry.
_RELEASE = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""

# Errors that mean "Redis cannot be used now" (the client reconnects by itself).
UNAVAILABLE = (redis.RedisError, OSError)


def role_serves_viewers(role: str) -> bool:
    """Viewers may be sent to a node of this role (edges; nodes that are both)."""
    return role in ("edge", "both")


def role_takes_studios(role: str) -> bool:
    return role in ("origin", "both")


def node_key(node_id: str) -> str:
    return f"{PREFIX}node:{node_id}"


@dataclass(frozen=True, slots=True)
class Feed:
    """A studio's feed as one node has it: whom it pulls from, hops from the origin."""

    upstream: str  # node id; "" at the origin itself
    depth: int  # 0 at the origin, 1 for an edge pulling from it, ...


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    url: str  # public base URL, no trailing slash
    role: str  # origin, edge or both
    region: str
    countries: tuple[str, ...] = ()
    capacity: int = 0  # viewers
    load: int = 0  # viewer sessions now
    pulls: int = 0  # edge pulls this node serves now
    max_pulls: int = 0  # 0: no bound
    feeds: Mapping[str, Feed] = field(default_factory=dict)  # live feeds, by studio

    @property
    def serves_viewers(self) -> bool:
        return role_serves_viewers(self.role)

    @property
    def takes_studios(self) -> bool:
        return role_takes_studios(self.role)

    @property
    def utilisation(self) -> float:
        return self.load / self.capacity if self.capacity > 0 else 1.0

    def has_pull_slot(self) -> bool:
        return self.max_pulls <= 0 or self.pulls < self.max_pulls

    def to_hash(self) -> dict[str, str]:
        return {
            "url": self.url,
            "role": self.role,
            "region": self.region,
            "countries": ",".join(self.countries),
            "capacity": str(self.capacity),
            "load": str(self.load),
            "pulls": str(self.pulls),
            "max_pulls": str(self.max_pulls),
            "feeds": orjson.dumps(
                {studio: [feed.upstream, feed.depth] for studio, feed in self.feeds.items()}
            ).decode(),
            "updated": f"{time.time():.3f}",
        }

    @classmethod
    def from_hash(cls, node_id: str, data: Mapping[str, str]) -> NodeInfo:
        """A node as registered; fields it lacks (an older node) get harmless defaults."""
        feeds_raw: Any = orjson.loads(data.get("feeds") or "{}")
        feeds = {
            str(studio): Feed(str(value[0]), int(value[1]))
            for studio, value in (feeds_raw.items() if isinstance(feeds_raw, dict) else ())
        }
        return cls(
            node_id=node_id,
            url=data.get("url", ""),
            role=data.get("role", "edge"),
            region=data.get("region", ""),
            countries=tuple(c for c in data.get("countries", "").split(",") if c),
            capacity=int(data.get("capacity") or 0),
            load=int(data.get("load") or 0),
            pulls=int(data.get("pulls") or 0),
            max_pulls=int(data.get("max_pulls") or 0),
            feeds=feeds,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The directory as read at one moment."""

    nodes: Mapping[str, NodeInfo]
    studios: Mapping[str, str]  # studio id -> origin node id (alive nodes only)
    read_at: float = field(default_factory=time.monotonic)

    def origin_of(self, studio: str) -> NodeInfo | None:
        node_id = self.studios.get(studio)
        return self.nodes.get(node_id) if node_id is not None else None

    def node_at(self, url: str) -> NodeInfo | None:
        """The node whose public URL starts `url` (after a redirect)."""
        for node in self.nodes.values():
            if url == node.url or url.startswith(node.url + "/"):
                return node
        return None


class Directory:
    """The Redis side of the cluster. Calls raise one of `UNAVAILABLE` when Redis is down."""

    def __init__(self, url: str, ttl: float, timeout: float = 1.0) -> None:
        self._ttl_ms = max(1, int(ttl * 1000))
        # No retries inside a call: the heartbeat is the retry, and no caller should hang.
        self._redis = redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        self._release = self._redis.register_script(_RELEASE)

    async def register(self, node: NodeInfo) -> None:
        """(Re)write this node's entry, alive for one more TTL."""
        key = node_key(node.node_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)  # fields a node no longer has go too
            fields: dict[FieldT, EncodableT] = {k: v for k, v in node.to_hash().items()}
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, self._ttl_ms)
            pipe.sadd(NODES, node.node_id)
            await pipe.execute()

    async def unregister(self, node_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(node_key(node_id))
            pipe.srem(NODES, node_id)
            await pipe.execute()

    async def claim_studio(self, studio: str, node_id: str) -> None:
        await self._redis.hset(STUDIOS, studio, node_id)

    async def release_studio(self, studio: str, node_id: str) -> bool:
        released = await self._release(keys=[STUDIOS], args=[studio, node_id])
        return bool(released)

    async def snapshot(self) -> Snapshot:
        ids = sorted(str(member) for member in await self._redis.smembers(NODES))
        async with self._redis.pipeline(transaction=False) as pipe:
            for node_id in ids:
                pipe.hgetall(node_key(node_id))
            pipe.hgetall(STUDIOS)
            *hashes, studios = await pipe.execute()
        nodes: dict[str, NodeInfo] = {}
        gone: list[str] = []
        for node_id, data in zip(ids, hashes, strict=True):
            if data:
                nodes[node_id] = NodeInfo.from_hash(node_id, data)
            else:
                gone.append(node_id)
        if gone:
            await self._redis.srem(NODES, *gone)
        held = {studio: node for studio, node in studios.items() if node in nodes}
        return Snapshot(nodes, held)

    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    async def close(self) -> None:
        await self._redis.aclose()
