"""meridian-client.js in Chromium: the WHIP/WHEP protocol as the module speaks it.

Its SDP-fragment, Link and Retry-After helpers; trickle ICE by PATCH; an ICE restart
attempt that Meridian refuses (422) followed by a fresh session; DELETE on stop.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.browser_helpers import (
    assert_plays,
    base_url,
    chromium,
    meridian_server,
    token_for,
    wait_until,
)
from tests.metrics_probe import scrape
from tests.rtc_peers import publishing

OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
    "a=ice-ufrag:EsAw\r\na=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\n"
)
HELPERS = """async ([offer]) => {
  const m = await import('/static/meridian-client.js');
  const candidate = 'candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host';
  return {
    fragment: m.buildSdpFragment(offer, [{candidate, sdpMid: '0', sdpMLineIndex: 0}],
                                 {endOfCandidates: true}),
    empty: m.buildSdpFragment(offer, []),
    parsed: m.parseSdpFragment('a=ice-ufrag:abcd\\r\\na=ice-pwd:0123456789abcdefghijkl\\r\\n'
                               + 'a=' + candidate + '\\r\\n'),
    links: m.parseIceServerLinks('<stun:stun.example.net>; rel="ice-server", '
      + '<turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; '
      + 'credential="secret"; credential-type="password", <https://x.example>; rel="help"'),
    retrySeconds: m.parseRetryAfter('7'),
    retryDate: m.parseRetryAfter(new Date(Date.now() + 30000).toUTCString()),
    retryNone: m.parseRetryAfter(null),
    states: Object.values(m.States),
  };
}"""


async def requests_answered(http: aiohttp.ClientSession, base: str, method: str, code: int) -> int:
    samples = (await scrape(http, base)).get("meridian_http_requests_total", {})
    key = (("code", str(code)), ("method", method), ("protocol", "whep"))
    return int(samples.get(key, 0))


async def test_the_client_module_builds_and_parses_what_rfc_9725_says() -> None:
    async with meridian_server() as server, chromium() as browser:
        page = await browser.page(f"{base_url(server)}/audience")
        result: dict[str, Any] = await page.evaluate(HELPERS, [OFFER])
    assert result["fragment"].split("\r\n") == [
        "a=group:BUNDLE 0 1",
        "a=ice-ufrag:EsAw",
        "a=ice-pwd:bP+XJMM09aR8AiX1jdukzR6Y",
        "m=audio 9 UDP/TLS/RTP/SAVPF 0",
        "a=mid:0",
        "a=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host",
        "a=end-of-candidates",
        "",
    ]
    assert "a=mid:0" in result["empty"] and "a=candidate" not in result["empty"]
    assert result["parsed"] == {
        "ufrag": "abcd",
        "pwd": "0123456789abcdefghijkl",
        "candidates": ["a=candidate:1 1 udp 2130706431 192.0.2.1 50000 typ host"],
    }
    assert result["links"] == [
        {"urls": "stun:stun.example.net"},
        {"urls": "turn:turn.example.net?transport=udp", "username": "user", "credential": "secret"},
    ]
    assert result["retrySeconds"] == 7
    assert 28 <= result["retryDate"] <= 31
    assert result["retryNone"] is None
    assert result["states"] == [
        "idle", "connecting", "offline", "retrying", "connected", "reconnecting", "failed", "closed"
    ]  # fmt: skip


@pytest.mark.timeout(90)
async def test_trickle_restart_refused_then_fresh_session_then_delete() -> None:
    async with (
        meridian_server() as server,
        chromium() as browser,
        aiohttp.ClientSession() as http,
    ):
        base = base_url(server)
        async with publishing(http, f"{base}/whip/berlin", token_for("berlin")):
            viewer = await browser.page(f"{base}/watch/berlin")
            await assert_plays(viewer, codec="video/H264", width=320, height=240)
            # Trickle ICE: the candidates gathered after the offer went by PATCH (204); media
            # may flow first (peer-reflexive candidates), and Chrome's mDNS candidates can
            # keep the server resolving them for a while before it answers.
            await wait_until(
                lambda: requests_answered(http, base, "PATCH", 204),
                lambda n: n >= 1,
                within=15,
                what="a trickle ICE PATCH answered 204",
            )
            first = await viewer.evaluate("window.meridianWatch.player.resourceUrl")
            assert first.startswith(f"{base}/whep/berlin/")

            # A network change: the client tries an ICE restart; Meridian answers 422
            # (no ICE restarts), so the client ends the session and sets up a new one.
            await viewer.evaluate("window.meridianWatch.player.reconnect('test')")
            await wait_until(
                lambda: requests_answered(http, base, "PATCH", 422),
                lambda n: n == 1,
                within=10,
                what="the ICE restart PATCH",
            )
            second = await wait_until(
                lambda: viewer.evaluate("window.meridianWatch.player.resourceUrl"),
                lambda url: bool(url) and url != first,
                within=15,
                what="a fresh session",
            )
            await assert_plays(viewer, codec="video/H264", width=320, height=240)
            assert await requests_answered(http, base, "DELETE", 200) == 1
            assert await viewer.evaluate("window.meridianWatch.player.retries") == 1

            # stop(): DELETE on the session URL, and the relay forgets the viewer at once.
            await viewer.evaluate("window.meridianWatch.player.stop()")
            assert await requests_answered(http, base, "DELETE", 200) == 2
            async with http.delete(second) as response:
                assert response.status == 404
            assert await viewer.evaluate("window.meridianWatch.player.state") == "closed"
