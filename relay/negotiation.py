"""Offer/answer around aiortc: bad offers get a precise refusal before aiortc sees them."""

from __future__ import annotations

import re

from aiortc import (
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
    sdp,
)
from aiortc.exceptions import OperationError
from aiortc.rtcpeerconnection import is_codec_compatible
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from relay import rtc_internals
from relay.codecs import RelayCodec
from relay.errors import InvalidOffer, UnsupportedOffer

MEDIA_KINDS = ("audio", "video")
# Longest SDP line accepted: real offers' longest lines (fingerprints, candidates, fmtp)
# are a few hundred characters.
MAX_SDP_LINE_LENGTH = 1024
_SDP_LINE = re.compile(r"^[a-z]=")


def parse_offer(
    text: str, max_media: int = 8, max_line_length: int = MAX_SDP_LINE_LENGTH
) -> sdp.SessionDescription:
    """Parse an SDP offer and check what aiortc would otherwise trip over."""
    if not text.strip().startswith("v=0"):
        raise InvalidOffer("the body is not an SDP session description (it must start with v=0)")
    for number, line in enumerate(text.splitlines(), 1):
        if len(line) > max_line_length:
            raise InvalidOffer(
                f"SDP line {number} ({line[:24]!r}...) is {len(line)} characters long; "
                f"at most {max_line_length} are accepted"
            )
        line = line.strip()
        if line and not _SDP_LINE.match(line):
            raise InvalidOffer(f"the SDP line {line[:80]!r} is not of the form <letter>=<value>")
        if line.startswith("m=") and len(line.split()) < 4:
            raise InvalidOffer(f"the SDP line {line[:80]!r} lacks a port, protocol or format")
    try:
        description = sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises many kinds on malformed lines
        reason = str(exc) or type(exc).__name__
        raise InvalidOffer(f"the SDP offer cannot be parsed: {reason}") from exc
    media = description.media
    if not any(m.kind in MEDIA_KINDS for m in media):
        raise UnsupportedOffer("the offer has no audio or video m-line")
    if len(media) > max_media:
        raise InvalidOffer(f"the offer has {len(media)} m-lines; at most {max_media} are accepted")
    mid_list = [m.rtp.muxId for m in media]
    if any(not mid for mid in mid_list):
        raise InvalidOffer("every m-line needs an a=mid (WHIP and WHEP offers use BUNDLE)")
    if len(set(mid_list)) != len(mid_list):
        raise InvalidOffer(f"the offer repeats an a=mid value: {', '.join(map(str, mid_list))}")
    mids = set(mid_list)
    for group in description.group:
        missing = [mid for mid in group.items if mid not in mids]
        if missing:
            raise InvalidOffer(
                f"a=group:{group.semantic} names m-line mid {', '.join(map(str, missing))}, "
                "which the offer does not have"
            )
    for m in media:
        if m.kind not in MEDIA_KINDS:
            continue
        if m.dtls is None or not m.dtls.fingerprints:
            raise InvalidOffer(f"the {m.kind} m-line has no a=fingerprint (DTLS-SRTP is required)")
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise InvalidOffer(f"the {m.kind} m-line has no a=ice-ufrag/a=ice-pwd")
        for codec in m.rtp.codecs:
            require_h264_packetization_mode(codec)
    return description


def require_h264_packetization_mode(codec: RTCRtpCodecParameters) -> None:
    """aiortc compares H.264 codecs by this number; one it cannot read is malformed."""
    if codec.mimeType.lower() != "video/h264":
        return
    mode = codec.parameters.get("packetization-mode", "0")
    if not isinstance(mode, int) and not (isinstance(mode, str) and mode.isdecimal()):
        given = "no value" if mode is None else repr(mode)
        raise InvalidOffer(
            f"a=fmtp:{codec.payloadType} gives H.264 packetization-mode {given}; "
            "it must be a number (0, 1 or 2)"
        )


def ice_credentials(offer_sdp: str) -> tuple[str, str]:
    """The offer's ICE ufrag and password (BUNDLE: the first m-line's stand for all)."""
    description = sdp.SessionDescription.parse(offer_sdp)
    for m in description.media:
        if m.ice is not None and m.ice.usernameFragment:
            return m.ice.usernameFragment, m.ice.password or ""
    return "", ""


def media_sections(description: sdp.SessionDescription) -> list[sdp.MediaDescription]:
    return [m for m in description.media if m.kind in MEDIA_KINDS]


def to_relay_codec(codec: RTCRtpCodecParameters) -> RelayCodec:
    return RelayCodec(
        mime_type=codec.mimeType,
        clock_rate=codec.clockRate,
        channels=codec.channels,
        parameters={k: v for k, v in codec.parameters.items()},
    )


def to_codec_parameters(codec: RelayCodec, payload_type: int) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(
        mimeType=codec.mime_type,
        clockRate=codec.clock_rate,
        channels=codec.channels,
        payloadType=payload_type,
        parameters=dict(codec.parameters),
    )


def matching_payload_type(media: sdp.MediaDescription, codec: RelayCodec) -> int | None:
    """The payload type under which an m-line accepts exactly the studio's codec."""
    wanted = to_codec_parameters(codec, 0)
    for offered in media.rtp.codecs:
        if is_codec_compatible(wanted, offered) and offered.payloadType is not None:
            return offered.payloadType
    return None


def describe_offered(codec: RTCRtpCodecParameters) -> str:
    return to_relay_codec(codec).describe()


def require_relayable_codecs(description: sdp.SessionDescription) -> None:
    """A studio's every sending m-line must offer a codec Meridian forwards.

    Otherwise aiortc cannot answer the offer at all; say precisely why.
    """
    for m in media_sections(description):
        if m.direction not in ("sendonly", "sendrecv"):
            continue
        capabilities = RTCRtpSender.getCapabilities(m.kind).codecs
        relayable = [
            c
            for c in m.rtp.codecs
            if any(
                is_codec_compatible(
                    RTCRtpCodecParameters(
                        mimeType=cap.mimeType,
                        clockRate=cap.clockRate,
                        payloadType=0,
                        parameters=cap.parameters,
                    ),
                    c,
                )
                for cap in capabilities
                if cap.name != "rtx"
            )
        ]
        if not relayable:
            offered = ", ".join(sorted({describe_offered(c) for c in m.rtp.codecs})) or "none"
            raise UnsupportedOffer(
                f"no codec of the {m.kind} m-line can be relayed: it offers {offered}; "
                "Meridian relays H.264 "
                "(packetization-mode 1; baseline, main or high profile), VP8 and Opus"
            )


def require_viewer_codecs(
    description: sdp.SessionDescription, codecs: dict[str, RelayCodec]
) -> dict[str, int]:
    """Kind -> the viewer's payload type for each kind the studio sends.

    No transcoding: a viewer that cannot take the studio's codec as it is gets a
    refusal that names that codec.
    """
    chosen: dict[str, int] = {}
    for m in media_sections(description):
        codec = codecs.get(m.kind)
        if codec is None or m.kind in chosen or m.direction not in ("recvonly", "sendrecv"):
            continue
        payload_type = matching_payload_type(m, codec)
        if payload_type is None:
            offered = ", ".join(sorted({describe_offered(c) for c in m.rtp.codecs})) or "none"
            raise UnsupportedOffer(
                f"the studio sends {codec.describe()}, which the offer's {m.kind} m-line "
                f"does not accept (it offers {offered}); Meridian does not transcode"
            )
        chosen[m.kind] = payload_type
    if not chosen:
        kinds = " and ".join(sorted(codecs)) or "nothing"
        raise UnsupportedOffer(f"the offer receives none of what the studio sends ({kinds})")
    return chosen


async def apply_remote_offer(pc: RTCPeerConnection, offer_sdp: str) -> None:
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
    except OperationError as exc:
        raise UnsupportedOffer(f"the SDP offer cannot be served: {exc}") from exc
    except Exception as exc:
        # Whatever else aiortc trips over in an offer that passed the checks above is
        # still the offer's doing: a client error, never a 500.
        raise InvalidOffer(f"the SDP offer was refused: {exc or type(exc).__name__}") from exc


async def answer_offer(pc: RTCPeerConnection) -> None:
    """Create and apply the answer; an offer aiortc cannot answer is the client's error."""
    try:
        await pc.setLocalDescription(await pc.createAnswer())
    except OperationError as exc:
        raise UnsupportedOffer(f"the SDP offer cannot be answered: {exc}") from exc
    except Exception as exc:
        raise InvalidOffer(
            f"the SDP offer cannot be answered: {exc or type(exc).__name__}"
        ) from exc


def answer_only_with(transceiver: RTCRtpTransceiver, codec: RelayCodec) -> None:
    """Let the answer carry nothing but the studio's codec on this m-line (no RTX either)."""
    wanted = to_codec_parameters(codec, 0)
    common = rtc_internals.transceiver_codecs(transceiver)
    chosen = [c for c in common if is_codec_compatible(c, wanted)][:1]
    if not chosen:
        raise UnsupportedOffer(f"{codec.describe()} cannot be negotiated")
    rtc_internals.set_transceiver_codecs(transceiver, chosen)


def negotiated_codec(transceiver: RTCRtpTransceiver) -> RTCRtpCodecParameters | None:
    """The codec the answer put first on this m-line (RTX aside)."""
    for codec in rtc_internals.transceiver_codecs(transceiver):
        if codec.name.lower() != "rtx":
            return codec
    return None


async def add_remote_candidate(pc: RTCPeerConnection, candidate_line: str, mid: str | None) -> None:
    """Add one trickled candidate (`candidate:...` from an sdpfrag's a=candidate line)."""
    try:
        candidate = sdp.candidate_from_sdp(candidate_line.removeprefix("candidate:"))
    except (ValueError, IndexError, AssertionError) as exc:  # aiortc asserts on short lines
        raise InvalidOffer(f"bad ICE candidate {candidate_line!r}: {exc}") from exc
    candidate.sdpMid = mid
    candidate.sdpMLineIndex = None if mid is not None else 0
    try:
        await pc.addIceCandidate(candidate)
    except (ValueError, KeyError) as exc:
        raise InvalidOffer(f"ICE candidate refused: {exc}") from exc
