"""SDP texts for the protocol tests: offers that are wrong in exactly one way, and sdpfrags.

Pure functions on strings; the offers a real client sends come from aiortc in the tests.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# A well-formed DTLS fingerprint: the relay checks that one is there, never its value.
FINGERPRINT = "sha-256 " + ":".join(f"{i * 7 % 256:02X}" for i in range(32))
ICE_UFRAG = "sampleufrag"
ICE_PWD = "samplepassword0123456789"

# What aiortc sends: H.264 constrained to baseline profile 42001f, packetization-mode 1.
H264 = "H264/90000"
H264_FMTP = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"


def sdp(lines: Sequence[str]) -> str:
    return "".join(line + "\r\n" for line in lines)


def session_lines(mids: Sequence[str] = ()) -> list[str]:
    lines = ["v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    if mids:
        lines.append("a=group:BUNDLE " + " ".join(mids))
    return lines


def no_media_offer() -> str:
    """A valid session description without any m-line."""
    return sdp(session_lines())


def data_channel_offer() -> str:
    """Only a data channel: nothing a relay of audio and video can take."""
    return sdp(
        [
            *session_lines(["0"]),
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            "c=IN IP4 0.0.0.0",
            f"a=ice-ufrag:{ICE_UFRAG}",
            f"a=ice-pwd:{ICE_PWD}",
            f"a=fingerprint:{FINGERPRINT}",
            "a=setup:actpass",
            "a=mid:0",
            "a=sctp-port:5000",
        ]
    )


def codec_lines(kind: str, video_codec: str) -> list[str]:
    """The m-line and its codec attributes: one payload type per m-line."""
    if kind == "audio":
        return ["m=audio 9 UDP/TLS/RTP/SAVPF 111", "a=rtpmap:111 opus/48000/2"]
    lines = ["m=video 9 UDP/TLS/RTP/SAVPF 96", f"a=rtpmap:96 {video_codec}"]
    if video_codec == H264:
        lines.append(f"a=fmtp:96 {H264_FMTP}")
    return lines


def offer(
    direction: str, kinds: Sequence[str] = ("video", "audio"), video_codec: str = H264
) -> str:
    """A browser-like offer (ICE credentials, fingerprint, BUNDLE), all m-lines `direction`."""
    mids = [str(index) for index in range(len(kinds))]
    lines = session_lines(mids)
    for mid, kind in zip(mids, kinds, strict=True):
        m_line, *codec_attributes = codec_lines(kind, video_codec)
        lines += [
            m_line,
            "c=IN IP4 0.0.0.0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            f"a=ice-ufrag:{ICE_UFRAG}",
            f"a=ice-pwd:{ICE_PWD}",
            "a=ice-options:trickle",
            f"a=fingerprint:{FINGERPRINT}",
            "a=setup:actpass",
            f"a=mid:{mid}",
            f"a={direction}",
            "a=rtcp-mux",
            *codec_attributes,
        ]
    return sdp(lines)


def lines_of(text: str) -> list[str]:
    return [line for line in text.replace("\r\n", "\n").split("\n") if line]


def without_candidates(text: str) -> str:
    """The offer a trickling client sends first: no candidates, no end-of-candidates."""
    return sdp(
        [
            line
            for line in lines_of(text)
            if not line.startswith("a=candidate:") and line != "a=end-of-candidates"
        ]
    )


def media_directions(text: str) -> list[str]:
    """The direction attribute of each m-section (`sendrecv` when it has none, RFC 8866)."""
    directions: list[str] = []
    for section in re.split(r"^m=", "\n".join(lines_of(text)), flags=re.M)[1:]:
        found = re.findall(r"^a=(sendrecv|sendonly|recvonly|inactive)$", section, flags=re.M)
        directions.append(found[0] if found else "sendrecv")
    return directions


def ice_credentials(text: str) -> tuple[str, str]:
    """The first ice-ufrag and ice-pwd of a description."""
    text = "\n".join(lines_of(text))
    ufrag = re.search(r"^a=ice-ufrag:(\S+)$", text, flags=re.M)
    pwd = re.search(r"^a=ice-pwd:(\S+)$", text, flags=re.M)
    if ufrag is None or pwd is None:
        raise ValueError("the description has no ICE credentials")
    return ufrag[1], pwd[1]


def first_candidate(text: str) -> tuple[str, str]:
    """(mid, `candidate:...`) of the first a=candidate line of a description."""
    mid = ""
    for line in lines_of(text):
        if line.startswith("a=mid:"):
            mid = line.removeprefix("a=mid:")
        elif line.startswith("a=candidate:"):
            return mid, line.removeprefix("a=")
    raise ValueError("the description has no candidate")


def trickle_fragment(ufrag: str, pwd: str, mid: str, candidate: str) -> str:
    """An RFC 8840 fragment carrying one candidate of the m-line `mid`."""
    return sdp(
        [
            f"a=ice-ufrag:{ufrag}",
            f"a=ice-pwd:{pwd}",
            "m=audio 9 UDP/TLS/RTP/SAVPF 0",
            f"a=mid:{mid}",
            f"a={candidate}",
        ]
    )


def restart_fragment(ufrag: str, pwd: str) -> str:
    """An ICE restart: new credentials, no candidates yet (RFC 9725 section 4.3.2)."""
    return sdp([f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}"])
