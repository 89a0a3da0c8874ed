"""One outgoing RTP stream of a studio (its video or its audio), as viewers receive it.

The track outlives the studio's WHIP sessions: when the studio reconnects, the new
input is rebased onto the same output SSRC, sequence numbers and timestamps, so a
player sees one continuous stream that resumes at the next keyframe.

The hot path (`forward`) writes each packet's 12-byte header once per payload type
and shares those bytes with every sink of that payload type (relay/fanout.py); per
sink only SRTP protection and the send remain.
"""

from __future__ import annotations

import random
import struct
import time
from typing import NamedTuple

from relay.codecs import RelayCodec, keyframe_detector
from relay.fanout import FanoutGroup, Sink
from relay.packet_cache import CachedPacket, PacketCache

_RTP_HEADER = struct.Struct("!BBHII")
_RTP_VERSION_2 = 0x80
# How far back a sequence number counts as reordered rather than wrapped around.
_REORDER_WINDOW = 0x8000


class EgressTotals(NamedTuple):
    packets: int
    octets: int
    dropped: int


def build_rtp(payload_type: int, packet: CachedPacket, ssrc: int) -> bytes:
    """The plain RTP packet for one sink's payload type (no extensions, no CSRCs)."""
    return (
        _RTP_HEADER.pack(
            _RTP_VERSION_2,
            (packet.marker << 7) | payload_type,
            packet.sequence_number,
            packet.timestamp,
            ssrc,
        )
        + packet.payload
    )


class OutputTrack:
    def __init__(self, kind: str, cache_size: int = 1024) -> None:
        self.kind = kind
        self.ssrc = random.getrandbits(32)
        self.codec: RelayCodec | None = None
        self.cache = PacketCache(cache_size)
        self._starts_keyframe = keyframe_detector(RelayCodec("audio/none", 0))
        self._groups: dict[int, FanoutGroup] = {}
        self._group_list: list[FanoutGroup] = []
        self._input_ssrc: int | None = None
        self._seq_offset = 0
        self._ts_offset = 0
        # Output position and when it was reached, to rebase the next input onto.
        self.last_sequence_number = random.getrandbits(16)
        self.last_timestamp = random.getrandbits(32)
        self.last_arrival = 0.0
        # Latest sender report mapping: NTP time (64-bit) -> output RTP timestamp.
        self.report_ntp: int | None = None
        self.report_timestamp = 0
        self.packets_in = 0
        self.bytes_in = 0
        self.keyframes_in = 0
        self.last_keyframe_at = 0.0
        # Counts of fan-out groups and sinks that are gone (counters never go back).
        self._delivered_before = 0
        self._delivered_octets_before = 0
        self._dropped_before = 0
        self.retransmitted = 0
        self.retransmitted_octets = 0
        self._keyframe_timestamp = -1

    # ------------------------------------------------------------------ input side

    def set_codec(self, codec: RelayCodec) -> bool:
        """Take a (re)publishing studio's codec; False when it differs from the old one."""
        changed = self.codec is not None and self.codec != codec
        self.codec = codec
        self._starts_keyframe = keyframe_detector(codec)
        self._input_ssrc = None  # rebase on the new input's first packet
        if changed:
            self.cache.clear()
        return not changed

    def forward(
        self, ssrc: int, sequence_number: int, timestamp: int, marker: int, payload: bytes
    ) -> None:
        """Relay one packet from the studio to every sink."""
        now = time.monotonic()
        if ssrc != self._input_ssrc:
            self._rebase(ssrc, sequence_number, timestamp, now)
        out_seq = (sequence_number + self._seq_offset) & 0xFFFF
        out_ts = (timestamp + self._ts_offset) & 0xFFFFFFFF
        if (out_seq - self.last_sequence_number) & 0xFFFF < _REORDER_WINDOW:
            self.last_sequence_number = out_seq
            self.last_timestamp = out_ts
            self.last_arrival = now
        starts_keyframe = self._starts_keyframe(payload)
        self.packets_in += 1
        self.bytes_in += len(payload)
        if starts_keyframe and self.kind == "video" and out_ts != self._keyframe_timestamp:
            # Parameter sets and the IDR slice may each start a packet: count frames once.
            self._keyframe_timestamp = out_ts
            self.keyframes_in += 1
            self.last_keyframe_at = now
        packet = CachedPacket(out_seq, out_ts, marker, payload)
        self.cache.put(packet)
        ssrc = self.ssrc
        size = len(payload)
        for group in self._group_list:
            group.send(build_rtp(group.payload_type, packet, ssrc), size, starts_keyframe)

    def _rebase(self, ssrc: int, sequence_number: int, timestamp: int, now: float) -> None:
        """Continue the output where it stopped, advanced by the time that has passed."""
        clock_rate = self.codec.clock_rate if self.codec else 90000
        elapsed = max(1, int((now - self.last_arrival) * clock_rate)) if self.last_arrival else 1
        self._seq_offset = (self.last_sequence_number + 1 - sequence_number) & 0xFFFF
        self._ts_offset = (self.last_timestamp + elapsed - timestamp) & 0xFFFFFFFF
        self._input_ssrc = ssrc
        self.report_ntp = None
        if self.kind == "video":
            for group in self._group_list:
                group.hold_all()

    def take_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """Keep the studio's NTP/RTP mapping, moved onto the output timeline."""
        if self._input_ssrc is None:
            return
        self.report_ntp = ntp_timestamp
        self.report_timestamp = (rtp_timestamp + self._ts_offset) & 0xFFFFFFFF

    def timing_for_report(self) -> tuple[int, int]:
        """An (NTP, RTP timestamp) pair for a sender report to viewers.

        The studio's own mapping when it sent one keeps audio and video in sync
        exactly; otherwise arrival times stand in for capture times.
        """
        if self.report_ntp is not None:
            return self.report_ntp, self.report_timestamp
        clock_rate = self.codec.clock_rate if self.codec else 90000
        now = time.monotonic()
        ticks = int((now - self.last_arrival) * clock_rate) if self.last_arrival else 0
        return ntp_now(), (self.last_timestamp + ticks) & 0xFFFFFFFF

    # ------------------------------------------------------------------ output side

    def add_sink(self, sink: Sink) -> None:
        """Attach a sink: video sinks start at the next keyframe, audio sinks at once."""
        group = self._groups.get(sink.payload_type)
        if group is None:
            group = self._groups[sink.payload_type] = FanoutGroup(sink.payload_type)
            self._group_list = list(self._groups.values())
        if self.kind == "video":
            group.add(sink)
        else:
            group.add_started(sink)

    def remove_sink(self, sink: Sink) -> None:
        group = self._groups.get(sink.payload_type)
        if group is None or not group.remove(sink):
            return
        if not len(group):
            self._delivered_before += group.delivered
            self._delivered_octets_before += group.delivered_octets
            self._dropped_before += group.dropped
            del self._groups[sink.payload_type]
            self._group_list = list(self._groups.values())

    def sent_to(self, sink: Sink) -> tuple[int, int, int]:
        """(packets, payload octets, dropped) for one sink."""
        group = self._groups.get(sink.payload_type)
        if group is None:
            return sink.sent_packets, sink.sent_octets, sink.dropped
        return (*group.packets_of(sink), group.dropped_of(sink))

    def sinks(self) -> list[Sink]:
        return [sink for group in self._group_list for sink in group.sinks()]

    @property
    def sink_errors(self) -> int:
        return sum(group.errors for group in self._group_list)

    def egress_totals(self) -> EgressTotals:
        """Everything sent to sinks so far, those gone included.

        Kept as running sums by the groups, so that a scrape with thousands of viewers
        walks only the few sinks that wait for a keyframe.
        """
        packets = self._delivered_before + self.retransmitted
        octets = self._delivered_octets_before + self.retransmitted_octets
        dropped = self._dropped_before
        for group in self._group_list:
            packets += group.delivered
            octets += group.delivered_octets
            dropped += group.dropped + group.pending_drops()
        return EgressTotals(packets, octets, dropped)

    def seconds_since_keyframe(self) -> float:
        return time.monotonic() - self.last_keyframe_at


_NTP_EPOCH_OFFSET = 2208988800


def ntp_now() -> int:
    """The current time as a 64-bit NTP timestamp."""
    now = time.time() + _NTP_EPOCH_OFFSET
    return (int(now) << 32) | int((now % 1) * (1 << 32))
