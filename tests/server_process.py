"""Meridian started as a real process (`run.py`) for tests that need one."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def write_config(directory: Path, studios: dict[str, str], extra: str = "") -> Path:
    """A configuration with these studios (id -> token) after `extra` (other sections)."""
    path = directory / "meridian.toml"
    blocks = [
        f'[[studios]]\nid = "{sid}"\nname = "{sid} studio"\ncountry = "DE"\ntoken = "{token}"\n'
        for sid, token in studios.items()
    ]
    path.write_text(extra + "\n" + "\n".join(blocks))
    return path


@asynccontextmanager
async def running_server(
    directory: Path,
    studios: dict[str, str],
    *,
    script: str = "run.py",
    env: dict[str, str] | None = None,
    config_extra: str = "",
    port: int | None = None,
) -> AsyncIterator[ServerProcess]:
    """Start Meridian on `port` (default: a free one); kill it at the end whatever happens."""
    port = port or free_port()
    config = write_config(directory, studios, config_extra)
    log_path = directory / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - start-up only, returns at once
            [
                sys.executable,
                str(ROOT / script),
                "--config",
                str(config),
                "--no-demo",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path)
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(server.base_url + "/healthz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if process.poll() is not None:
                    raise RuntimeError(f"Meridian exited at start-up:\n{server.log()}")
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"Meridian did not start:\n{server.log()}")
        yield server
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
