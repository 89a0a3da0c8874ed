"""Limits and load shedding: per-client rate limit (429), caps on viewers and on sessions
still connecting (503), pending sessions cleaned after the connect timeout, SDP line length
(400), no new sessions while draining (503), and a server out of sockets (503, not 500).

Every refusal is an RFC 9457 problem with `Retry-After` where the status calls for one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection

from config.settings import GeoSettings, LimitSettings, RelaySettings, Settings
from relay.negotiation import MAX_SDP_LINE_LENGTH
from relay.viewer import ViewerSession
from server.app import drain
from server.ratelimit import RateLimiter
from server.state import ADMISSION, SESSIONS
from tests import sdp_samples
from tests.conftest import TOKENS, make_settings, serving, url
from tests.metrics_probe import scrape
from tests.rtc_peers import publishing, rtc_config, watching
from tests.test_relay_e2e import wait_live

SDP = {"Content-Type": "application/sdp"}


def with_limits(relay: RelaySettings | None = None, **limits: Any) -> Settings:
    return dataclasses.replace(
        make_settings(), limits=LimitSettings(**limits), relay=relay or RelaySettings()
    )


async def recvonly_offer() -> str:
    """A real aiortc offer whose peer connection is closed at once: it will never connect."""
    pc = RTCPeerConnection(rtc_config())
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    offer = str(pc.localDescription.sdp)
    await pc.close()
    return offer


async def post(
    http: aiohttp.ClientSession, endpoint: str, body: str, **headers: str
) -> tuple[int, dict[str, str], Any]:
    async with http.post(endpoint, data=body, headers={**SDP, **headers}) as response:
        payload = await (
            response.json() if response.content_type.endswith("json") else response.text()
        )
        return response.status, dict(response.headers), payload


# ----------------------------------------------------------------------------- rate limit


def test_a_token_bucket_per_client_in_bounded_memory() -> None:
    now = [0.0]
    limiter = RateLimiter(clock=lambda: now[0])
    assert [limiter.take("a", 2.0, 3, 100) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 2.0, 3, 100) == pytest.approx(0.5)  # one more in 0.5 s
    assert limiter.take("b", 2.0, 3, 100) == 0.0  # another client has its own bucket
    now[0] = 0.5
    assert limiter.take("a", 2.0, 3, 100) == 0.0
    for index in range(1000):
        limiter.take(f"client-{index}", 2.0, 3, 100)
    assert len(limiter) == 100  # the least recently seen were forgotten


async def test_too_many_requests_from_one_address_get_429(http: aiohttp.ClientSession) -> None:
    settings = dataclasses.replace(
        with_limits(rate_per_second=0.5, rate_burst=3),
        geo=GeoSettings(trusted_proxies=("127.0.0.1/32",)),
    )
    async with serving(settings) as server:
        base = str(server.make_url(""))
        endpoint = url(server, "/whip/berlin")
        statuses = [(await post(http, endpoint, "v=0"))[0] for _ in range(3)]
        assert statuses == [401, 401, 401]  # counted, then refused for the missing token
        status, headers, problem = await post(http, endpoint, "v=0")
        assert status == 429
        assert int(headers["Retry-After"]) >= 1
        assert headers["Content-Type"].startswith("application/problem+json")
        assert "per second" in problem["detail"]
        # Reading is not limited; DELETE and PATCH are.
        async with http.get(url(server, "/api/studios")) as response:
            assert response.status == 200
        async with http.delete(url(server, "/whep/berlin/unknown-session")) as response:
            assert response.status == 429
        # Behind a trusted proxy each forwarded client has its own bucket; an IPv6 client
        # counts by its /64.
        forwarded = {"X-Forwarded-For": "203.0.113.7"}
        assert (await post(http, endpoint, "v=0", **forwarded))[0] == 401
        for host in range(1, 4):
            v6 = {"X-Forwarded-For": f"2001:db8:1:2::{host}"}
            assert (await post(http, endpoint, "v=0", **v6))[0] == 401
        assert (await post(http, endpoint, "v=0", **{"X-Forwarded-For": "2001:db8:1:2::9"}))[
            0
        ] == 429
        counted = (await scrape(http, base))["meridian_http_requests_total"]
        assert counted[(("code", "429"), ("method", "POST"), ("protocol", "whip"))] >= 2


# ----------------------------------------------------------------------------- caps


@asynccontextmanager
async def live_studios(
    http: aiohttp.ClientSession, server: TestServer, *studios: str
) -> AsyncIterator[None]:
    async with publishing(http, url(server, f"/whip/{studios[0]}"), TOKENS[studios[0]]):
        await wait_live(http, server, studios[0])
        if len(studios) > 1:
            async with live_studios(http, server, *studios[1:]):
                yield
        else:
            yield


async def test_viewer_caps_per_studio_and_per_node_answer_503(
    http: aiohttp.ClientSession,
) -> None:
    settings = with_limits(max_viewers_per_studio=2, max_viewers=3, retry_after=7)
    async with serving(settings) as s, live_studios(http, s, "berlin", "cairo"):
        async with (
            watching(http, url(s, "/whep/berlin")) as first,
            watching(http, url(s, "/whep/berlin")) as second,
        ):
            await first.frames(2)
            await second.frames(2)
            status, headers, problem = await post(
                http, url(s, "/whep/berlin"), await recvonly_offer()
            )
            assert (status, headers["Retry-After"]) == (503, "7")
            assert problem["type"].endswith("/studio-full")
            async with watching(http, url(s, "/whep/cairo")) as third:
                await third.frames(2)
                status, headers, problem = await post(
                    http, url(s, "/whep/cairo"), await recvonly_offer()
                )
                assert (status, headers["Retry-After"]) == (503, "7")
                assert problem["type"].endswith("/server-full")
                # Studios are never shed: a studio reconnecting still gets in.
                async with publishing(http, url(s, "/whip/berlin"), TOKENS["berlin"]):
                    await first.frames(5)
        # Once viewers leave there is room again. (Berlin's second publish took over and
        # has ended, so the room is checked on Cairo, which is still live.)
        async with watching(http, url(s, "/whep/cairo")) as again:
            await again.frames(2)


async def test_pending_sessions_are_capped_and_cleaned_after_the_connect_timeout(
    http: aiohttp.ClientSession,
) -> None:
    settings = with_limits(RelaySettings(connect_timeout=1.0), max_pending_sessions=2)
    assert RelaySettings().connect_timeout <= 30.0  # the default cleans them within 30 s
    async with serving(settings) as server, live_studios(http, server, "berlin"):
        endpoint = url(server, "/whep/berlin")
        started = time.monotonic()
        for _ in range(2):  # offers whose clients never do ICE
            assert (await post(http, endpoint, await recvonly_offer()))[0] == 201
        status, headers, problem = await post(http, endpoint, await recvonly_offer())
        assert status == 503 and headers["Retry-After"] == "5"
        assert problem["type"].endswith("/too-many-pending-sessions")
        assert server.app[ADMISSION].pending() == 2
        while server.app[SESSIONS].count("whep"):
            assert time.monotonic() - started < 3.0, "pending sessions were not cleaned"
            await asyncio.sleep(0.05)
        assert server.app[ADMISSION].pending() == 0
        ended = (await scrape(http, str(server.make_url(""))))[
            "meridian_viewer_sessions_ended_total"
        ]
        assert ended[(("reason", "timeout"), ("studio", "berlin"))] == 2
        # A viewer that does connect is not pending once connected.
        async with watching(http, endpoint) as viewer:
            await viewer.frames(2)
            assert server.app[ADMISSION].pending() == 0


# ----------------------------------------------------------------------------- SDP size


async def test_an_overlong_sdp_line_is_refused_naming_it(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    long_line = "a=x-padding:" + "z" * MAX_SDP_LINE_LENGTH
    lines = sdp_samples.lines_of(sdp_samples.offer("recvonly"))
    offer = sdp_samples.sdp([*lines[:4], long_line, *lines[4:]])
    status, _, problem = await post(http, url(server, "/whep/berlin"), offer)
    assert status == 400
    assert "SDP line 5 ('a=x-padding:" in problem["detail"]
    assert f"at most {MAX_SDP_LINE_LENGTH}" in problem["detail"]
    async with publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"]) as studio:
        assert studio.session.etag is not None
        headers = {
            "Content-Type": "application/trickle-ice-sdpfrag",
            "If-Match": studio.session.etag,
            "Authorization": f"Bearer {TOKENS['berlin']}",
        }
        async with http.patch(
            studio.session.url, data=f"a=mid:0\r\n{long_line}\r\n", headers=headers
        ) as response:
            assert response.status == 400
            assert "line 2" in (await response.json())["detail"]


# ----------------------------------------------------------------------------- refusals


async def test_no_new_session_while_draining(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    async with publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"]) as studio:
        await wait_live(http, server, "berlin")
        await drain(server.app, grace=2.0)
        assert studio.pc.connectionState in ("closed", "connected")  # goodbye on its way
        assert len(server.app[SESSIONS]) == 0
        for endpoint, token in [("/whep/berlin", None), ("/whip/berlin", TOKENS["berlin"])]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            status, response_headers, problem = await post(
                http, url(server, endpoint), await recvonly_offer(), **headers
            )
            assert (status, response_headers["Retry-After"]) == (503, "5"), endpoint
            assert "shutting down" in problem["detail"]


async def test_a_server_out_of_sockets_answers_503(
    server: TestServer, http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_sockets(self: ViewerSession, offer_sdp: str) -> str:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(ViewerSession, "answer", no_sockets)
    status, headers, problem = await post(http, url(server, "/whep/berlin"), await recvonly_offer())
    assert (status, headers["Retry-After"]) == (503, "5")
    assert problem["type"].endswith("/no-resources")
    assert len(server.app[SESSIONS]) == 0 and server.app[ADMISSION].pending() == 0
