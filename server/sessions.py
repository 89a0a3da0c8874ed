"""WHIP and WHEP session resources: unguessable URLs, entity tags, one registry."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal, Protocol

log = logging.getLogger("meridian.sessions")

Protocol_ = Literal["whip", "whep"]


class RtcSession(Protocol):
    """What the HTTP layer needs of a studio or viewer session."""

    end_reason: str | None
    ended: asyncio.Event  # set once the peer connection is closed
    created_at: float  # time.monotonic() when the offer arrived

    @property
    def connected(self) -> bool:
        """ICE and DTLS are up."""

    async def answer(self, offer_sdp: str) -> str: ...

    async def add_ice_candidate(self, candidate_sdp: str, mid: str | None) -> None: ...

    def end(self, reason: str) -> None: ...


def new_session_id() -> str:
    """192 random bits, URL-safe: a session URL cannot be guessed."""
    return secrets.token_urlsafe(24)


def new_etag() -> str:
    return f'"{secrets.token_hex(8)}"'


@dataclass(eq=False)
class SessionResource:
    id: str
    protocol: Protocol_
    studio_id: str
    session: RtcSession
    etag: str = field(default_factory=new_etag)
    ice_ufrag: str = ""
    ice_pwd: str = ""

    @property
    def path(self) -> str:
        return f"/{self.protocol}/{self.studio_id}/{self.id}"


class SessionRegistry:
    def __init__(self) -> None:
        self._by_id: dict[str, SessionResource] = {}
        self._counts: Counter[tuple[Protocol_, str]] = Counter()  # (protocol, studio) -> sessions
        self.removed_total = 0  # sessions ever forgotten: how the memory reclaimer sees crowds go

    def add(self, resource: SessionResource) -> None:
        self._by_id[resource.id] = resource
        self._counts[resource.protocol, resource.studio_id] += 1

    def get(self, protocol: Protocol_, studio_id: str, session_id: str) -> SessionResource | None:
        resource = self._by_id.get(session_id)
        if resource is None or resource.protocol != protocol or resource.studio_id != studio_id:
            return None
        return resource

    def find(self, session_id: str) -> SessionResource | None:
        """A session by id alone, whatever its protocol and studio (the admin API)."""
        return self._by_id.get(session_id)

    def remove(self, session_id: str) -> bool:
        """Forget a session; False if it was not registered (never answered, or gone)."""
        resource = self._by_id.pop(session_id, None)
        if resource is None:
            return False
        self._counts[resource.protocol, resource.studio_id] -= 1
        self.removed_total += 1
        return True

    def count(self, protocol: Protocol_, studio_id: str | None = None) -> int:
        """Sessions of a protocol, of one studio or of all."""
        if studio_id is not None:
            return self._counts[protocol, studio_id]
        return sum(n for (p, _), n in self._counts.items() if p == protocol)

    def all(self) -> list[SessionResource]:
        return list(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
