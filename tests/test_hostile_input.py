"""Hostile input, property-based: whatever a client sends, Meridian answers it (never with a
5xx), and nothing it sends leaves a session, a task, a peer connection or a socket behind.

Hypothesis draws offers, trickle fragments, headers and JSON documents, mostly by mutating
real ones (aiortc's, Chromium's and FFmpeg's offers and fragments in `fuzz/corpus/`:
lines deleted, duplicated, swapped, cut, tokens replaced, m-sections repeated), and sends
them through the parsers and through HTTP to a real server:

- the offer path (`parse_offer`, `require_*`) and the trickle path (`parse_sdpfrag`, then
  each candidate as PATCH adds it) accept or refuse with the refusal that becomes a 4xx;
- WHIP POST; WHEP POST to a live studio (so that aiortc negotiates every accepted offer);
  PATCH on the live sessions of a real studio and a real viewer, which keep their media;
- every route with random methods, paths, query strings, headers (forwarding and country
  headers believed from loopback here, bearer tokens, viewer tokens, CORS) and JSON bodies
  for the admin API; raw header bytes that are not UTF-8 and request targets in absolute
  form, over a socket;
- after each HTTP test the server holds no session, its task count, the number of live
  peer connections and the process's open files are back where they started.

Bodies pass through `fuzz.common.loopback_only`, so a drawn ICE candidate can only point at
this machine. Failures found so far are kept as explicit examples and in `fuzz/corpus/`.
`MERIDIAN_HOSTILE_SCALE=10` runs ten times the examples (the default suits CI).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import os
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from fuzz.common import (
    ADMIN_TOKEN,
    STUDIO_TOKEN,
    VIEWER_TOKEN_SECRET,
    check_offer,
    check_sdpfrag,
    corpus,
    hostile_settings,
    loopback_only,
)
from fuzz.http_raw import RawClient, Request
from server.app import create_app
from server.state import SESSIONS
from server.viewer_tokens import issue
from tests.conftest import TOKENS
from tests.rtc_peers import Studio, Viewer, close_to, mean_colour, publishing, watching

SCALE = float(os.environ.get("MERIDIAN_HOSTILE_SCALE", "1"))
SDP, SDPFRAG = "application/sdp", "application/trickle-ice-sdpfrag"
GREEN = (40, 200, 60)


def examples(count: int) -> int:
    return max(1, int(count * SCALE))


def hostile(count: int) -> settings:
    """Hypothesis settings: `count` examples (scaled), no deadline, no example database (the
    kept examples are the explicit ones and the fuzz corpus), one server for all examples."""
    return settings(
        max_examples=examples(count),
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


# ----------------------------------------------------------------------------- strategies

_HASH_NAME = re.compile(r"[0-9a-f]{40}")


def seeds(harness: str) -> list[str]:
    """The corpus's named inputs (not the fuzzer's hash-named ones), as text."""
    return [
        path.read_text(errors="replace")
        for path in corpus(harness)
        if not _HASH_NAME.fullmatch(path.name)
    ]


OFFERS = seeds("offer")
FRAGS = seeds("sdpfrag")
SEED_LINES = sorted({line for text in OFFERS + FRAGS for line in text.splitlines() if line})

TOKENS_OF_SDP = st.one_of(
    st.sampled_from(
        [
            *("0", "-1", "9", "65535", "65536", "4294967296", "99999999999999999999", "", " "),
            *("IN", "IP4", "IP6", "0.0.0.0", "::", "127.0.0.1", "UDP/TLS/RTP/SAVPF", "RTP/AVP"),
            *("typ", "host", "srflx", "relay", "prflx", "udp", "tcp", "raddr", "rport"),
            *("sendonly", "recvonly", "sendrecv", "inactive", "BUNDLE", "LS", "mid"),
            *("H264/90000", "VP8/90000", "opus/48000/2", "rtx/90000", "apt=96", "nack", "pli"),
            *("profile-level-id=42e01f", "packetization-mode=1", "sha-256", "actpass"),
        ]
    ),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=12),
)
RANDOM_LINE = st.one_of(
    st.sampled_from(SEED_LINES),
    st.builds(
        lambda letter, attribute, value: f"{letter}={attribute}{value}",
        st.sampled_from("vosctmabrzkie"),
        st.sampled_from(["", "candidate:", "mid:", "group:BUNDLE ", "rtpmap:", "fmtp:", "ssrc:"]),
        st.lists(TOKENS_OF_SDP, max_size=10).map(" ".join),
    ),
    st.text(max_size=60),
)
_SPLIT = re.compile(r"([ :=/;])")


@st.composite
def mutated(draw: st.DrawFn, texts: list[str], max_ops: int = 6) -> str:
    """A real SDP text, changed in a few places the way broken clients and attackers do."""
    lines = draw(st.sampled_from(texts)).splitlines()
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(
            st.sampled_from(
                [
                    "delete",
                    "duplicate",
                    "swap",
                    "token",
                    "cut",
                    "insert",
                    "repeat-section",
                    "drop-direction",
                ]
            )
        )
        if not lines:
            lines = [draw(RANDOM_LINE)]
        at = draw(st.integers(0, len(lines) - 1))
        if op == "delete":
            del lines[at]
        elif op == "duplicate":
            lines.insert(draw(st.integers(0, len(lines))), lines[at])
        elif op == "swap":
            other = draw(st.integers(0, len(lines) - 1))
            lines[at], lines[other] = lines[other], lines[at]
        elif op == "token":
            parts = _SPLIT.split(lines[at])
            words = [i for i, part in enumerate(parts) if part and not _SPLIT.fullmatch(part)]
            if words:
                parts[draw(st.sampled_from(words))] = draw(TOKENS_OF_SDP)
                lines[at] = "".join(parts)
        elif op == "cut":
            lines[at] = lines[at][: draw(st.integers(0, len(lines[at])))]
        elif op == "insert":
            lines.insert(at, draw(RANDOM_LINE))
        elif op == "repeat-section":
            starts = [i for i, line in enumerate(lines) if line.startswith("m=")]
            if starts:
                start = draw(st.sampled_from(starts))
                end = next((i for i in starts if i > start), len(lines))
                lines += lines[start:end]
        elif op == "drop-direction":
            directions = ("a=sendonly", "a=recvonly", "a=sendrecv", "a=inactive")
            found = [i for i, line in enumerate(lines) if line in directions]
            if found:
                del lines[draw(st.sampled_from(found))]
    ending = draw(st.sampled_from(["\r\n", "\n"]))
    return ending.join(lines) + ending


OFFER_TEXT = st.one_of(
    mutated(OFFERS),
    st.lists(RANDOM_LINE, max_size=30).map("\r\n".join),
    st.text(max_size=300),
)
# What viewers send: the same offers, receiving.
VIEWER_OFFERS = [text.replace("a=sendonly", "a=recvonly") for text in OFFERS]
VIEWER_OFFER_TEXT = st.one_of(
    mutated(VIEWER_OFFERS),
    mutated(VIEWER_OFFERS, max_ops=2),
    st.lists(RANDOM_LINE, max_size=30).map("\r\n".join),
)
CANDIDATE_LINE = st.builds(
    lambda separator, tokens: "a=candidate:" + separator + separator.join(tokens),
    st.sampled_from([" ", "", "\t", "  "]),
    st.lists(TOKENS_OF_SDP, min_size=0, max_size=14),
)
FRAG_TEXT = st.one_of(
    mutated(FRAGS),
    st.lists(st.one_of(RANDOM_LINE, CANDIDATE_LINE), max_size=12).map("\r\n".join),
    st.text(max_size=200),
)
# What the aiohttp client can put in a header (no control characters but tab).
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, exclude_categories=["Cs"], exclude_characters="\x7f"),
    max_size=80,
)

# Regression examples: each made the server answer 500 when it was found.
SPACE_AFTER_CANDIDATE_COLON = "a=mid:0\r\na=candidate: 1 udp 2130706431 127.0.0.1 9 typ host\r\n"


def _regression(name: str) -> str:
    return next(p for p in corpus("offer") if p.name == name).read_text()


DUPLICATE_MID = _regression("regression-duplicate-mid.sdp")
NO_DIRECTION = _regression("regression-m-line-without-direction.sdp")
UNKNOWN_KIND = _regression("regression-unknown-media-kind.sdp")
VALUELESS_PACKETIZATION = _regression("regression-valueless-packetization-mode.sdp")


# ----------------------------------------------------------------------------- the parsers


@hostile(400)
@given(OFFER_TEXT)
@example(DUPLICATE_MID)
@example(NO_DIRECTION)
@example(UNKNOWN_KIND)
@example(VALUELESS_PACKETIZATION)
def test_the_offer_path_accepts_or_refuses_with_a_4xx_reason(text: str) -> None:
    assert check_offer(text) in ("accepted", "refused")


@hostile(400)
@given(FRAG_TEXT)
@example(SPACE_AFTER_CANDIDATE_COLON)
def test_the_trickle_path_accepts_or_refuses_with_a_4xx_reason(text: str) -> None:
    assert check_sdpfrag(text) in ("accepted", "refused")


@hostile(300)
@given(st.one_of(OFFER_TEXT, FRAG_TEXT, st.text()))
@example("a=candidate:1 1 udp 1 8.8.8.8 9 typ host\r\na=candidate:1 1 udp 1 abc-1.local 9 typ host")
@example("c=IN IP6 ::ffff:10.0.0.1\u2028a=candidate:1 1 udp 1\x0b192.168.1.1 9 typ host")
def test_fuzzed_bodies_can_only_name_this_machine(text: str) -> None:
    """The safety net of every HTTP test here: after `loopback_only`, no token of the body
    (split as aiortc splits candidate lines) is another host's address or an mDNS name."""
    for token in loopback_only(text).split():
        assert not re.fullmatch(r"[a-zA-Z0-9-]{1,63}\.local", token, re.ASCII | re.IGNORECASE)
        try:
            address = ipaddress.ip_address(token)
        except ValueError:
            continue
        assert address.is_loopback, token


# ----------------------------------------------------------------------------- HTTP


@dataclass
class Hostile:
    server: TestServer
    base: str

    @property
    def sessions(self) -> int:
        return len(self.server.app[SESSIONS])


def live_peer_connections() -> int:
    """Peer connections not closed (a closed one may still be referenced, by a logged
    traceback for instance, but holds no socket and no task)."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, RTCPeerConnection) and obj.connectionState != "closed"
    )


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
async def hostile_server() -> AsyncIterator[Hostile]:
    """A server for one property; at the end it must be back where it started."""
    baseline_connections, baseline_files = live_peer_connections(), open_files()
    test_server = TestServer(create_app(hostile_settings(), CollectorRegistry()), host="127.0.0.1")
    await test_server.start_server()
    baseline_tasks = len(asyncio.all_tasks())
    harness = Hostile(test_server, str(test_server.make_url("")).rstrip("/"))
    try:
        yield harness
        seen: tuple[int, int, int] = (0, 0, 0)
        for _ in range(100):  # sessions end, peer connections close (bounded)
            seen = (harness.sessions, len(asyncio.all_tasks()), live_peer_connections())
            if seen[0] == 0 and seen[1] <= baseline_tasks and seen[2] <= baseline_connections:
                break
            await asyncio.sleep(0.1)
        sessions, tasks, connections = seen
        assert sessions == 0, f"{sessions} sessions left on the server"
        assert tasks <= baseline_tasks, f"{tasks} tasks, {baseline_tasks} before"
        assert connections <= baseline_connections, f"{connections} peer connections left"
    finally:
        await test_server.close()
    await asyncio.sleep(0.2)
    # A few descriptors come and go with the client's connection pool; sockets per
    # session (ICE) would be dozens.
    assert open_files() <= baseline_files + 4, (open_files(), baseline_files)


async def send(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    body: str | bytes = b"",
) -> tuple[int, Mapping[str, str], bytes]:
    """One request; a 201 that created a session is ended again with DELETE."""
    if isinstance(body, bytes):
        with contextlib.suppress(UnicodeDecodeError):
            body = body.decode("utf-8")
    if isinstance(body, str):
        body = loopback_only(body).encode("utf-8", "surrogatepass")
    async with asyncio.timeout(15):
        try:
            async with http.request(method, url, headers=headers, data=body) as response:
                status, answer_headers = response.status, response.headers
                # An event stream never ends: its head is all there is to check.
                streaming = response.content_type == "text/event-stream"
                content = b"" if streaming else await response.read()
        except aiohttp.ClientResponseError as exc:
            raise AssertionError(f"the answer to {method} {url} broke HTTP: {exc}") from None
        location = answer_headers.get("Location", "")
        if status == 201 and location.count("/") == 3:
            base = url.split("/", 3)
            token = {"Authorization": f"Bearer {STUDIO_TOKEN}"}
            async with http.delete(f"{base[0]}//{base[2]}{location}", headers=token) as ended:
                assert ended.status == 200, ended.status
    return status, answer_headers, content


def assert_answered(status: int, headers: Mapping[str, str], content: bytes, what: str) -> None:
    """No 5xx but a documented 503 (with Retry-After); client errors as problem+json."""
    if status == 503:
        assert "Retry-After" in headers, what
        return
    assert status < 500, f"{status} for {what}: {content[:500]!r}"
    problem_json = headers.get("Content-Type", "").startswith("application/problem")
    if 400 <= status < 500 and problem_json and content:  # (HEAD answers carry no body)
        problem = orjson.loads(content)
        assert problem["status"] == status, problem


@hostile(200)
@given(
    body=st.one_of(OFFER_TEXT, mutated(OFFERS, max_ops=2), st.binary(max_size=300)),
    content_type=st.sampled_from([SDP, SDP, SDP, "application/SDP", "text/plain", ""]),
    token=st.sampled_from([STUDIO_TOKEN, STUDIO_TOKEN, TOKENS["cairo"], "", "x" * 5000]),
)
@example(body=DUPLICATE_MID, content_type=SDP, token=STUDIO_TOKEN)
@example(body=NO_DIRECTION, content_type=SDP, token=STUDIO_TOKEN)
@example(body=UNKNOWN_KIND, content_type=SDP, token=STUDIO_TOKEN)
@pytest.mark.timeout(300)
async def test_whip_posts_are_answered(
    hostile_server: Hostile,
    http: aiohttp.ClientSession,
    body: str | bytes,
    content_type: str,
    token: str,
) -> None:
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}"}
    status, answer, content = await send(
        http, "POST", hostile_server.base + "/whip/berlin", headers=headers, body=body
    )
    assert_answered(status, answer, content, f"WHIP POST {body!r:.300}")


@pytest.fixture
async def live_studio(
    hostile_server: Hostile, http: aiohttp.ClientSession
) -> AsyncIterator[Studio]:
    async with publishing(
        http, hostile_server.base + "/whip/berlin", STUDIO_TOKEN, colour=GREEN
    ) as studio:
        for _ in range(100):
            async with http.get(hostile_server.base + "/api/studios") as response:
                listing = (await response.json())["studios"]
            if next(s for s in listing if s["id"] == "berlin")["live"]:
                break
            await asyncio.sleep(0.1)
        yield studio


@pytest.fixture
async def live_viewer(
    hostile_server: Hostile, http: aiohttp.ClientSession, live_studio: Studio
) -> AsyncIterator[Viewer]:
    async with watching(http, hostile_server.base + "/whep/berlin") as viewer:
        await viewer.frames(1)
        yield viewer


async def still_watching(viewer: Viewer, studio: Studio) -> None:
    """The real viewer still decodes the studio's picture, both peers still connected."""
    frames = await viewer.frames(5, within=10)
    assert close_to(mean_colour(frames[-1]), GREEN), mean_colour(frames[-1])
    assert viewer.pc.connectionState == "connected"
    assert studio.pc.connectionState == "connected"


CAIRO_VIEWER = "Bearer " + issue(VIEWER_TOKEN_SECRET, "cairo", 3600.0)
VIEWER_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "CF-IPCountry": st.one_of(st.sampled_from(["DE", "XX", "T1", "", "de"]), HEADER_TEXT),
        "X-Forwarded-For": st.one_of(
            st.lists(
                st.sampled_from(["81.169.145.150", "127.0.0.1", "::1", "unknown", "[::1]:80"]),
                max_size=4,
            ).map(", ".join),
            HEADER_TEXT,
        ),
        "Forwarded": st.one_of(
            st.sampled_from(['for="[2001:db8::1]:443";proto=https', "for=_hidden, for=1.2.3.4"]),
            HEADER_TEXT,
        ),
        "Origin": st.one_of(st.just("https://player.example"), HEADER_TEXT),
        "Authorization": st.one_of(
            st.sampled_from(
                [
                    "Bearer eyJ.eyJ.sig",
                    CAIRO_VIEWER,
                    "Bearer " + issue(VIEWER_TOKEN_SECRET, "cairo", 1.0, now=1e9),  # expired
                    "Bearer " + issue(VIEWER_TOKEN_SECRET, "berlin", 3600.0),  # another studio
                    "Bearer " + issue("another-secret-0123456789abcdef0123", "cairo", 3600.0),
                ]
            ),
            HEADER_TEXT,
        ),
    },
)


@hostile(200)
@given(
    body=VIEWER_OFFER_TEXT,
    studio=st.sampled_from(["berlin", "berlin", "cairo", "atlantis"]),
    headers=VIEWER_HEADERS,
)
@example(body=DUPLICATE_MID.replace("sendonly", "recvonly"), studio="berlin", headers={})
@example(body=NO_DIRECTION.replace("a=sendonly", "a=recvonly"), studio="berlin", headers={})
@example(body=UNKNOWN_KIND.replace("sendonly", "recvonly"), studio="berlin", headers={})
@example(body=VALUELESS_PACKETIZATION.replace("sendrecv", "recvonly"), studio="berlin", headers={})
@example(
    body=VIEWER_OFFERS[0],
    studio="cairo",
    headers={"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.\u00e9.c2ln"},  # not ASCII
)
@pytest.mark.timeout(300)
async def test_whep_posts_to_a_live_studio_are_answered(
    hostile_server: Hostile,
    http: aiohttp.ClientSession,
    live_viewer: Viewer,
    live_studio: Studio,
    body: str,
    studio: str,
    headers: dict[str, str],
) -> None:
    if studio == "cairo":  # a viewer token, unless one was drawn
        headers = {"Authorization": CAIRO_VIEWER, **headers}
    status, answer, content = await send(
        http,
        "POST",
        f"{hostile_server.base}/whep/{studio}",
        headers={"Content-Type": SDP, **headers},
        body=body,
    )
    assert_answered(status, answer, content, f"WHEP POST {headers} {body!r:.300}")


@hostile(60)
@given(
    body=FRAG_TEXT,
    target=st.sampled_from(["whip", "whep"]),
    if_match=st.sampled_from(["etag", "etag", "*", '"0"', "", None]),
    content_type=st.sampled_from([SDPFRAG, SDPFRAG, SDP, "text/plain"]),
)
@example(body=SPACE_AFTER_CANDIDATE_COLON, target="whep", if_match="etag", content_type=SDPFRAG)
@pytest.mark.timeout(300)
async def test_patches_never_break_a_live_session(
    hostile_server: Hostile,
    http: aiohttp.ClientSession,
    live_studio: Studio,
    live_viewer: Viewer,
    body: str,
    target: str,
    if_match: str | None,
    content_type: str,
) -> None:
    session = live_studio.session if target == "whip" else live_viewer.session
    assert session is not None
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {STUDIO_TOKEN}"}
    if if_match is not None:
        headers["If-Match"] = session.etag or "" if if_match == "etag" else if_match
    status, answer, content = await send(http, "PATCH", session.url, headers=headers, body=body)
    assert_answered(status, answer, content, f"PATCH {headers} {body!r:.300}")
    await still_watching(live_viewer, live_studio)


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
VIEWER_TOKEN_REQUEST = st.fixed_dictionaries(
    {},
    optional={
        "studio": st.one_of(st.sampled_from(["berlin", "cairo", "", "atlantis"]), JSON),
        "ttl": st.one_of(
            st.sampled_from([0, -1, 1, 3600, 604800, 604801, 1e308, 2**63, True, "60"]), JSON
        ),
    },
)
PATHS = st.one_of(
    st.sampled_from(
        [
            "/",
            "/api/studios",
            "/api/audience",
            "/api/events",
            "/metrics",
            "/healthz",
            "/whip/berlin",
            "/whep/berlin",
            "/whep/cairo",
            "/whip/atlantis",
            "/whip/berlin/{session}",
            "/whep/berlin/{session}",
            "/watch/berlin",
            "/studio/berlin",
            "/audience",
            "/static/index.js",
            "/static/../run.py",
            "/static/%2e%2e/run.py",
            "/admin/sessions",
            "/admin/sessions/{session}",
            "/admin/reload",
            "/admin/viewer-tokens",
            "//api//studios",
            "/api/studios/",
        ]
    ),
    st.builds(
        lambda prefix, segment: prefix + segment,
        st.sampled_from(
            ["/whip/", "/whep/", "/watch/", "/studio/", "/static/", "/admin/sessions/"]
        ),
        st.text(st.characters(min_codepoint=0x21, max_codepoint=0x2FF), max_size=40),
    ),
)
SURFACE_HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "Authorization": st.one_of(
            st.sampled_from(
                [f"Bearer {STUDIO_TOKEN}", f"Bearer {ADMIN_TOKEN}", "Bearer", "Basic eA==", ""]
            ),
            HEADER_TEXT,
        ),
        "Content-Type": st.one_of(
            st.sampled_from([SDP, SDPFRAG, "application/json", "multipart/form-data"]),
            HEADER_TEXT,
        ),
        "If-Match": st.one_of(st.sampled_from(["*", '"x"', 'W/"x"']), HEADER_TEXT),
        "Origin": st.one_of(st.sampled_from(["https://a.example", "null"]), HEADER_TEXT),
        "Access-Control-Request-Method": st.sampled_from(["POST", "PATCH", "BREW"]),
        "Accept": HEADER_TEXT,
        "Range": st.one_of(st.sampled_from(["bytes=0-1", "bytes=-5", "bytes=9-1"]), HEADER_TEXT),
        "If-None-Match": HEADER_TEXT,
        "If-Modified-Since": HEADER_TEXT,
        "X-Forwarded-For": HEADER_TEXT,
        "Forwarded": HEADER_TEXT,
        "CF-IPCountry": HEADER_TEXT,
    },
)


@hostile(250)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "BREW"]),
    path=PATHS,
    query=st.one_of(st.just(""), st.text(max_size=30).map(lambda q: "?" + q)),
    headers=SURFACE_HEADERS,
    body=st.one_of(
        st.just(b""),
        JSON.map(orjson.dumps),
        st.sampled_from(
            [
                b'{"studio": "cairo", "ttl": 1e999}',
                b'{"studio": "cairo", "ttl": 123456789012345678901234567890}',
                b'{"studio": "cairo", "ttl": NaN}',
                b'{"studio": "cairo", "ttl": -0.0}',
                b'{"studio": "cairo", "studio": 1}',
                b"[" * 10000,
                b'"\\ud800"',
            ]
        ),
        VIEWER_TOKEN_REQUEST.map(orjson.dumps),
        FRAG_TEXT.map(str.encode),
        st.binary(max_size=200),
    ),
)
@example(method="HEAD", path="/api/events", query="", headers={}, body=b"")
@pytest.mark.timeout(300)
async def test_every_route_answers_any_request(
    hostile_server: Hostile,
    http: aiohttp.ClientSession,
    method: str,
    path: str,
    query: str,
    headers: dict[str, str],
    body: bytes,
) -> None:
    url = hostile_server.base + path.replace("{session}", "Zm9yZ290dGVuLXNlc3Npb24") + query
    try:
        status, answer, content = await send(http, method, url, headers=headers, body=body)
    except ValueError as exc:  # the client refuses to send this URL; nothing to test
        if "URL" not in str(exc) and "url" not in str(exc):
            raise
        return
    assert_answered(status, answer, content, f"{method} {url} {headers} {body!r:.200}")
    if status == 200 and "/static/" in path:
        assert b"create_app" not in content, "a file outside the static folder was served"


RAW_BYTES = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
FRAG_BODY = FRAGS[0].encode()
OFFER_BODY = OFFERS[0].encode()
# (method, path, the header drawn, content type, body)
RAW_TARGETS = [
    (b"POST", b"/whip/berlin", b"Authorization", SDP, OFFER_BODY),
    (b"POST", b"/whep/cairo", b"Authorization", SDP, OFFER_BODY),
    (b"GET", b"/admin/sessions", b"Authorization", "", b""),
    (b"PATCH", b"/whip/berlin/{session}", b"If-Match", SDPFRAG, FRAG_BODY),
    (b"PATCH", b"/whip/berlin/{session}", b"Content-Type", SDPFRAG, FRAG_BODY),
    (b"POST", b"/whep/berlin", b"X-Forwarded-For", SDP, OFFER_BODY),
    (b"POST", b"/whep/berlin", b"Forwarded", SDP, OFFER_BODY),
    (b"POST", b"/whep/berlin", b"CF-IPCountry", SDP, OFFER_BODY),
    (b"OPTIONS", b"/whip/berlin", b"Origin", "", b""),
    (b"GET", b"/api/events", b"Origin", "", b""),
]


def as_input(request: Request) -> bytes:
    """A request in the corpus's text form (fuzz/http_raw.py)."""
    head = [request.method + b" " + request.path]
    head += [name + b": " + value for name, value in request.headers]
    return b"\n".join(head) + b"\n\n" + request.body


@hostile(120)
@given(
    target=st.sampled_from(RAW_TARGETS),
    prefix=st.sampled_from([b"", b"Bearer ", b'"']),
    value=RAW_BYTES,
)
@example(target=RAW_TARGETS[0], prefix=b"Bearer ", value=b"\x96")
@example(target=RAW_TARGETS[2], prefix=b"Bearer ", value=b"\x96")
@pytest.mark.timeout(300)
async def test_header_bytes_that_are_not_utf8_are_answered(
    hostile_server: Hostile,
    target: tuple[bytes, bytes, bytes, str, bytes],
    prefix: bytes,
    value: bytes,
) -> None:
    method, path, header, content_type, body = target
    assert hostile_server.server.port is not None
    client = RawClient(hostile_server.server.app, hostile_server.server.port)
    headers = [(header, prefix + value)]
    if header != b"Authorization":
        headers.append((b"Authorization", b"Bearer {token}"))
    if header != b"Content-Type" and content_type:
        headers.append((b"Content-Type", content_type.encode()))
    if header != b"If-Match" and method == b"PATCH":
        headers.append((b"If-Match", b"{etag}"))
    try:
        answer = await client.send(as_input(Request(method, path, headers, body)))
        assert answer.status < 500, f"{answer.status} for {answer.request[:300]!r}"
    finally:
        if client.session:  # the WHIP session the client kept for {session}
            token = [(b"Authorization", b"Bearer {token}")]
            ending = Request(b"DELETE", b"/whip/berlin/" + client.session, token, b"")
            await client.exchange(client.render(ending))


REQUEST_TARGETS = st.one_of(
    st.sampled_from(["*", "//", "/whip", "/whip/", "whip/berlin", "/whep//berlin", "/%2e%2e/"]),
    st.builds(
        lambda scheme, host, path: f"{scheme}://{host}{path}",
        st.sampled_from(["http", "https", "HTTP", "as"]),
        st.sampled_from(["meridian.example", "127.0.0.1", "[::1]:8080", "a"]),
        st.sampled_from(["", "/", "/whip/berlin", "/whep/berlin/x", "/api/audience", "?x"]),
    ),
)


@hostile(80)
@given(
    method=st.sampled_from([b"GET", b"HEAD", b"POST", b"OPTIONS", b"DELETE", b"PATCH"]),
    target=REQUEST_TARGETS,
)
@example(method=b"GET", target="http://meridian.example")
@pytest.mark.timeout(300)
async def test_request_targets_in_any_form_are_answered(
    hostile_server: Hostile, method: bytes, target: str
) -> None:
    """Origin-form, absolute-form (RFC 9112 section 3.2.2: what proxies send) and odd paths."""
    assert hostile_server.server.port is not None
    client = RawClient(hostile_server.server.app, hostile_server.server.port)
    headers = [(b"Authorization", b"Bearer {token}"), (b"Content-Type", SDP.encode())]
    answer = await client.exchange(client.render(Request(method, target.encode(), headers, b"")))
    assert answer.status < 500, f"{answer.status} for {answer.request[:300]!r}"
