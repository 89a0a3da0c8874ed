"""A real Prometheus server (Debian package `prometheus`) started by a test, and its HTTP API."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.server_process import free_port

PROMETHEUS = "prometheus"
JOB = "meridian"


class PromQLError(AssertionError):
    """Prometheus answered an error (a query that does not parse or cannot run)."""


@dataclass
class Prometheus:
    base_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    http: aiohttp.ClientSession

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def api(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.base_url}/api/v1/{path}", params=params) as response:
            body = await response.json(content_type=None)
        if body.get("status") != "success":
            raise PromQLError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's result: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = await self.api("query", query=expr)
        if data["resultType"] not in ("vector", "scalar"):
            raise PromQLError(f"{expr}: unexpected result type {data['resultType']}")
        result: list[dict[str, Any]] = (
            data["result"] if data["resultType"] == "vector" else [{"value": data["result"]}]
        )
        return result

    async def query_range(self, expr: str, seconds: float, step: str = "1s") -> Any:
        loop_time = await self.api("query", query="time()")
        end = float(loop_time["result"][0])
        return await self.api(
            "query_range", query=expr, start=str(end - seconds), end=str(end), step=step
        )

    async def by_labels(self, expr: str, *labels: str) -> dict[tuple[str, ...], float]:
        return {
            tuple(sample["metric"].get(label, "") for label in labels): float(sample["value"][1])
            for sample in await self.query(expr)
        }

    async def wait_for(
        self,
        expr: str,
        labels: tuple[str, ...],
        ok: Callable[[dict[tuple[str, ...], float]], bool],
        within: float = 15.0,
    ) -> dict[tuple[str, ...], float]:
        """Poll an instant query until `ok(result)` (bounded); the last result either way."""
        seen: dict[tuple[str, ...], float] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            seen = await self.by_labels(expr, *labels)
            if ok(seen):
                return seen
            await asyncio.sleep(0.25)
        raise AssertionError(f"{expr}: still {seen} after {within} s")


def prometheus_binary() -> str:
    binary = shutil.which(PROMETHEUS) or (
        "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
    )
    if binary is None:
        raise RuntimeError(
            "the Prometheus server is not installed: `make system-deps` installs it "
            "(Debian: apt-get install prometheus)"
        )
    return binary


def write_config(
    directory: Path, target: str | Sequence[str], rule_files: list[Path], interval: str
) -> Path:
    """prometheus.yml (as JSON, which YAML reads) scraping `target` as job "meridian".

    Several targets (the nodes of a cluster) are scraped alike and told apart by their
    `instance` label, as in a real deployment: the exporter itself adds no node label.
    """
    directory.mkdir(parents=True, exist_ok=True)
    targets = [target] if isinstance(target, str) else list(target)
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": targets}]}],
    }
    path = directory / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2))
    return path


@asynccontextmanager
async def running_prometheus(
    directory: Path, target: str | Sequence[str], rule_files: list[Path], interval: str = "1s"
) -> AsyncIterator[Prometheus]:
    """Prometheus on 127.0.0.1 scraping `target` (host:port, or several); killed at the end."""
    port = free_port()
    config = write_config(directory, target, rule_files, interval)
    log_path = directory / "prometheus.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: ASYNC220 - start-up only, returns at once
            [
                prometheus_binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            cwd=directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with aiohttp.ClientSession() as http:
            prometheus = Prometheus(f"http://127.0.0.1:{port}", process, log_path, http)
            for _ in range(150):
                try:
                    async with http.get(f"{prometheus.base_url}/-/ready") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if process.poll() is not None:
                    raise RuntimeError(f"Prometheus exited at start-up:\n{prometheus.log()}")
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError(f"Prometheus did not become ready:\n{prometheus.log()}")
            yield prometheus
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
