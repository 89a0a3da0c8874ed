"""What every WebRTC session of the relay shares, a studio's or a viewer's: its peer
connection's lifetime, from negotiation to a single, idempotent end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

from relay import rtc_internals
from relay.negotiation import add_remote_candidate

EndCallback = Callable[[Any, str], None]


class PeerSession:
    """A peer connection that ends exactly once, for a reason, and cleans up after itself.

    Subclasses negotiate, react to `_connected()` and release what they hold in
    `_release()`; ending cancels their background tasks and closes the connection.
    """

    def __init__(
        self,
        *,
        connect_timeout: float,
        certificate: rtc_internals.SharedCertificate | None,
        on_end: EndCallback | None,
    ) -> None:
        self.created_at = time.monotonic()
        self.end_reason: str | None = None
        self.ended = asyncio.Event()  # set once the peer connection is closed
        self._pc = rtc_internals.new_peer_connection(certificate)
        self._pc.on("connectionstatechange", self._on_connection_state)
        self._connect_timeout = connect_timeout
        self._on_end = on_end
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing: asyncio.Future[None] | None = None

    @property
    def connected(self) -> bool:
        return self._pc.connectionState == "connected"

    async def add_ice_candidate(self, candidate_sdp: str, mid: str | None) -> None:
        await add_remote_candidate(self._pc, candidate_sdp, mid)

    def end(self, reason: str) -> None:
        """Stop and close the peer connection; safe to call more than once."""
        if self.end_reason is not None:
            return
        self.end_reason = reason
        self._release()
        for task in self._tasks:
            task.cancel()
        self._closing = asyncio.ensure_future(self._close())
        if self._on_end is not None:
            self._on_end(self, reason)

    def _release(self) -> None:
        """Let go of relay state (sinks, the source) when the session ends."""

    def _connected(self) -> None:
        """ICE and DTLS are up: media can flow."""

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _expire_unless_connected(self) -> None:
        """End the session if ICE and DTLS do not complete in time (from the offer's arrival)."""

        async def expire() -> None:
            deadline = self.created_at + self._connect_timeout
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            if not self.connected:
                self.end("timeout")

        self._spawn(expire())

    async def _close(self) -> None:
        try:
            await self._pc.close()
        finally:
            self.ended.set()

    async def _on_connection_state(self) -> None:
        state = self._pc.connectionState
        if self.end_reason is not None:
            return
        if state == "connected":
            self._connected()
        elif state in ("failed", "closed"):
            self.end("ice_failed" if state == "failed" else "closed_by_peer")
