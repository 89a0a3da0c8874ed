"""Reloading the configuration while live: SIGHUP on a real process, `POST /admin/reload`.

A rotated studio token takes effect for the next request while that studio's live session
and its viewers carry on; an added studio can publish at once; a removed studio's sessions
end cleanly (their peers see the connection closed, not a timeout); a configuration that
does not load changes nothing. Tokens never appear in the log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from config.loader import ConfigError
from config.settings import AdminSettings, ServerSettings, Settings, StudioSettings
from tests.conftest import TOKENS, make_settings, serving, url
from tests.metrics_probe import scrape
from tests.rtc_peers import publishing, watching
from tests.server_process import free_port, running_server, write_config
from tests.test_access import ADMIN, ADMIN_TOKEN, session_id, wait_closed
from tests.test_relay_e2e import wait_live

OLD_TOKEN = "berlin-old-token-0123456789"
NEW_TOKEN = "berlin-new-token-9876543210"
LIMA_TOKEN = "lima-token-0123456789abc"


async def whip_status(http: aiohttp.ClientSession, endpoint: str, token: str) -> int:
    """POST with a token and a body that is not SDP: 401 if the token is refused, else 415.

    No session is created either way, so a live studio is not taken over.
    """
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
    async with http.post(endpoint, data="hello", headers=headers) as response:
        return response.status


async def wait_live_at(http: aiohttp.ClientSession, base_url: str, studio: str) -> None:
    for _ in range(100):
        async with http.get(base_url + "/api/studios") as response:
            listing = (await response.json())["studios"]
        if next(s for s in listing if s["id"] == studio)["live"]:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"studio {studio} never went live")


async def test_a_reload_rotates_adds_and_removes_studios(http: aiohttp.ClientSession) -> None:
    first = dataclasses.replace(make_settings(), admin=AdminSettings(token=ADMIN_TOKEN))
    berlin, _ = first.studios
    second = dataclasses.replace(
        first,
        studios=(
            dataclasses.replace(berlin, token=NEW_TOKEN, name="Berlin (rotated)"),
            StudioSettings("lima", "Lima studio", "PE", "Lima", LIMA_TOKEN),
        ),
    )
    configured: list[Settings] = [second]

    def load(current: Settings) -> Settings:
        if not configured:
            raise ConfigError("studios[0].token_env: environment variable X is not set")
        return configured.pop(0)

    async with serving(first, reload=load) as server:
        base = str(server.make_url(""))
        async with (
            publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"]) as berlin_studio,
            publishing(http, url(server, "/whip/cairo"), TOKENS["cairo"]) as cairo_studio,
        ):
            await wait_live(http, server, "berlin")
            await wait_live(http, server, "cairo")
            async with (
                watching(http, url(server, "/whep/berlin")) as berlin_viewer,
                watching(http, url(server, "/whep/cairo")) as cairo_viewer,
            ):
                await berlin_viewer.frames(3)
                await cairo_viewer.frames(3)
                async with http.post(url(server, "/admin/reload"), headers=ADMIN) as response:
                    assert response.status == 200
                    assert await response.json() == {
                        "added": ["lima"],
                        "removed": ["cairo"],
                        "tokens_rotated": ["berlin"],
                        "restart_needed": [],
                    }
                # Cairo's studio and viewer are told goodbye at once.
                assert await wait_closed(cairo_studio.pc, within=3.0) < 3.0
                assert await wait_closed(cairo_viewer.pc, within=3.0) < 3.0
                # Berlin's studio stays live on its session, rotated token or not.
                assert berlin_studio.pc.connectionState == "connected"
                assert len(await berlin_viewer.frames(20)) == 20
                endpoint = url(server, "/whip/berlin")
                assert await whip_status(http, endpoint, TOKENS["berlin"]) == 401
                assert await whip_status(http, endpoint, NEW_TOKEN) == 415
                async with http.get(url(server, "/api/studios")) as response:
                    listing = {s["id"]: s for s in (await response.json())["studios"]}
                assert set(listing) == {"berlin", "lima"}
                assert listing["berlin"]["name"] == "Berlin (rotated)" and listing["berlin"]["live"]
                async with http.post(url(server, "/whep/cairo")) as response:
                    assert response.status == 404
                # The added studio publishes at once.
                async with publishing(http, url(server, "/whip/lima"), LIMA_TOKEN):
                    await wait_live(http, server, "lima")
        metrics = await scrape(http, base)
        assert {dict(labels)["studio"] for labels in metrics["meridian_studio_up"]} == {
            "berlin",
            "lima",
        }
        ended = metrics["meridian_viewer_sessions_ended_total"]
        assert ended[(("reason", "studio_removed"), ("studio", "cairo"))] == 1

        # A configuration that does not load changes nothing.
        async with http.post(url(server, "/admin/reload"), headers=ADMIN) as response:
            assert response.status == 422
            assert "token_env" in (await response.json())["detail"]
        assert await whip_status(http, url(server, "/whip/berlin"), NEW_TOKEN) == 415


async def test_a_reload_names_what_takes_effect_at_restart(http: aiohttp.ClientSession) -> None:
    first = dataclasses.replace(make_settings(), admin=AdminSettings(token=ADMIN_TOKEN))
    moved = dataclasses.replace(first, server=ServerSettings(port=9999, max_body_bytes=1000))
    async with (
        serving(first, reload=lambda current: moved) as server,
        http.post(url(server, "/admin/reload"), headers=ADMIN) as response,
    ):
        assert (await response.json())["restart_needed"] == ["server.port"]
    async with (
        serving(first) as server,  # built from settings in code: nothing to reload
        http.post(url(server, "/admin/reload"), headers=ADMIN) as response,
    ):
        assert response.status == 409


@pytest.mark.timeout(90)
async def test_sighup_rotates_a_token_while_the_studio_stays_live(
    tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    metrics_port = free_port()
    extra = (
        f'[server]\nmetrics_port = {metrics_port}\nmetrics_host = "127.0.0.1"\n'
        '[admin]\ntoken_env = "TEST_ADMIN_TOKEN"\n'
    )
    env = {"TEST_ADMIN_TOKEN": ADMIN_TOKEN, "MERIDIAN_LOG_LEVEL": "DEBUG"}
    async with running_server(
        tmp_path, {"berlin": OLD_TOKEN}, env=env, config_extra=extra
    ) as server:
        metrics_url = f"http://127.0.0.1:{metrics_port}"
        endpoint = server.base_url + "/whip/berlin"
        async with publishing(http, endpoint, OLD_TOKEN) as studio:
            await wait_live_at(http, server.base_url, "berlin")
            async with watching(http, server.base_url + "/whep/berlin") as viewer:
                await viewer.frames(5)
                write_config(tmp_path, {"berlin": NEW_TOKEN, "cairo": TOKENS["cairo"]}, extra)
                server.process.send_signal(signal.SIGHUP)
                started = time.monotonic()
                while await whip_status(http, endpoint, OLD_TOKEN) != 401:
                    assert time.monotonic() - started < 5.0, "the reload did not happen"
                    await asyncio.sleep(0.1)
                assert await whip_status(http, endpoint, NEW_TOKEN) == 415
                # The studio's session is the same one, still connected; media flows on.
                assert len(await viewer.frames(30)) == 30
                assert studio.pc.connectionState == "connected"
                async with http.get(server.base_url + "/admin/sessions", headers=ADMIN) as r:
                    sessions = {s["id"]: s for s in (await r.json())["sessions"]}
                assert sessions[session_id(studio.session)]["state"] == "connected"
                up = (await scrape(http, metrics_url))["meridian_studio_up"]
                assert up[(("studio", "berlin"),)] == 1.0 and up[(("studio", "cairo"),)] == 0.0
                async with http.get(server.base_url + "/api/studios") as response:
                    ids = [s["id"] for s in (await response.json())["studios"]]
                assert ids == ["berlin", "cairo"]
        # /metrics is on its own listener only.
        async with http.get(server.base_url + "/metrics") as response:
            assert response.status == 404
        log = server.log()
        assert "configuration reloaded" in log and "tokens_rotated=['berlin']" in log
        for secret in (OLD_TOKEN, NEW_TOKEN, ADMIN_TOKEN, TOKENS["cairo"]):
            assert secret not in log
