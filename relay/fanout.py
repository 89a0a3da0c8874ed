"""Sending one track's packets to every sink of one payload type: the per-viewer hot path.

Per packet and viewer, all that runs is one SRTP protect and one send, taken from a
flat list of (protect, send) entries: no method call, no attribute lookup, no counter
per viewer. Everything else happens per packet for the whole group (the header
rewrite, the counters), and sink state changes only at keyframes, joins, departures
and when a viewer's socket is full.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Protect = Callable[[bytes], bytes]
Send = Callable[[bytes], Any]
SendEntry = tuple[Protect, Send]


class Sink(Protocol):
    """Anything that takes a track's packets: a viewer, a recorder, an edge's pull."""

    payload_type: int
    # How a packet reaches it: (protect, send). A send that raises BlockingIOError
    # found the sink's socket full: the sink cannot keep up.
    entry: SendEntry
    # Its own counts; a group adds what it sent while the sink was active.
    sent_packets: int
    sent_octets: int
    dropped: int
    group_base: tuple[int, int] | None  # the group's counts when it became active
    slow_since: int | None  # the group's packet count when it was found too slow

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
        "_blocked",
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
        self._blocked: list[Send] = []
        self._failed: list[Send] = []
        self.packets = 0
        self.octets = 0
        # Summed over sinks: what the group sent in all, for metrics without a walk.
        self.delivered = 0
        self.delivered_octets = 0
        self.dropped = 0  # packets sinks missed and will not get, summed, pending ones aside
        self.errors = 0

    def __len__(self) -> int:
        return len(self._active_sinks) + len(self.waiting) + len(self.broken)

    def send(self, data: bytes, payload_size: int, starts_keyframe: bool) -> None:
        if starts_keyframe and self.waiting:
            self._start_waiting()
        blocked = self._blocked
        failed = self._failed
        for protect, send in self._active:
            try:
                send(protect(data))
            except BlockingIOError:  # its socket is full: this packet is lost to it
                blocked.append(send)
            except Exception:  # one broken sink must not starve the others
                failed.append(send)
        if blocked or failed:
            self._set_aside(blocked, failed)
        self.packets += 1
        self.octets += payload_size
        self.delivered += len(self._active)
        self.delivered_octets += len(self._active) * payload_size

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

    def _set_aside(self, blocked: list[Send], failed: list[Send]) -> None:
        """Hold the sinks that could not keep up; stop sending to those that broke.

        Called before the packet is counted: to these sinks it was not delivered.
        """
        if blocked:
            slow = set(blocked)
            blocked.clear()
            self._hold([s for s in self._active_sinks if s.entry[1] in slow])
        if failed:
            broken = set(failed)
            failed.clear()
            self.errors += len(broken)
            for sink in [s for s in self._active_sinks if s.entry[1] in broken]:
                self._stop(sink)
                self.broken.append(sink)
                sink.failed()
            self._active_sinks = [s for s in self._active_sinks if s.entry[1] not in broken]
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
