"""The RTCP the relay writes itself: sender reports and the CNAME that goes with them.

Written with struct rather than aiortc's packet classes because every viewer gets
one per track every second or so.
"""

from __future__ import annotations

import struct

_RTCP_VERSION_2 = 0x80
_PT_SR = 200
_PT_SDES = 202
_SDES_CNAME = 1
_SR = struct.Struct("!BBHIIIIII")


def sender_report(
    ssrc: int, ntp_timestamp: int, rtp_timestamp: int, packet_count: int, octet_count: int
) -> bytes:
    """An RTCP SR without report blocks (RFC 3550 section 6.4.1)."""
    return _SR.pack(
        _RTCP_VERSION_2,
        _PT_SR,
        6,  # length in 32-bit words minus one
        ssrc,
        (ntp_timestamp >> 32) & 0xFFFFFFFF,
        ntp_timestamp & 0xFFFFFFFF,
        rtp_timestamp & 0xFFFFFFFF,
        packet_count & 0xFFFFFFFF,
        octet_count & 0xFFFFFFFF,
    )


def source_description(ssrc: int, cname: bytes) -> bytes:
    """An RTCP SDES with one chunk carrying the CNAME (RFC 3550 section 6.5)."""
    chunk = struct.pack("!IBB", ssrc, _SDES_CNAME, len(cname)) + cname + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return struct.pack("!BBH", _RTCP_VERSION_2 | 1, _PT_SDES, len(chunk) // 4) + chunk
