"""Cluster nodes for tests: settings for a role, and the directory as Redis holds it."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import redis.asyncio as redis

from cluster.directory import NODES, STUDIOS, node_key
from config.settings import ClusterSettings, Settings

CLUSTER_TOKEN = "cluster-token-0123456789abcdef"

# Short timings keep the tests quick: registrations expire 1.5 s after a node dies.
FAST = {"heartbeat_interval": 0.25, "node_ttl": 1.5, "pull_grace": 0.5}


def cluster_settings(
    base: Settings, role: str, node_id: str, port: int, redis_url: str, **fields: Any
) -> Settings:
    cluster = ClusterSettings(
        role=role,
        node_id=node_id,
        public_url=f"http://127.0.0.1:{port}",
        redis_url=redis_url,
        token=CLUSTER_TOKEN,
        **{**FAST, **fields},
    )
    return dataclasses.replace(base, cluster=cluster)


def cluster_env(
    role: str, node_id: str, port: int, redis_url: str, **fields: Any
) -> dict[str, str]:
    """The same as MERIDIAN_CLUSTER__* variables, for a node started as a process."""
    values = {
        "role": role,
        "node_id": node_id,
        "public_url": f"http://127.0.0.1:{port}",
        "redis_url": redis_url,
        "token": CLUSTER_TOKEN,
        **FAST,
        **fields,
    }
    return {f"MERIDIAN_CLUSTER__{key.upper()}": str(value) for key, value in values.items()}


async def registered_nodes(client: redis.Redis) -> set[str]:
    """Node ids whose registration is alive now."""
    ids = {str(member) for member in await client.smembers(NODES)}
    return {node_id for node_id in ids if await client.exists(node_key(node_id))}


async def studio_origins(client: redis.Redis) -> dict[str, str]:
    return {str(k): str(v) for k, v in (await client.hgetall(STUDIOS)).items()}


async def eventually(
    probe: Callable[[], Any], ok: Callable[[Any], bool], within: float, what: str
) -> Any:
    """Poll an async probe until `ok(value)` (bounded); fail naming what was awaited."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    value: Any = None
    while loop.time() < deadline:
        value = await probe()
        if ok(value):
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: still {value!r} after {within} s")
