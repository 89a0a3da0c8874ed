"""The last second or so of a track's packets, to answer viewers' NACKs."""

from __future__ import annotations

from typing import NamedTuple


class CachedPacket(NamedTuple):
    sequence_number: int
    timestamp: int
    marker: int
    payload: bytes


class PacketCache:
    """A ring indexed by output sequence number; old entries are overwritten in place."""

    __slots__ = ("_mask", "_slots")

    def __init__(self, size: int = 1024) -> None:
        if size & (size - 1):
            raise ValueError("cache size must be a power of two")
        self._mask = size - 1
        self._slots: list[CachedPacket | None] = [None] * size

    def put(self, packet: CachedPacket) -> None:
        self._slots[packet.sequence_number & self._mask] = packet

    def get(self, sequence_number: int) -> CachedPacket | None:
        packet = self._slots[sequence_number & self._mask]
        if packet is None or packet.sequence_number != sequence_number:
            return None
        return packet

    def clear(self) -> None:
        self._slots = [None] * len(self._slots)
