"""A real Redis server (Debian package `redis-server`) started by a test on 127.0.0.1."""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import redis.asyncio as redis

from tests.server_process import free_port

REDIS_SERVER = "redis-server"


def redis_server_binary() -> str:
    binary = shutil.which(REDIS_SERVER) or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )
    if binary is None:
        raise RuntimeError(
            "the Redis server is not installed: `make system-deps` installs it "
            "(Debian: apt-get install redis-server)"
        )
    return binary


@dataclass
class RedisServer:
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def log(self) -> str:
        path = self.directory / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def start(self) -> None:
        """Start (or start again, on the same port) and wait until it answers PING."""
        with (self.directory / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(  # noqa: ASYNC220 - start-up only, returns at once
                [
                    redis_server_binary(),
                    *("--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--dir", str(self.directory), "--save", "", "--appendonly", "no"),
                    *("--protected-mode", "yes", "--daemonize", "no"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        client = redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            for _ in range(100):
                try:
                    if await client.ping():
                        return
                except (redis.ConnectionError, OSError):
                    pass
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited at start-up:\n{self.log()}")
                await asyncio.sleep(0.05)
            raise RuntimeError(f"redis-server did not answer:\n{self.log()}")
        finally:
            await client.aclose()

    def kill(self) -> None:
        """SIGKILL: Redis vanishes as in a crash."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)

    def client(self) -> redis.Redis:
        return redis.from_url(self.url, decode_responses=True, socket_timeout=2.0)


@asynccontextmanager
async def running_redis(directory: Path) -> AsyncIterator[RedisServer]:
    """redis-server on a free port, data in `directory`, nothing saved; killed at the end."""
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    server = RedisServer(free_port(), directory)
    try:
        await server.start()
        yield server
    finally:
        server.kill()
