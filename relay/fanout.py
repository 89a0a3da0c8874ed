"""Sending one track's packets to every sink of one payload type: the per-viewer hot path.

Per packet and viewer, all that runs is one SRTP protect and one send, taken from a
flat list of (protect, send, address) entries: no method call, no attribute lookup,
no counter per viewer. Everything else happens per packet for the whole group (the
header rewrite, the counters) or per frame (the check for viewers that cannot keep
up), and sink state changes only at keyframes, joins and departures.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Protect = Callable[[bytes], bytes]
Send = Callable[[bytes, Any], None]
SendEntry = tuple[Protect, Send, Any]

# Every this many packets a group looks for slow sinks even if no frame ends (audio).
_BACKLOG_CHECK_MASK = 31


class Sink(Protocol):
    """Anything that takes a track's packets: a viewer, a recorder, an edge's pull."""

    payload_type: int
    entry: SendEntry  # how a packet reaches it: (protect, send, address)
    buffer_limit: int  # bytes waiting in its socket beyond which it is too slow
    # Its own counts; a group adds what it sent while the sink was active.
    sent_packets: int
    sent_octets: int
    dropped: int
    group_base: tuple[int, int] | None  # the group's counts when it became active
    slow_since: int | None  # the group's packet count when it was found too slow

    def backlog(self) -> int:
        """Bytes queued for sending and not yet taken by the kernel."""

    def started(self) -> None:
        """Called each time the sink starts at a keyframe."""

    def fell_behind(self) -> None:
        """Called when the sink is found too slow and now waits for a keyframe."""

    def failed(self) -> None:
        """Called once when sending to the sink raised: it gets nothing more."""


class FanoutGroup:
    """The sinks of one track that share a payload type, hence one plaintext packet."""

    __slots__ = (
        "_active",
        "_active_sinks",
        "_failed",
        "broken",
        "delivered",
        "delivered_octets",
        "dropped",
        "errors",
        "octets",
        "packets",
        "payload_type",
        "waiting",
    )

    def __init__(self, payload_type: int) -> None:
        self.payload_type = payload_type
        self._active: list[SendEntry] = []
        self._active_sinks: list[Sink] = []
        self.waiting: list[Sink] = []
        self.broken: list[Sink] = []
        self._failed: list[Any] = []
        self.packets = 0
        self.octets = 0
        # Summed over sinks: what the group sent in all, for metrics without a walk.
        self.delivered = 0
        self.delivered_octets = 0
        self.dropped = 0  # packets sinks missed and will not get, summed, pending ones aside
        self.errors = 0

    def __len__(self) -> int:
        return len(self._active_sinks) + len(self.waiting) + len(self.broken)

    def send(self, data: bytes, payload_size: int, starts_keyframe: bool, ends_frame: int) -> None:
        if starts_keyframe and self.waiting:
            self._start_waiting()
        failed = self._failed
        for protect, send, address in self._active:
            try:
                send(protect(data), address)
            except Exception:  # one broken sink must not starve the others
                failed.append(address)
        self.packets += 1
        self.octets += payload_size
        self.delivered += len(self._active)
        self.delivered_octets += len(self._active) * payload_size
        if failed:
            self._remove_failed()
        if ends_frame or not self.packets & _BACKLOG_CHECK_MASK:
            self._hold_slow_sinks()

    # ------------------------------------------------------------------ membership

    def add(self, sink: Sink) -> None:
        """A new sink waits for the next keyframe."""
        sink.group_base = None
        self.waiting.append(sink)

    def add_started(self, sink: Sink) -> None:
        """A sink that needs no keyframe (audio) starts with the next packet."""
        self._start(sink)
        self._rebuild()

    def remove(self, sink: Sink) -> bool:
        self._settle_drops(sink)
        if sink in self.broken:
            self.broken = [s for s in self.broken if s is not sink]
            return True
        if sink in self.waiting:
            self.waiting = [s for s in self.waiting if s is not sink]
            return True
        if sink in self._active_sinks:
            self._stop(sink)
            self._active_sinks = [s for s in self._active_sinks if s is not sink]
            self._rebuild()
            return True
        return False

    def hold_all(self) -> None:
        """Every sink waits for the next keyframe (the input changed under them)."""
        for sink in self._active_sinks:
            self._stop(sink)
        self.waiting += self._active_sinks
        self._active_sinks = []
        self._rebuild()

    def sinks(self) -> list[Sink]:
        return self._active_sinks + self.waiting + self.broken

    def packets_of(self, sink: Sink) -> tuple[int, int]:
        """(packets, payload octets) sent to a sink so far."""
        if sink.group_base is None:
            return sink.sent_packets, sink.sent_octets
        base_packets, base_octets = sink.group_base
        return (
            sink.sent_packets + self.packets - base_packets,
            sink.sent_octets + self.octets - base_octets,
        )

    def dropped_of(self, sink: Sink) -> int:
        if sink.slow_since is None:
            return sink.dropped
        return sink.dropped + self.packets - sink.slow_since

    # ------------------------------------------------------------------ transitions

    def pending_drops(self) -> int:
        """Packets missed so far by sinks that are still skipping to a keyframe."""
        return sum(self.packets - s.slow_since for s in self.waiting if s.slow_since is not None)

    def _settle_drops(self, sink: Sink) -> None:
        if sink.slow_since is not None:
            missed = self.packets - sink.slow_since
            sink.dropped += missed
            self.dropped += missed
            sink.slow_since = None

    def _start(self, sink: Sink) -> None:
        self._settle_drops(sink)
        sink.group_base = (self.packets, self.octets)
        self._active_sinks.append(sink)
        sink.started()

    def _stop(self, sink: Sink) -> None:
        sink.sent_packets, sink.sent_octets = self.packets_of(sink)
        sink.group_base = None

    def _start_waiting(self) -> None:
        waiting, self.waiting = self.waiting, []
        for sink in waiting:
            self._start(sink)
        self._rebuild()

    def _hold_slow_sinks(self) -> None:
        slow = [s for s in self._active_sinks if s.backlog() > s.buffer_limit]
        if slow:
            self._hold(slow)

    def _remove_failed(self) -> None:
        failed = set(self._failed)
        self._failed.clear()
        self.errors += len(failed)
        self.delivered -= len(failed)
        broken = [s for s in self._active_sinks if s.entry[2] in failed]
        for sink in broken:
            self._stop(sink)
            self.broken.append(sink)
            sink.failed()
        self._active_sinks = [s for s in self._active_sinks if s.entry[2] not in failed]
        self._rebuild()

    def _hold(self, sinks: list[Sink]) -> None:
        """Skip these sinks to the next keyframe, counting what they miss as dropped,
        rather than queue without bound or hold up the studio and everyone else."""
        for sink in sinks:
            self._stop(sink)
            sink.slow_since = self.packets
            self.waiting.append(sink)
            sink.fell_behind()
        self._active_sinks = [s for s in self._active_sinks if s.slow_since is None]
        self._rebuild()

    def _rebuild(self) -> None:
        # A new list: a send() iterating the old one is not disturbed.
        self._active = [sink.entry for sink in self._active_sinks]
