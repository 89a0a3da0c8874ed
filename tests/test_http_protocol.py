"""WHIP (RFC 9725) and WHEP over HTTP: every bad request gets its 4xx problem; the server lives on.

Each table row is one request a client can get wrong. Its test sends it to a fresh server and
checks the status, the RFC 9457 problem+json body (whose detail must say what was wrong), the
headers the status calls for, and that the server is still healthy with its sessions intact.
`test_server_serves_after_every_bad_request` then sends all the rows to one server and checks
that a real aiortc studio can still publish there and a viewer can still watch.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aiortc import RTCPeerConnection
from multidict import CIMultiDictProxy

from clients.webrtc_client import WebRtcHttpError
from server.state import SESSIONS
from tests import sdp_samples
from tests.conftest import TOKENS, url
from tests.rtc_peers import prefer, publishing, rtc_config, watching

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
PROBLEM = "application/problem+json"
ORIGIN = "https://studio.example"
MAX_BODY = 64 * 1024  # server.max_body_bytes by default

BERLIN = {"Authorization": f"Bearer {TOKENS['berlin']}"}
CAIRO = {"Authorization": f"Bearer {TOKENS['cairo']}"}
UNKNOWN_SESSION = "Zm9yZ290dGVuLXNlc3Npb24taWQtMDEyMzQ1"  # well-formed, never issued

# Placeholders a row may use; they are filled in from the WHIP session made for the row.
SESSION, ETAG, UFRAG, PWD, CANDIDATE = "{session}", "{etag}", "{ufrag}", "{pwd}", "{candidate}"


@dataclass(frozen=True)
class BadRequest:
    name: str
    method: str
    path: str
    status: int
    explains: str  # what the problem's detail must say (case-insensitive)
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str | bytes | None = None
    chunked: bool = False  # send the body without Content-Length
    expect_headers: tuple[tuple[str, str], ...] = ()  # (header, regex it must contain)

    @property
    def needs_session(self) -> bool:
        return SESSION in self.path


def sdp_post(token: Mapping[str, str] = BERLIN, content_type: str = SDP) -> dict[str, str]:
    return {"Content-Type": content_type, **token}


def patch_headers(
    if_match: str | None = ETAG, token: Mapping[str, str] = BERLIN, content_type: str = SDPFRAG
) -> dict[str, str]:
    headers = {"Content-Type": content_type, **token}
    if if_match is not None:
        headers["If-Match"] = if_match
    return headers


NEEDS_BEARER = ("WWW-Authenticate", r"^Bearer\b")
INVALID_TOKEN = ("WWW-Authenticate", r'^Bearer\b.*\berror="invalid_token"')
TRICKLE = sdp_samples.trickle_fragment(UFRAG, PWD, "0", CANDIDATE)
SENDING = sdp_samples.offer("sendonly")
RECEIVING = sdp_samples.offer("recvonly")

WHIP_POST = [
    BadRequest(
        "wrong-content-type",
        "POST",
        "/whip/berlin",
        415,
        SDP,
        sdp_post(content_type="text/plain"),
        SENDING,
        expect_headers=(("Accept-Post", rf"^{SDP}\b"),),
    ),
    BadRequest("empty-body", "POST", "/whip/berlin", 400, "empty", sdp_post(), ""),
    BadRequest("blank-body", "POST", "/whip/berlin", 400, "empty", sdp_post(), "\r\n  \r\n"),
    BadRequest("garbage", "POST", "/whip/berlin", 400, "SDP", sdp_post(), "hello, relay"),
    BadRequest(
        "unparsable-m-line",
        "POST",
        "/whip/berlin",
        400,
        "parsed",
        sdp_post(),
        sdp_samples.sdp([*sdp_samples.session_lines(), "m=video ninety RTP/SAVPF 96"]),
    ),
    BadRequest(
        "truncated-m-line",
        "POST",
        "/whip/berlin",
        400,
        "m=video",  # the detail must point at the line that is wrong
        sdp_post(),
        sdp_samples.sdp([*sdp_samples.session_lines(), "m=video"]),
    ),
    BadRequest(
        "no-media", "POST", "/whip/berlin", 422, "m-line", sdp_post(), sdp_samples.no_media_offer()
    ),
    BadRequest(
        "data-channel-only",
        "POST",
        "/whip/berlin",
        422,
        "no audio or video",
        sdp_post(),
        sdp_samples.data_channel_offer(),
    ),
    BadRequest(
        "oversized",
        "POST",
        "/whip/berlin",
        413,
        str(MAX_BODY),
        sdp_post(),
        SENDING + "a=x-padding:" + "x" * MAX_BODY + "\r\n",
    ),
    BadRequest(
        "oversized-chunked",
        "POST",
        "/whip/berlin",
        413,
        str(MAX_BODY),
        sdp_post(),
        SENDING + "a=x-padding:" + "x" * MAX_BODY + "\r\n",
        chunked=True,
    ),
    BadRequest(
        "no-authorization",
        "POST",
        "/whip/berlin",
        401,
        "token",
        sdp_post(token={}),
        SENDING,
        expect_headers=(NEEDS_BEARER,),
    ),
    BadRequest(
        "not-bearer",
        "POST",
        "/whip/berlin",
        401,
        "token",
        sdp_post(token={"Authorization": f"Basic {TOKENS['berlin']}"}),
        SENDING,
        expect_headers=(NEEDS_BEARER,),
    ),
    BadRequest(
        "wrong-token",
        "POST",
        "/whip/berlin",
        401,
        "not valid",
        sdp_post(token={"Authorization": "Bearer not-the-token"}),
        SENDING,
        expect_headers=(INVALID_TOKEN,),
    ),
    BadRequest(
        "token-of-another-studio",
        "POST",
        "/whip/berlin",
        401,
        "not valid",
        sdp_post(token=CAIRO),
        SENDING,
        expect_headers=(INVALID_TOKEN,),
    ),
    BadRequest("unknown-studio", "POST", "/whip/atlantis", 404, "atlantis", sdp_post(), SENDING),
    BadRequest(
        "not-utf-8",
        "POST",
        "/whip/berlin",
        400,
        "UTF-8",
        sdp_post(),
        SENDING.encode() + b"a=tool:\xff\xfe\xc3\r\n",
    ),
    BadRequest(
        "only-codecs-not-relayed",
        "POST",
        "/whip/berlin",
        422,
        "codec",
        sdp_post(),
        sdp_samples.offer("sendonly", ("video",), video_codec="VP9/90000"),
    ),
    BadRequest(
        "recvonly-offer",
        "POST",
        "/whip/berlin",
        422,
        "sends no audio or video",
        sdp_post(),
        RECEIVING,
    ),
]

WHEP_POST = [
    BadRequest(
        "unknown-studio",
        "POST",
        "/whep/atlantis",
        404,
        "atlantis",
        {"Content-Type": SDP},
        RECEIVING,
    ),
    BadRequest(
        "studio-not-live",
        "POST",
        "/whep/berlin",
        409,
        "not live",
        {"Content-Type": SDP},
        RECEIVING,
        expect_headers=(("Retry-After", r"^\d+$"),),
    ),
    BadRequest(
        "wrong-content-type",
        "POST",
        "/whep/berlin",
        415,
        SDP,
        {"Content-Type": "application/json"},
        RECEIVING,
        expect_headers=(("Accept-Post", rf"^{SDP}\b"),),
    ),
    BadRequest("garbage", "POST", "/whep/berlin", 400, "SDP", {"Content-Type": SDP}, "<html/>"),
    BadRequest("empty-body", "POST", "/whep/berlin", 400, "empty", {"Content-Type": SDP}, ""),
]

SESSION_URL = f"/whip/berlin/{SESSION}"

SESSION_REQUESTS = [
    BadRequest(
        "delete-unknown-whip-session",
        "DELETE",
        f"/whip/berlin/{UNKNOWN_SESSION}",
        404,
        "no such session",
        BERLIN,
    ),
    BadRequest(
        "patch-unknown-whip-session",
        "PATCH",
        f"/whip/berlin/{UNKNOWN_SESSION}",
        404,
        "no such session",
        patch_headers(if_match="*"),
        TRICKLE,
    ),
    BadRequest(
        "delete-unknown-whep-session",
        "DELETE",
        f"/whep/berlin/{UNKNOWN_SESSION}",
        404,
        "no such session",
    ),
    BadRequest(
        "patch-unknown-whep-session",
        "PATCH",
        f"/whep/berlin/{UNKNOWN_SESSION}",
        404,
        "no such session",
        patch_headers(if_match="*", token={}),
        TRICKLE,
    ),
    BadRequest(
        "whip-session-of-whep",
        "DELETE",
        f"/whep/berlin/{SESSION}",
        404,
        "no such session",
    ),
    BadRequest(
        "whip-session-under-another-studio",
        "DELETE",
        f"/whip/cairo/{SESSION}",
        404,
        "no such session",
        CAIRO,
    ),
    BadRequest(
        "patch-without-if-match",
        "PATCH",
        SESSION_URL,
        428,
        "If-Match",
        patch_headers(if_match=None),
        TRICKLE,
    ),
    BadRequest(
        "patch-stale-etag",
        "PATCH",
        SESSION_URL,
        412,
        "ETag",
        patch_headers(if_match='"0123456789abcdef"'),
        TRICKLE,
    ),
    BadRequest(
        "patch-weak-etag",
        "PATCH",
        SESSION_URL,
        412,
        "ETag",
        patch_headers(if_match=f"W/{ETAG}"),
        TRICKLE,
    ),
    BadRequest(
        "patch-wrong-content-type",
        "PATCH",
        SESSION_URL,
        415,
        SDPFRAG,
        patch_headers(content_type=SDP),
        TRICKLE,
        expect_headers=(("Accept-Patch", rf"^{SDPFRAG}\b"),),
    ),
    BadRequest(
        "ice-restart",
        "PATCH",
        SESSION_URL,
        422,
        "ICE restart is not supported",
        patch_headers(if_match="*"),
        sdp_samples.restart_fragment("freshufrag", "freshpassword0123456789"),
    ),
    BadRequest(
        "ice-restart-with-etag",
        "PATCH",
        SESSION_URL,
        422,
        "ICE restart is not supported",
        patch_headers(),
        sdp_samples.restart_fragment("freshufrag", "freshpassword0123456789"),
    ),
    BadRequest(
        "malformed-candidate",
        "PATCH",
        SESSION_URL,
        400,
        "candidate",
        patch_headers(),
        sdp_samples.sdp(["a=mid:0", "a=candidate:1 1 udp 2130706431"]),
    ),
    BadRequest(
        "not-an-sdpfrag",
        "PATCH",
        SESSION_URL,
        400,
        "hello relay",
        patch_headers(),
        "hello relay\r\n",
    ),
    BadRequest("empty-sdpfrag", "PATCH", SESSION_URL, 400, "empty", patch_headers(), ""),
    BadRequest(
        "patch-without-token",
        "PATCH",
        SESSION_URL,
        401,
        "token",
        patch_headers(token={}),
        TRICKLE,
        expect_headers=(NEEDS_BEARER,),
    ),
    BadRequest(
        "patch-with-token-of-another-studio",
        "PATCH",
        SESSION_URL,
        401,
        "not valid",
        patch_headers(token=CAIRO),
        TRICKLE,
        expect_headers=(INVALID_TOKEN,),
    ),
    BadRequest(
        "delete-without-token",
        "DELETE",
        SESSION_URL,
        401,
        "token",
        expect_headers=(NEEDS_BEARER,),
    ),
    BadRequest(
        "delete-with-token-of-another-studio",
        "DELETE",
        SESSION_URL,
        401,
        "not valid",
        CAIRO,
        expect_headers=(INVALID_TOKEN,),
    ),
    BadRequest(
        "get-session",
        "GET",
        SESSION_URL,
        405,
        "GET",
        BERLIN,
        expect_headers=(("Allow", r"\bPATCH\b"), ("Allow", r"\bDELETE\b")),
    ),
    BadRequest(
        "put-session",
        "PUT",
        SESSION_URL,
        405,
        "PUT",
        sdp_post(),
        SENDING,
        expect_headers=(("Allow", r"\bPATCH\b"), ("Allow", r"\bDELETE\b")),
    ),
    BadRequest(
        "get-whep-session",
        "GET",
        f"/whep/berlin/{UNKNOWN_SESSION}",
        405,
        "GET",
        expect_headers=(("Allow", r"\bDELETE\b"),),
    ),
    BadRequest(
        "no-such-route",
        "POST",
        "/whip",
        404,
        "/whip",
        sdp_post(),
        SENDING,
    ),
    BadRequest(
        "get-whip-endpoint",
        "GET",
        "/whip/berlin",
        405,
        "GET",
        expect_headers=(("Allow", r"\bPOST\b"),),
    ),
    BadRequest(
        "get-whep-endpoint",
        "GET",
        "/whep/berlin",
        405,
        "GET",
        expect_headers=(("Allow", r"\bPOST\b"),),
    ),
]


def ids(rows: Sequence[BadRequest]) -> list[str]:
    return [row.name for row in rows]


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes
    content_type: str

    def problem(self) -> dict[str, Any]:
        document = json.loads(self.body)
        assert isinstance(document, dict), document
        return document


@dataclass
class WhipSession:
    """A WHIP session the server answered, from a trickling client that has not connected."""

    id: str
    etag: str
    ufrag: str
    pwd: str
    candidate: str  # a candidate of m-line 0 that the offer left out, to trickle

    def fill(self, text: str) -> str:
        for placeholder, value in (
            (SESSION, self.id),
            (ETAG, self.etag),
            (UFRAG, self.ufrag),
            (PWD, self.pwd),
            (CANDIDATE, self.candidate),
        ):
            text = text.replace(placeholder, value)
        return text


async def chunks(body: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def send(
    http: aiohttp.ClientSession,
    server: TestServer,
    row: BadRequest,
    session: WhipSession | None = None,
) -> Answer:
    def fill(text: str) -> str:
        return session.fill(text) if session is not None else text

    body = fill(row.body).encode() if isinstance(row.body, str) else row.body
    headers = {"Origin": ORIGIN, **{name: fill(value) for name, value in row.headers.items()}}
    data: bytes | AsyncIterator[bytes] | None = body
    if row.chunked and body is not None:
        data = chunks(body)
    async with http.request(
        row.method, url(server, fill(row.path)), headers=headers, data=data
    ) as response:
        return Answer(
            response.status, response.headers, await response.read(), response.content_type
        )


def session_ids(server: TestServer) -> set[str]:
    return {resource.id for resource in server.app[SESSIONS].all()}


async def assert_healthy(
    http: aiohttp.ClientSession, server: TestServer, sessions: set[str]
) -> None:
    """The server answers, and the bad request neither made nor ended a session."""
    async with http.get(url(server, "/healthz")) as response:
        assert response.status == 200
        assert (await response.json()) == {"status": "ok"}
    assert session_ids(server) == sessions


def assert_problem(answer: Answer, status: int, explains: str) -> dict[str, Any]:
    assert answer.status == status, f"{answer.status}, not {status}: {answer.body!r}"
    assert answer.content_type == PROBLEM, (answer.content_type, answer.body)
    problem = answer.problem()
    assert {"type", "title", "status", "detail"} <= problem.keys(), problem
    assert problem["status"] == status
    assert isinstance(problem["type"], str) and problem["type"], problem
    assert isinstance(problem["title"], str) and problem["title"], problem
    detail = problem["detail"]
    assert isinstance(detail, str), problem
    # The detail is about this occurrence: more than the title, and it names what went wrong.
    repeats_title = detail.strip().casefold() == problem["title"].strip().casefold()
    assert not repeats_title, f"the detail only repeats the title: {problem}"
    says_what = explains.casefold() in detail.casefold()
    assert says_what, f"the detail does not say {explains!r}: {problem}"
    # A browser client can read the problem only with CORS headers on the error too.
    assert answer.headers.get("Access-Control-Allow-Origin") in ("*", ORIGIN), answer.headers
    return problem


def assert_headers(answer: Answer, expected: Sequence[tuple[str, str]]) -> None:
    for name, pattern in expected:
        value = answer.headers.get(name)
        assert value is not None, f"no {name} header in {dict(answer.headers)}"
        assert re.search(pattern, value, flags=re.I), (name, value, pattern)


@asynccontextmanager
async def offering(
    kinds: Sequence[str] = ("video", "audio"), direction: str = "sendonly", video: str | None = None
) -> AsyncIterator[tuple[RTCPeerConnection, str]]:
    """An aiortc peer and its complete offer (host candidates gathered), closed afterwards."""
    pc = RTCPeerConnection(rtc_config())
    try:
        for kind in kinds:
            pc.addTransceiver(kind, direction=direction)
        if video is not None:
            prefer(pc, "video", video)
        await pc.setLocalDescription(await pc.createOffer())
        yield pc, pc.localDescription.sdp
    finally:
        await pc.close()


async def post_offer(
    http: aiohttp.ClientSession, server: TestServer, path: str, offer: str, token: str | None = None
) -> Answer:
    headers = {"Content-Type": SDP, "Origin": ORIGIN}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with http.post(url(server, path), data=offer, headers=headers) as response:
        return Answer(
            response.status, response.headers, await response.read(), response.content_type
        )


@asynccontextmanager
async def whip_session(
    http: aiohttp.ClientSession, server: TestServer
) -> AsyncIterator[WhipSession]:
    """A trickling studio's WHIP session: answered, not connected (no ICE needed)."""
    async with offering() as (_, complete_offer):
        offer = sdp_samples.without_candidates(complete_offer)
        answer = await post_offer(http, server, "/whip/berlin", offer, TOKENS["berlin"])
        assert answer.status == 201, answer.body
        ufrag, pwd = sdp_samples.ice_credentials(offer)
        mid, candidate = sdp_samples.first_candidate(complete_offer)
        assert mid == "0"
        yield WhipSession(
            answer.headers["Location"].rsplit("/", 1)[1],
            answer.headers["ETag"],
            ufrag,
            pwd,
            candidate,
        )


async def wait_live(http: aiohttp.ClientSession, server: TestServer, studio: str) -> None:
    for _ in range(100):
        async with http.get(url(server, "/api/studios")) as response:
            listing = (await response.json())["studios"]
        if next(s for s in listing if s["id"] == studio)["live"]:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"studio {studio} never went live")


# ---------------------------------------------------------------- bad requests, one by one


async def refuse(http: aiohttp.ClientSession, server: TestServer, row: BadRequest) -> None:
    if row.needs_session:
        async with whip_session(http, server) as session:
            before = session_ids(server)
            answer = await send(http, server, row, session)
            assert_problem(answer, row.status, row.explains)
            assert_headers(answer, row.expect_headers)
            await assert_healthy(http, server, before)
    else:
        answer = await send(http, server, row)
        assert_problem(answer, row.status, row.explains)
        assert_headers(answer, row.expect_headers)
        await assert_healthy(http, server, set())


@pytest.mark.parametrize("row", WHIP_POST, ids=ids(WHIP_POST))
async def test_whip_post_refused(
    server: TestServer, http: aiohttp.ClientSession, row: BadRequest
) -> None:
    await refuse(http, server, row)


@pytest.mark.parametrize("row", WHEP_POST, ids=ids(WHEP_POST))
async def test_whep_post_refused(
    server: TestServer, http: aiohttp.ClientSession, row: BadRequest
) -> None:
    await refuse(http, server, row)


@pytest.mark.parametrize("row", SESSION_REQUESTS, ids=ids(SESSION_REQUESTS))
async def test_session_request_refused(
    server: TestServer, http: aiohttp.ClientSession, row: BadRequest
) -> None:
    await refuse(http, server, row)


async def test_whep_offer_without_the_studio_codec(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    async with publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"], video="video/H264"):
        await wait_live(http, server, "berlin")
        before = session_ids(server)
        async with offering(("video",), "recvonly", video="video/VP8") as (_, offer):
            assert "VP8/90000" in offer and "H264/90000" not in offer
            answer = await post_offer(http, server, "/whep/berlin", offer)
        assert_problem(answer, 422, "H264")
        await assert_healthy(http, server, before)


# ---------------------------------------------------------------- what succeeds


async def test_trickle_candidate_with_the_current_etag(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    async with whip_session(http, server) as session:
        path = url(server, f"/whip/berlin/{session.id}")
        fragment = sdp_samples.trickle_fragment(session.ufrag, session.pwd, "0", session.candidate)
        for _ in range(2):  # a trickle does not change the ETag: the same one works again
            async with http.patch(
                path, data=fragment, headers=patch_headers(session.etag)
            ) as response:
                assert response.status == 204, await response.text()
        await assert_healthy(http, server, {session.id})


@pytest.mark.parametrize("endpoint", ["/whip/berlin", "/whep/berlin"])
async def test_options_on_the_endpoint(
    server: TestServer, http: aiohttp.ClientSession, endpoint: str
) -> None:
    async with http.options(url(server, endpoint)) as response:
        assert response.status == 204
        assert response.headers.get("Accept-Post") == SDP

    preflight = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    async with http.options(url(server, endpoint), headers=preflight) as response:
        assert response.status == 204
        assert response.headers.get("Accept-Post") == SDP
        cors = response.headers
    assert cors.get("Access-Control-Allow-Origin") in ("*", ORIGIN)

    def tokens(name: str) -> set[str]:
        return {token.strip().casefold() for token in cors.get(name, "").split(",")}

    assert {"post", "patch", "delete"} <= tokens("Access-Control-Allow-Methods")
    assert {"authorization", "content-type", "if-match"} <= tokens("Access-Control-Allow-Headers")
    assert {"location", "etag", "link", "accept-patch"} <= tokens("Access-Control-Expose-Headers")
    await assert_healthy(http, server, set())


def assert_created(answer: Answer, protocol: str, direction: str) -> str:
    """The 201 of RFC 9725 section 4.2; returns the session URL."""
    assert answer.status == 201, answer.body
    assert answer.content_type == SDP
    location = answer.headers["Location"]
    # Relative, under the endpoint, with >= 128 random bits (22 URL-safe base64 characters).
    assert re.fullmatch(rf"/{protocol}/berlin/[A-Za-z0-9_-]{{22,}}", location), location
    etag = answer.headers["ETag"]
    assert re.fullmatch(r'"[\x21\x23-\x7e]+"', etag), etag  # strong: quoted, no W/
    assert answer.headers.get("Accept-Patch") == SDPFRAG
    answer_sdp = answer.body.decode()
    assert answer_sdp.startswith("v=0")
    assert sdp_samples.media_directions(answer_sdp) == [direction, direction], answer_sdp
    return location


async def test_whip_created(server: TestServer, http: aiohttp.ClientSession) -> None:
    locations = []
    for _ in range(2):
        async with offering(video="video/H264") as (_, offer):
            answer = await post_offer(http, server, "/whip/berlin", offer, TOKENS["berlin"])
            locations.append(assert_created(answer, "whip", "recvonly"))
    assert locations[0] != locations[1]
    assert session_ids(server) == {location.rsplit("/", 1)[1] for location in locations}


async def test_whep_created_then_deleted_once(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    async with publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"]):
        await wait_live(http, server, "berlin")
        studios = session_ids(server)
        async with offering(direction="recvonly") as (_, offer):
            answer = await post_offer(http, server, "/whep/berlin", offer)
            location = assert_created(answer, "whep", "sendonly")
            viewer_id = location.rsplit("/", 1)[1]
            assert session_ids(server) == studios | {viewer_id}

            async with http.delete(url(server, location)) as response:
                assert response.status == 200, await response.text()
            await assert_healthy(http, server, studios)
            async with http.delete(url(server, location), headers={"Origin": ORIGIN}) as response:
                gone = Answer(
                    response.status, response.headers, await response.read(), response.content_type
                )
            assert_problem(gone, 404, "no such session")
            await assert_healthy(http, server, studios)


# ---------------------------------------------------------------- the whole table, one server


async def test_server_serves_after_every_bad_request(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    """All the rows against one server; then a real studio publishes and a viewer watches."""
    wrong: list[str] = []
    async with whip_session(http, server) as session:
        for row in [*WHIP_POST, *WHEP_POST, *SESSION_REQUESTS]:
            answer = await send(http, server, row, session)
            if answer.status != row.status:
                wrong.append(f"{row.method} {row.name}: {answer.status}, not {row.status}")
            await assert_healthy(http, server, {session.id})
        async with http.delete(url(server, f"/whip/berlin/{session.id}"), headers=BERLIN) as gone:
            assert gone.status == 200
        await assert_healthy(http, server, set())

    colour = (50, 70, 220)
    async with publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"], colour=colour):
        await wait_live(http, server, "berlin")
        async with offering(("video",), "recvonly", video="video/VP8") as (_, offer):
            refused = await post_offer(http, server, "/whep/berlin", offer)
        assert refused.status == 422
        try:
            async with watching(http, url(server, "/whep/berlin")) as viewer:
                frames = await viewer.frames(3)
        except WebRtcHttpError as exc:
            raise AssertionError(f"the viewer could not join: {exc}") from exc
        assert (frames[-1].width, frames[-1].height) == (320, 240)
    assert not wrong, wrong
