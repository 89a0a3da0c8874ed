"""Who may start a session now: load shedding by caps, and no new sessions while draining.

Viewers (WHEP) are counted from the moment their offer is being answered, so a burst of
offers cannot overshoot a cap while the first ones negotiate. Three caps, each `503` with
`Retry-After` (`limits.*`, 0: no cap): viewers on this node, viewers of one studio, and
viewer sessions still pending (offer answered, ICE and DTLS not completed). Pending ones
end at `relay.connect_timeout` after their offer arrived, so they cannot pile up.

Studios (WHIP) are never shed by a cap: they are authenticated and few, and a studio
coming back during a crowd of viewers must get in. While the server drains (SIGTERM),
every new session is refused, studios included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from config.settings import LimitSettings
from server.problems import Problem
from server.sessions import Protocol_, SessionRegistry, SessionResource


def unavailable(detail: str, retry_after: int, problem: str) -> Problem:
    return Problem(
        503,
        "Service Unavailable",
        detail,
        problem=problem,
        headers={"Retry-After": str(retry_after)},
    )


def draining_refusal(retry_after: int) -> Problem:
    return unavailable(
        "the server is shutting down and takes no new sessions; try again later",
        retry_after,
        "draining",
    )


class Admission:
    def __init__(self) -> None:
        self.draining = False
        # Registered viewer sessions that may not have connected yet (pruned when counted).
        self._pending: dict[str, SessionResource] = {}
        # Viewer offers being answered now, per studio.
        self._negotiating: Counter[str] = Counter()

    def check(
        self,
        limits: LimitSettings,
        sessions: SessionRegistry,
        protocol: Protocol_,
        studio_id: str,
    ) -> None:
        """Raise a 503 problem when this session may not start now."""
        if self.draining:
            raise draining_refusal(limits.retry_after)
        if protocol != "whep":
            return
        if limits.max_pending_sessions and self.pending() >= limits.max_pending_sessions:
            raise unavailable(
                f"{limits.max_pending_sessions} viewers are connecting already; try again later",
                limits.retry_after,
                "too-many-pending-sessions",
            )
        studio_viewers = sessions.count("whep", studio_id) + self._negotiating[studio_id]
        if limits.max_viewers_per_studio and studio_viewers >= limits.max_viewers_per_studio:
            raise unavailable(
                f"studio {studio_id!r} has its maximum of {limits.max_viewers_per_studio} "
                "viewers on this server; try again later",
                limits.retry_after,
                "studio-full",
            )
        node_viewers = sessions.count("whep") + self._negotiating.total()
        if limits.max_viewers and node_viewers >= limits.max_viewers:
            raise unavailable(
                f"this server has its maximum of {limits.max_viewers} viewers; try again later",
                limits.retry_after,
                "server-full",
            )

    @contextmanager
    def negotiating(self, protocol: Protocol_, studio_id: str) -> Iterator[None]:
        """Count a viewer's offer while it is being answered."""
        if protocol != "whep":
            yield
            return
        self._negotiating[studio_id] += 1
        try:
            yield
        finally:
            self._negotiating[studio_id] -= 1
            if not self._negotiating[studio_id]:
                del self._negotiating[studio_id]

    def registered(self, resource: SessionResource) -> None:
        if resource.protocol == "whep":
            self._pending[resource.id] = resource

    def forget(self, session_id: str) -> None:
        """The session ended."""
        self._pending.pop(session_id, None)

    def pending(self) -> int:
        """Viewer sessions not connected yet, those being negotiated included."""
        self._pending = {
            key: resource
            for key, resource in self._pending.items()
            if not resource.session.connected and resource.session.end_reason is None
        }
        return len(self._pending) + self._negotiating.total()
