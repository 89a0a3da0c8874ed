"""Codecs Meridian forwards, and how to find a keyframe in each one's RTP payload.

A joining viewer can only start decoding at a keyframe, so the relay holds each new
viewer back until the packet that starts one; detection reads only the payload
descriptor and NAL headers, never the media itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

KeyframeDetector = Callable[[bytes], bool]

H264_NAL_IDR = 5
H264_NAL_SPS = 7
H264_STAP_A = 24
H264_FU_A = 28


@dataclass(frozen=True, slots=True)
class RelayCodec:
    """The codec a studio publishes on one media kind, as the viewers must receive it."""

    mime_type: str  # "video/H264", "video/VP8", "audio/opus"
    clock_rate: int
    channels: int | None = None
    parameters: dict[str, str | int | None] = field(default_factory=dict, hash=False)

    @property
    def kind(self) -> str:
        return self.mime_type.split("/")[0]

    @property
    def name(self) -> str:
        return self.mime_type.split("/")[1]

    def describe(self) -> str:
        """How error messages name the codec, e.g. `video/H264 (profile-level-id=42e01f)`."""
        if self.name.upper() == "H264":
            return (
                f"{self.mime_type} (profile-level-id={self.parameters.get('profile-level-id')}, "
                f"packetization-mode={self.parameters.get('packetization-mode', 0)})"
            )
        return self.mime_type


def h264_starts_keyframe(payload: bytes) -> bool:
    """Whether this H.264 (RFC 6184) packet starts an IDR access unit.

    Encoders put SPS/PPS in front of every IDR picture, so the first packet of a
    keyframe carries either an SPS, or (when parameter sets are out of band) the
    first fragment of an IDR slice.
    """
    if not payload:
        return False
    nal_type = payload[0] & 0x1F
    if nal_type == H264_STAP_A:
        offset = 1
        while offset + 2 < len(payload):
            size = (payload[offset] << 8) | payload[offset + 1]
            inner = payload[offset + 2] & 0x1F
            if inner in (H264_NAL_SPS, H264_NAL_IDR):
                return True
            offset += 2 + size
        return False
    if nal_type == H264_FU_A:
        return len(payload) > 1 and bool(payload[1] & 0x80) and payload[1] & 0x1F == H264_NAL_IDR
    return nal_type in (H264_NAL_SPS, H264_NAL_IDR)


def vp8_starts_keyframe(payload: bytes) -> bool:
    """Whether this VP8 (RFC 7741) packet starts a key frame.

    The payload descriptor's S bit with partition index 0 marks a frame's first
    packet; bit 0 of the frame header that follows is 0 for a key frame.
    """
    if not payload:
        return False
    first = payload[0]
    if not first & 0x10 or first & 0x07:  # S bit, PID == 0
        return False
    offset = 1
    if first & 0x80:  # X: extension byte follows
        if len(payload) < 2:
            return False
        ext = payload[1]
        offset = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= offset:
                return False
            offset += 2 if payload[offset] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            offset += 1
        if ext & 0x30:  # T or K: TID/KEYIDX byte
            offset += 1
    return len(payload) > offset and not payload[offset] & 0x01


def keyframe_detector(codec: RelayCodec) -> KeyframeDetector:
    """The detector for a codec; every audio packet is a valid place to start."""
    name = codec.name.upper()
    if name == "H264":
        return h264_starts_keyframe
    if name == "VP8":
        return vp8_starts_keyframe
    return _always


def _always(payload: bytes) -> bool:
    return True
