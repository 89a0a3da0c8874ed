"""Shared fixtures: a Meridian server on a real socket, studios with known tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from config.settings import DemoSettings, RelaySettings, Settings, StudioSettings
from server.app import create_app
from server.live_settings import SettingsLoader

TOKENS = {"berlin": "berlin-token-0123456789", "cairo": "cairo-token-0123456789"}


def make_settings(**relay: float | int) -> Settings:
    return Settings(
        studios=(
            StudioSettings("berlin", "Berlin studio", "DE", "Berlin", TOKENS["berlin"]),
            StudioSettings("cairo", "Cairo studio", "EG", "Cairo", TOKENS["cairo"]),
        ),
        demo=DemoSettings(enabled=False),
        relay=RelaySettings(**relay),  # type: ignore[arg-type]
    )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def server(registry: CollectorRegistry) -> AsyncIterator[TestServer]:
    test_server = TestServer(create_app(make_settings(), registry), host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def url(server: TestServer, path: str) -> str:
    return str(server.make_url(path))


@asynccontextmanager
async def serving(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    reload: SettingsLoader | None = None,
) -> AsyncIterator[TestServer]:
    """A server on a real socket with these settings (and a loader for reloads)."""
    app = create_app(settings, registry or CollectorRegistry(), reload=reload)
    test_server = TestServer(app, host="127.0.0.1")
    await test_server.start_server()
    try:
        yield test_server
    finally:
        await test_server.close()
