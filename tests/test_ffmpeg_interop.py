"""FFmpeg's WHIP muxer against Meridian: a real third-party studio over real UDP.

See /work/shared/INTEROP.md: FFmpeg 9's muxer answers no ICE consent checks, so
only media arriving counts as its consent, and FFmpeg 8.0 sent offers whose BUNDLE
group names an m-line that is not there. Broken offers must get a clear 4xx.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack
from prometheus_client.parser import text_string_to_metric_families

from server.sessions import SessionResource
from server.state import SESSIONS
from tests.conftest import TOKENS, url
from tests.ffmpeg_studio import HEIGHT, WIDTH, FFmpegStudio, capture_ffmpeg_offer, ffmpeg_publishing
from tests.rtc_peers import ColourTrack, prefer, rtc_config, watching

LONG_PUBLISH_SECONDS = 75.0
SAMPLE_EVERY_SECONDS = 5.0


# ----------------------------------------------------------------------------- helpers


async def studio_listing(
    http: aiohttp.ClientSession, server: TestServer, studio: str
) -> dict[str, Any]:
    async with http.get(url(server, "/api/studios")) as response:
        assert response.status == 200
        listing: list[dict[str, Any]] = (await response.json())["studios"]
    return next(s for s in listing if s["id"] == studio)


async def wait_until_live(
    http: aiohttp.ClientSession,
    server: TestServer,
    studio: FFmpegStudio,
    within: float = 15.0,
) -> None:
    """FFmpeg's studio shows live (bounded); fail with FFmpeg's log if it does not."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await studio_listing(http, server, "berlin"))["live"]:
            return
        if not studio.running:
            break
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"berlin never went live (FFmpeg exit {studio.process.returncode}):\n{studio.log_tail()}"
    )


def whip_sessions(server: TestServer) -> list[SessionResource]:
    return [r for r in server.app[SESSIONS].all() if r.protocol == "whip"]


async def studio_sessions_ended(
    http: aiohttp.ClientSession, server: TestServer, studio: str
) -> dict[str, float]:
    """meridian_studio_sessions_ended_total for one studio, by reason."""
    async with http.get(url(server, "/metrics")) as response:
        text = await response.text()
    ended: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "meridian_studio_sessions_ended":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels["studio"] == studio:
                ended[sample.labels["reason"]] = sample.value
    return ended


def endpoint(server: TestServer, studio: str = "berlin") -> str:
    return url(server, f"/whip/{studio}")


# ----------------------------------------------------------------------------- publishing


async def test_ffmpeg_publishes_h264_and_opus_to_viewers(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    async with ffmpeg_publishing(endpoint(server), TOKENS["berlin"], seconds=30) as studio:
        await wait_until_live(http, server, studio)
        listing = await studio_listing(http, server, "berlin")
        assert listing["codecs"] == {"video": "video/H264", "audio": "audio/opus"}, listing
        assert len(whip_sessions(server)) == 1

        async with watching(http, url(server, "/whep/berlin")) as viewer:
            frames = await viewer.frames(20)
            assert await viewer.audio_frames(10) == 10
        last = frames[-1]
        assert (last.width, last.height) == (WIDTH, HEIGHT)
        # testsrc draws colour bars, a gradient and a counter: never a flat picture.
        assert float(np.std(last.to_ndarray(format="rgb24"))) > 20.0
        assert studio.running, studio.log_tail()


@pytest.mark.timeout(180)
async def test_ffmpeg_stays_live_although_it_answers_no_consent_checks(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    """aioice alone would drop FFmpeg after ~30 s; media arriving must count as consent."""
    seconds = LONG_PUBLISH_SECONDS + 45  # FFmpeg must still be sending when the viewer joins
    async with ffmpeg_publishing(endpoint(server), TOKENS["berlin"], seconds=seconds) as studio:
        await wait_until_live(http, server, studio)
        sessions = whip_sessions(server)
        assert len(sessions) == 1
        first = sessions[0]
        live_since = time.monotonic()

        samples: list[tuple[float, bool]] = []
        while (elapsed := time.monotonic() - live_since) < LONG_PUBLISH_SECONDS:
            live = bool((await studio_listing(http, server, "berlin"))["live"])
            samples.append((round(elapsed, 1), live))
            assert live, (
                f"berlin went off air after {elapsed:.0f} s: {samples}; WHIP session "
                f"ended: {first.session.end_reason}; FFmpeg:\n{studio.log_tail()}"
            )
            assert whip_sessions(server) == [first], (
                f"the WHIP session changed after {elapsed:.0f} s "
                f"(ended: {first.session.end_reason}):\n{studio.log_tail()}"
            )
            assert studio.running, f"FFmpeg exited after {elapsed:.0f} s:\n{studio.log_tail()}"
            await asyncio.sleep(min(SAMPLE_EVERY_SECONDS, LONG_PUBLISH_SECONDS - elapsed))

        assert len(samples) >= LONG_PUBLISH_SECONDS // SAMPLE_EVERY_SECONDS
        assert first.session.end_reason is None
        assert await studio_sessions_ended(http, server, "berlin") == {}

        async with watching(http, url(server, "/whep/berlin")) as viewer:
            frames = await viewer.frames(10)
        assert (frames[-1].width, frames[-1].height) == (WIDTH, HEIGHT)
        assert whip_sessions(server) == [first]
        assert studio.running, studio.log_tail()


@pytest.mark.parametrize("how", ["sigterm", "q"])
async def test_stopping_ffmpeg_deletes_its_session(
    server: TestServer, http: aiohttp.ClientSession, how: str
) -> None:
    async with ffmpeg_publishing(endpoint(server), TOKENS["berlin"], seconds=30) as studio:
        await wait_until_live(http, server, studio)
        (resource,) = whip_sessions(server)

        if how == "sigterm":
            # FFmpeg ends the output cleanly, then exits 255 ("received signal 15").
            assert await studio.terminate() in (0, 255), studio.log_tail()
        else:
            assert await studio.quit() == 0, studio.log_tail()

        # FFmpeg's muxer sends its WHIP DELETE before it exits.
        assert resource.session.end_reason == "deleted", studio.log_tail()
        assert whip_sessions(server) == []
        assert await studio_sessions_ended(http, server, "berlin") == {"deleted": 1.0}
        deadline = time.monotonic() + 5.0
        while (await studio_listing(http, server, "berlin"))["live"]:
            assert time.monotonic() < deadline, "berlin still live 5 s after FFmpeg stopped"
            await asyncio.sleep(0.1)
        await asyncio.wait_for(resource.session.ended.wait(), 5.0)


# ----------------------------------------------------------------------------- broken offers


async def aiortc_offer() -> str:
    """What an aiortc studio offers: H.264 video and Opus audio, sendonly, BUNDLEd."""
    pc = RTCPeerConnection(rtc_config())
    try:
        pc.addTransceiver(ColourTrack((0, 0, 0)), direction="sendonly")
        prefer(pc, "video", "video/H264")
        pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


async def real_offer(client: str) -> str:
    return await (capture_ffmpeg_offer() if client == "ffmpeg" else aiortc_offer())


def lines_of(offer: str) -> list[str]:
    return offer.replace("\r\n", "\n").strip().split("\n")


def sdp_of(lines: list[str]) -> str:
    return "\r\n".join(lines) + "\r\n"


def drop_first_m_line(offer: str) -> tuple[str, str]:
    """FFmpeg 8.0's bug: the BUNDLE group still names an m-line that is not in the offer.

    The first m-section goes, the a=group:BUNDLE line stays; returns the missing mid.
    """
    lines = lines_of(offer)
    starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
    assert len(starts) >= 2, offer
    section = lines[starts[0] : starts[1]]
    mid = next(line.removeprefix("a=mid:") for line in section if line.startswith("a=mid:"))
    assert any(line.startswith("a=group:BUNDLE") and mid in line.split() for line in lines)
    return sdp_of(lines[: starts[0]] + lines[starts[1] :]), mid


def drop_lines(offer: str, prefix: str) -> str:
    lines = lines_of(offer)
    assert any(line.startswith(prefix) for line in lines), f"no {prefix} in\n{offer}"
    return sdp_of([line for line in lines if not line.startswith(prefix)])


Breakage = Callable[[str], tuple[str, list[str]]]


def bundle_names_missing_mid(offer: str) -> tuple[str, list[str]]:
    broken, mid = drop_first_m_line(offer)
    return broken, ["BUNDLE", mid]


def no_fingerprint(offer: str) -> tuple[str, list[str]]:
    return drop_lines(offer, "a=fingerprint:"), ["fingerprint"]


def no_ice_ufrag(offer: str) -> tuple[str, list[str]]:
    return drop_lines(offer, "a=ice-ufrag:"), ["ice-ufrag"]


BREAKAGES: dict[str, Breakage] = {
    "bundle-names-missing-mid": bundle_names_missing_mid,
    "no-fingerprint": no_fingerprint,
    "no-ice-ufrag": no_ice_ufrag,
}


async def post_offer(
    http: aiohttp.ClientSession, server: TestServer, offer: str
) -> tuple[int, str, dict[str, Any]]:
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {TOKENS['berlin']}"}
    async with http.post(endpoint(server), data=offer, headers=headers) as response:
        body = await response.read()
        problem = await response.json(content_type=None) if body.startswith(b"{") else {}
        return response.status, response.content_type, problem


def mentions(detail: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", detail) is not None


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
@pytest.mark.parametrize("client", ["ffmpeg", "aiortc"])
async def test_broken_offers_get_a_clear_400(
    server: TestServer, http: aiohttp.ClientSession, client: str, breakage: str
) -> None:
    broken, expected_words = BREAKAGES[breakage](await real_offer(client))

    status, content_type, problem = await post_offer(http, server, broken)

    assert status == 400, (status, problem)
    assert content_type == "application/problem+json"
    assert problem["status"] == 400
    assert isinstance(problem.get("title"), str) and isinstance(problem.get("type"), str)
    detail = problem["detail"]
    assert isinstance(detail, str)
    for word in expected_words:
        assert mentions(detail, word), f"{word!r} not in detail {detail!r}"
    assert whip_sessions(server) == [], "a refused offer left a session behind"
    assert not (await studio_listing(http, server, "berlin"))["live"]


async def test_ffmpeg_publishes_after_broken_offers(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    offers = [await capture_ffmpeg_offer(), await aiortc_offer()]
    for offer in offers:
        for breakage in BREAKAGES.values():
            broken, _ = breakage(offer)
            status, content_type, _ = await post_offer(http, server, broken)
            assert (status, content_type) == (400, "application/problem+json")

    async with ffmpeg_publishing(endpoint(server), TOKENS["berlin"], seconds=30) as studio:
        await wait_until_live(http, server, studio)
        async with watching(http, url(server, "/whep/berlin")) as viewer:
            frames = await viewer.frames(5)
        assert (frames[-1].width, frames[-1].height) == (WIDTH, HEIGHT)
