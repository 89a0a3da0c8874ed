"""What the fuzz harnesses and the hostile-input tests share.

- The checks: the SDP offer path (`check_offer`: `parse_offer`, then `require_*` as WHIP and
  WHEP apply them) and the trickle path (`check_sdpfrag`: `parse_sdpfrag`, then each
  candidate as PATCH adds it). Each accepts or refuses its input with the refusal the
  server turns into a 4xx; any other exception escapes and is the bug the fuzzer reports.
- `loopback_only`: inputs reach a real ICE agent on the HTTP paths, which sends STUN checks
  to every candidate address it is given and asks multicast DNS for `*.local` names. Every
  body is passed through it first, so that a fuzzed address can only ever be this machine.
- The corpus: `fuzz/corpus/<harness>/`, one input per file, the seeds and what the fuzzer
  found interesting; the tests replay all of it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

from aiortc import RTCIceCandidate, RTCPeerConnection

from config.settings import AdminSettings, GeoSettings, Settings, ViewerTokenSettings
from relay.codecs import RelayCodec
from relay.errors import OfferRejected
from relay.negotiation import (
    add_remote_candidate,
    ice_credentials,
    parse_offer,
    require_relayable_codecs,
    require_viewer_codecs,
)
from server.sdpfrag import SdpFragError, parse_sdpfrag
from tests.conftest import TOKENS, make_settings

CORPUS = Path(__file__).resolve().parent / "corpus"
HARNESSES = ("offer", "sdpfrag", "http")

# What a live studio sends in the tests: aiortc's H.264 and Opus.
STUDIO_CODECS = {
    "video": RelayCodec(
        "video/H264",
        90000,
        None,
        {
            "level-asymmetry-allowed": "1",
            "packetization-mode": "1",
            "profile-level-id": "42e01f",
        },
    ),
    "audio": RelayCodec("audio/opus", 48000, 2),
}

STUDIO_TOKEN = TOKENS["berlin"]
ADMIN_TOKEN = "admin-token-0123456789abcdef"
VIEWER_TOKEN_SECRET = "viewer-token-secret-0123456789abcdef0123"

_MDNS_NAME = re.compile(r"[a-zA-Z0-9-]{1,63}\.local", re.ASCII | re.IGNORECASE)
_TOKEN = re.compile(r"\S+")


def _safe_token(match: re.Match[str]) -> str:
    token = match[0]
    if _MDNS_NAME.fullmatch(token):
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(token)
    except ValueError:
        return token
    return token if address.is_loopback else "127.0.0.1"


def loopback_only(text: str) -> str:
    """`text` with every address other than loopback, and every mDNS name, made 127.0.0.1.

    Tokens are split on whitespace exactly as aiortc splits a candidate line, so no
    address of another host can reach an ICE agent whatever the line structure.
    """
    return _TOKEN.sub(_safe_token, text)


def hostile_settings(**relay: float | int) -> Settings:
    """The tests' two studios (cairo's viewers need a signed viewer token), the admin API on,
    forwarded headers believed from loopback so that the geo path parses them, and no
    per-client rate limit, so that every request reaches its handler (a 429 would answer
    most of them before any parsing)."""
    settings = make_settings(**relay)
    return dataclasses.replace(
        settings,
        studios=tuple(
            dataclasses.replace(s, require_viewer_token=s.id == "cairo") for s in settings.studios
        ),
        geo=GeoSettings(trusted_proxies=("127.0.0.1", "::1")),
        limits=dataclasses.replace(settings.limits, rate_per_second=0.0),
        admin=AdminSettings(token=ADMIN_TOKEN),
        viewer_tokens=ViewerTokenSettings(secret=VIEWER_TOKEN_SECRET),
    )


# ----------------------------------------------------------------------------- the checks


def check_offer(text: str) -> str:
    """The offer path as WHIP and WHEP run it before aiortc: "accepted" or "refused"."""
    try:
        description = parse_offer(text)
        ice_credentials(text)
        require_relayable_codecs(description)
        require_viewer_codecs(description, STUDIO_CODECS)
    except OfferRejected:
        return "refused"
    return "accepted"


class _CandidateSink:
    """Stands in for a peer connection: takes any candidate, as aiortc does before ICE."""

    def __init__(self) -> None:
        self.added: list[RTCIceCandidate] = []

    async def addIceCandidate(self, candidate: RTCIceCandidate) -> None:
        self.added.append(candidate)


def run_now(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never waits (no event loop needed)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise AssertionError("the coroutine waited for something")


def check_sdpfrag(text: str) -> str:
    """The trickle path as PATCH runs it: parse the fragment, then add each candidate."""
    try:
        frag = parse_sdpfrag(text)
    except SdpFragError:
        return "refused"
    sink = _CandidateSink()
    pc = cast(RTCPeerConnection, sink)
    for mid, candidate in frag.candidates:
        try:
            run_now(add_remote_candidate(pc, candidate, mid))
        except OfferRejected:
            return "refused"
    return "accepted"


def decoded(data: bytes) -> str | None:
    """An input as the server reads a body: UTF-8 text, or None (refused with 400)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def corpus(harness: str) -> list[Path]:
    return sorted(p for p in (CORPUS / harness).iterdir() if p.is_file())
