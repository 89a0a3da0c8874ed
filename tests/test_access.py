"""Access: viewer tokens for private studios, the admin API behind its token, /metrics apart.

Viewer tokens are JWTs signed with HS256; the tests check them against tokens built here by
hand (as any JWT library or ticketing system would build them), then over WHEP with real
aiortc viewers. The admin API is exercised with a real studio and viewers: listing shows no
address or token, and a kicked viewer sees its connection closed.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection
from prometheus_client import CollectorRegistry

from clients.webrtc_client import RemoteSession
from config.loader import ConfigError, load_settings
from config.settings import (
    AdminSettings,
    ServerSettings,
    Settings,
    ViewerTokenSettings,
)
from server import viewer_tokens
from server.api import metrics_app
from server.viewer_tokens import LEEWAY_SECONDS, ViewerTokenError, verify
from server.webrtc_http import same_token
from tests.conftest import TOKENS, make_settings, serving, url
from tests.metrics_probe import scrape
from tests.rtc_peers import publishing, rtc_config, watching
from tests.test_relay_e2e import wait_live

SECRET = "viewer-token-secret-0123456789-abcdefghij"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SDP = {"Content-Type": "application/sdp"}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made_jwt(claims: dict[str, Any], secret: str = SECRET, alg: str = "HS256") -> str:
    """A JWT built the way the RFCs say, with JSON spacing unlike Meridian's own."""
    header = b64url(json.dumps({"typ": "JWT", "alg": alg}).encode())
    payload = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{header}.{payload}".encode(), hashlib.sha256)
    return f"{header}.{payload}.{b64url(signature.digest())}"


def private_berlin(**changes: Any) -> Settings:
    """Berlin requires viewer tokens, Cairo stays open."""
    base = make_settings()
    studios = tuple(
        dataclasses.replace(s, require_viewer_token=s.id == "berlin") for s in base.studios
    )
    return dataclasses.replace(
        base, studios=studios, viewer_tokens=ViewerTokenSettings(secret=SECRET), **changes
    )


# ----------------------------------------------------------------------------- tokens


def test_a_token_admits_its_studio_until_it_expires() -> None:
    token = viewer_tokens.issue(SECRET, "berlin", 60, now=1_000_000)
    assert verify(SECRET, token, "berlin", now=1_000_000)["studio"] == "berlin"
    assert verify(SECRET, token, "berlin", now=1_000_060 + LEEWAY_SECONDS - 1)
    with pytest.raises(ViewerTokenError, match="expired"):
        verify(SECRET, token, "berlin", now=1_000_060 + LEEWAY_SECONDS + 1)
    # Any JWT library's HS256 token with the same claims is as good.
    other = hand_made_jwt({"studio": "berlin", "exp": 1_000_060})
    assert verify(SECRET, other, "berlin", now=1_000_000)["exp"] == 1_000_060


NOW = 1_000_000.0
GOOD = {"studio": "berlin", "exp": NOW + 600}


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (hand_made_jwt({**GOOD, "studio": "cairo"}), "not for studio 'berlin'"),
        (hand_made_jwt(GOOD, secret="another-secret-0123456789-abcdefgh"), "signature"),
        (hand_made_jwt(GOOD, alg="none").rpartition(".")[0] + ".", "HS256"),
        (hand_made_jwt(GOOD, alg="HS512"), "HS256"),
        (hand_made_jwt({"studio": "berlin"}), "no expiry"),
        (hand_made_jwt({**GOOD, "exp": "tomorrow"}), "not a number"),
        (hand_made_jwt({**GOOD, "nbf": NOW + 3600}), "not valid yet"),
        (hand_made_jwt({**GOOD, "exp": NOW - 3600}), "expired"),
        ("not-a-jwt", "not a JWT"),
        ("a.b.c", "well-formed"),
        ("e30.e30.!!!", "well-formed"),
        ("x" * 5000, "longer than"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(token: str, reason: str) -> None:
    with pytest.raises(ViewerTokenError, match=reason):
        verify(SECRET, token, "berlin", now=NOW)


async def post_offer(http: aiohttp.ClientSession, endpoint: str, token: str | None) -> Any:
    headers = dict(SDP)
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    pc = RTCPeerConnection(rtc_config())
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    try:
        async with http.post(endpoint, data=pc.localDescription.sdp, headers=headers) as response:
            return response.status, dict(response.headers), await response.json()
    finally:
        await pc.close()


async def test_a_private_studio_admits_only_viewers_with_its_token(
    http: aiohttp.ClientSession,
) -> None:
    async with serving(private_berlin()) as server:
        berlin = url(server, "/whep/berlin")
        async with (
            publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"]),
            publishing(http, url(server, "/whip/cairo"), TOKENS["cairo"]),
        ):
            await wait_live(http, server, "berlin")
            await wait_live(http, server, "cairo")
            status, headers, problem = await post_offer(http, berlin, None)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
            assert "viewer token" in problem["detail"]

            now = time.time()
            refused = {
                "expired": hand_made_jwt({"studio": "berlin", "exp": now - 600}),
                "not for studio": viewer_tokens.issue(SECRET, "cairo", 600),
                "signature": hand_made_jwt({"studio": "berlin", "exp": now + 600}, secret="x" * 40),
            }
            for reason, token in refused.items():
                status, headers, problem = await post_offer(http, berlin, token)
                assert status == 401, reason
                assert 'error="invalid_token"' in headers["WWW-Authenticate"], reason
                assert reason in problem["detail"]

            # A valid token: the viewer watches; the open studio needs none.
            token = viewer_tokens.issue(SECRET, "berlin", 600)
            async with watching(http, berlin, ("video",), token) as viewer:
                assert len(await viewer.frames(5)) == 5
            async with watching(http, url(server, "/whep/cairo")) as viewer:
                assert len(await viewer.frames(5)) == 5


def test_private_studios_need_a_secret_from_env_or_file(tmp_path: Path) -> None:
    studio = (
        '[[studios]]\nid = "kyiv"\nname = "Kyiv"\ncountry = "UA"\n'
        'token = "kyiv-token-0123456789"\nrequire_viewer_token = true\n'
    )
    config = tmp_path / "meridian.toml"
    config.write_text(studio)
    with pytest.raises(ConfigError, match=r"studios\[0\]\.require_viewer_token: needs"):
        load_settings(config, {})
    config.write_text('[viewer_tokens]\nsecret_env = "VIEWER_SECRET"\n' + studio)
    settings = load_settings(config, {"VIEWER_SECRET": SECRET})
    assert settings.viewer_tokens.secret == SECRET
    assert settings.studios[0].require_viewer_token
    (tmp_path / "secret.txt").write_text(SECRET + "\n")
    config.write_text('[viewer_tokens]\nsecret_file = "secret.txt"\n' + studio)
    assert load_settings(config, {}).viewer_tokens.secret == SECRET
    config.write_text('[viewer_tokens]\nsecret = "short"\n' + studio)
    with pytest.raises(ConfigError, match=r"viewer_tokens\.secret: must be at least 32"):
        load_settings(config, {})


def test_the_admin_token_and_metrics_listener_are_configured(tmp_path: Path) -> None:
    config = tmp_path / "meridian.toml"
    config.write_text('[admin]\ntoken_env = "ADMIN"\n')
    assert load_settings(config, {"ADMIN": ADMIN_TOKEN}).admin.token == ADMIN_TOKEN
    with pytest.raises(ConfigError, match=r"admin\.token_env: environment variable ADMIN"):
        load_settings(config, {})
    assert load_settings(None, {}).admin.token == ""  # no admin API
    environ = {"MERIDIAN_SERVER__METRICS_PORT": "9100", "MERIDIAN_SERVER__METRICS_HOST": "::1"}
    server = load_settings(None, environ).server
    assert (server.metrics_host, server.metrics_port) == ("::1", 9100)
    with pytest.raises(ConfigError, match=r"server\.metrics_port: must differ from server\.port"):
        load_settings(None, {"MERIDIAN_SERVER__METRICS_PORT": "8080"})
    with pytest.raises(ConfigError, match=r"limits\.rate_burst \(from .*\): must be a positive"):
        load_settings(None, {"MERIDIAN_LIMITS__RATE_BURST": "0"})


def test_a_reload_keeps_the_demo_token() -> None:
    first = load_settings(None, {})
    demo = first.studio("demo")
    assert demo is not None
    again = load_settings(None, {}, demo_token=demo.token)
    assert again.studio("demo") == demo


# ----------------------------------------------------------------------------- admin API


async def test_the_admin_api_is_off_without_its_token(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    for method, path in [
        ("GET", "/admin/sessions"),
        ("POST", "/admin/reload"),
        ("DELETE", "/admin/sessions/abc"),
        ("POST", "/admin/viewer-tokens"),
        ("GET", "/admin/memory"),
    ]:
        async with http.request(method, url(server, path), headers=ADMIN) as response:
            assert response.status == 404, path
            assert response.content_type == "application/problem+json"


async def wait_closed(pc: RTCPeerConnection, within: float) -> float:
    """Seconds until `pc` is closed by its peer (a clean goodbye, not a failure)."""
    started = time.monotonic()
    while pc.connectionState != "closed":
        assert pc.connectionState != "failed"
        assert time.monotonic() - started < within, f"still {pc.connectionState}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


def session_id(session: RemoteSession | None) -> str:
    assert session is not None
    return session.url.rsplit("/", 1)[1]


async def test_admin_lists_and_kicks_sessions(http: aiohttp.ClientSession) -> None:
    registry = CollectorRegistry()
    settings = dataclasses.replace(make_settings(), admin=AdminSettings(token=ADMIN_TOKEN))
    async with serving(settings, registry) as server:
        sessions_url = url(server, "/admin/sessions")
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
            async with http.get(sessions_url, headers=headers) as response:
                assert response.status == 401
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
        async with publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"]) as studio:
            await wait_live(http, server, "berlin")
            async with (
                watching(http, url(server, "/whep/berlin")) as staying,
                watching(http, url(server, "/whep/berlin")) as kicked,
            ):
                await staying.frames(3)
                await kicked.frames(3)
                async with http.get(sessions_url, headers=ADMIN) as response:
                    assert response.status == 200
                    text = await response.text()
                listing = {s["id"]: s for s in json.loads(text)["sessions"]}
                assert "127.0.0.1" not in text and TOKENS["berlin"] not in text
                assert set(listing) == {session_id(s.session) for s in (studio, staying, kicked)}
                whip = listing[session_id(studio.session)]
                assert whip.keys() == {
                    "id",
                    "protocol",
                    "studio",
                    "country",
                    "state",
                    "age_seconds",
                }
                assert (whip["protocol"], whip["studio"], whip["country"]) == (
                    "whip",
                    "berlin",
                    "DE",
                )
                assert whip["state"] == "connected" and whip["age_seconds"] > 0
                whep = listing[session_id(kicked.session)]
                assert (whep["protocol"], whep["country"], whep["state"]) == (
                    "whep",
                    "unknown",
                    "connected",
                )

                kick_url = url(server, f"/admin/sessions/{session_id(kicked.session)}")
                async with http.delete(kick_url, headers=ADMIN) as response:
                    assert response.status == 200
                # The kicked viewer sees a clean closure at once; the other one watches on.
                assert await wait_closed(kicked.pc, within=3.0) < 3.0
                await staying.frames(10)
                async with http.delete(kick_url, headers=ADMIN) as response:
                    assert response.status == 404
                async with http.get(sessions_url, headers=ADMIN) as response:
                    assert len((await response.json())["sessions"]) == 2
        ended = (await scrape(http, str(server.make_url(""))))[
            "meridian_viewer_sessions_ended_total"
        ]
        assert ended[(("reason", "kicked"), ("studio", "berlin"))] == 1


async def test_admin_mints_viewer_tokens(http: aiohttp.ClientSession) -> None:
    settings = private_berlin(admin=AdminSettings(token=ADMIN_TOKEN))
    async with serving(settings) as server:
        mint = url(server, "/admin/viewer-tokens")
        async with http.post(mint, json={"studio": "berlin", "ttl": 120}, headers=ADMIN) as r:
            assert r.status == 200
            minted = await r.json()
        assert verify(SECRET, minted["token"], "berlin")["exp"] == minted["expires_at"]
        assert abs(minted["expires_at"] - (time.time() + 120)) < 5
        for body, status in [
            ({"studio": "atlantis"}, 404),
            ({"studio": "berlin", "ttl": -1}, 400),
            ({"studio": "berlin", "ttl": "long"}, 400),
            ({"ttl": 60}, 400),
        ]:
            async with http.post(mint, json=body, headers=ADMIN) as r:
                assert r.status == status, body
        async with http.post(mint, data=b"{", headers=ADMIN) as r:
            assert r.status == 400


async def test_metrics_can_have_a_listener_of_their_own(http: aiohttp.ClientSession) -> None:
    registry = CollectorRegistry()
    settings = dataclasses.replace(
        make_settings(), server=ServerSettings(metrics_port=9100, metrics_host="127.0.0.1")
    )
    async with serving(settings, registry) as server:
        async with http.get(url(server, "/metrics")) as response:
            assert response.status == 404  # not on the public port
        metrics_server = TestServer(metrics_app(registry), host="127.0.0.1")
        await metrics_server.start_server()
        try:
            async with http.get(url(metrics_server, "/metrics")) as response:
                assert response.status == 200
                assert 'meridian_studio_up{studio="berlin"} 0.0' in await response.text()
        finally:
            await metrics_server.close()


def test_tokens_with_bytes_that_are_not_utf8_simply_do_not_match() -> None:
    # aiohttp keeps such header bytes as surrogates; comparing them must not raise.
    assert not same_token("\udc96", ADMIN_TOKEN)
    assert same_token(ADMIN_TOKEN, ADMIN_TOKEN)
    with pytest.raises(ViewerTokenError, match="not a JWT"):
        verify(SECRET, "\udc96", "berlin")
