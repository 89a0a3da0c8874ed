"""WHIP and WHEP session resources: unguessable URLs, entity tags, one registry."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Literal, Protocol

log = logging.getLogger("meridian.sessions")

Protocol_ = Literal["whip", "whep"]


class RtcSession(Protocol):
    """What the HTTP layer needs of a studio or viewer session."""

    end_reason: str | None
    ended: asyncio.Event  # set once the peer connection is closed

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

    def add(self, resource: SessionResource) -> None:
        self._by_id[resource.id] = resource

    def get(self, protocol: Protocol_, studio_id: str, session_id: str) -> SessionResource | None:
        resource = self._by_id.get(session_id)
        if resource is None or resource.protocol != protocol or resource.studio_id != studio_id:
            return None
        return resource

    def remove(self, session_id: str) -> bool:
        """Forget a session; False if it was not registered (never answered, or gone)."""
        return self._by_id.pop(session_id, None) is not None

    def all(self) -> list[SessionResource]:
        return list(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
