"""Media is forwarded as RTP: viewers decode frames from a relay that cannot decode or encode."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.rtc_peers import close_to, mean_colour, publishing, watching
from tests.server_process import running_server

TOKEN = "paris-token-0123456789"


@pytest.mark.parametrize("codec", ["video/H264", "video/VP8"])
async def test_viewers_decode_what_a_codec_less_relay_forwards(tmp_path: Path, codec: str) -> None:
    trap = tmp_path / "codec-trap.txt"
    colour = (50, 70, 220)
    async with (
        running_server(
            tmp_path,
            {"paris": TOKEN},
            script="tests/no_codec_server.py",
            env={"MERIDIAN_CODEC_TRAP": str(trap)},
        ) as server,
        aiohttp.ClientSession() as http,
        publishing(http, server.base_url + "/whip/paris", TOKEN, video=codec, colour=colour),
    ):
        for _ in range(50):
            async with http.get(server.base_url + "/api/studios") as response:
                if (await response.json())["studios"][0]["live"]:
                    break
            await asyncio.sleep(0.1)
        async with (
            watching(http, server.base_url + "/whep/paris") as first,
            watching(http, server.base_url + "/whep/paris") as second,
        ):
            for viewer in (first, second):
                frames = await viewer.frames(15)
                assert close_to(mean_colour(frames[-1]), colour)
                assert await viewer.audio_frames(10) == 10
        assert not trap.exists(), trap.read_text()
        assert "Traceback" not in server.log(), server.log()

        # SIGTERM ends every session cleanly and the process exits promptly.
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=10) == 0
        assert time.monotonic() - started < 5
        assert "reason=shutdown" in server.log()
