"""A studio's feed inside the relay: its tracks, its publisher, its viewers.

The source exists for as long as the studio is configured, live or not, so viewers
stay attached through a studio's reconnect and see the new feed at its first keyframe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol

from relay.codecs import RelayCodec
from relay.track import OutputTrack

# How long a keyframe request may take to be answered (a round trip and a frame or
# two); past that, it or its answer is taken as lost and a new request may go out.
_KEYFRAME_ANSWER_SECONDS = 0.5


class Publisher(Protocol):
    """The studio session feeding a source (the ingest side implements it)."""

    def request_keyframe(self) -> None: ...


class Viewer(Protocol):
    """What a source needs of the sessions watching it."""

    country: str

    @property
    def flowing(self) -> bool:
        """Media is being sent to this viewer now."""

    def end(self, reason: str) -> None: ...


class Source:
    def __init__(
        self,
        studio_id: str,
        keyframe_request_interval: float = 0.3,
        silence_timeout: float = 4.0,
    ) -> None:
        self.studio_id = studio_id
        self.tracks: dict[str, OutputTrack] = {}
        self.publisher: Publisher | None = None
        self.viewers: set[Viewer] = set()
        # Other relay nodes pulling this feed (edges of a cluster): sinks, but not viewers.
        self.downstream: set[Viewer] = set()
        self.keyframe_requests_sent = 0
        self.viewer_nacks = 0
        self.sessions_started = 0
        self._keyframe_interval = keyframe_request_interval
        self._silence_timeout = silence_timeout
        self._last_keyframe_request = -1e9
        self._pending_keyframe: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ publisher

    def attach(self, publisher: Publisher, codecs: dict[str, RelayCodec]) -> None:
        """Make `publisher` the one feed of this source, replacing any earlier one.

        Viewers whose negotiated codec the new feed no longer matches are ended (their
        players must negotiate again); the others carry on at the next keyframe.
        """
        self.publisher = publisher
        self.sessions_started += 1
        for kind, codec in codecs.items():
            track = self.tracks.get(kind)
            if track is None:
                track = self.tracks[kind] = OutputTrack(kind)
            if not track.set_codec(codec):
                for viewer in [*self.viewers, *self.downstream]:
                    viewer.end("codec_changed")
        for kind in set(self.tracks) - set(codecs):
            self.tracks[kind].codec = None
        # A new encoder: what was asked of the previous one neither binds nor helps.
        self._last_keyframe_request = -1e9
        self._cancel_pending_keyframe()
        self.request_keyframe()

    def detach(self, publisher: Publisher) -> bool:
        """Forget `publisher` if it is still the current one; viewers stay attached."""
        if self.publisher is not publisher:
            return False
        self.publisher = None
        return True

    def is_current(self, publisher: Publisher) -> bool:
        return self.publisher is publisher

    @property
    def live(self) -> bool:
        """A publisher is attached and media arrived within the silence timeout."""
        return self.publisher is not None and self.seconds_since_media() < self._silence_timeout

    def seconds_since_media(self) -> float:
        arrivals = [t.last_arrival for t in self.tracks.values() if t.last_arrival]
        return time.monotonic() - max(arrivals) if arrivals else float("inf")

    def codecs(self) -> dict[str, RelayCodec]:
        """The codecs viewers must take, for the kinds the studio publishes now."""
        return {kind: t.codec for kind, t in self.tracks.items() if t.codec is not None}

    # ------------------------------------------------------------------ keyframes

    def request_keyframe(self) -> None:
        """Ask the studio for a keyframe, at most once per interval however many ask.

        Nothing is sent while an earlier request is still being answered: whoever asks
        now gets that keyframe, and a join right after a request waits no interval.
        """
        if self._pending_keyframe is not None or self._keyframe_in_flight():
            return
        wait = self._last_keyframe_request + self._keyframe_interval - time.monotonic()
        if wait <= 0:
            self._send_keyframe_request()
        else:
            loop = asyncio.get_running_loop()
            self._pending_keyframe = loop.call_later(wait, self._send_keyframe_request)

    def _keyframe_in_flight(self) -> bool:
        """A request went out lately and no keyframe has arrived since."""
        video = self.tracks.get("video")
        since_request = time.monotonic() - self._last_keyframe_request
        return (
            video is not None
            and video.last_keyframe_at < self._last_keyframe_request
            and since_request < _KEYFRAME_ANSWER_SECONDS
        )

    def _cancel_pending_keyframe(self) -> None:
        if self._pending_keyframe is not None:
            self._pending_keyframe.cancel()
            self._pending_keyframe = None

    def _send_keyframe_request(self) -> None:
        self._pending_keyframe = None
        if self.publisher is None or "video" not in self.codecs():
            return
        self._last_keyframe_request = time.monotonic()
        self.keyframe_requests_sent += 1
        self.publisher.request_keyframe()

    # ------------------------------------------------------------------ viewers

    def add_viewer(self, viewer: Viewer) -> None:
        self.viewers.add(viewer)

    def remove_viewer(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)

    def add_downstream(self, node: Viewer) -> None:
        """A relay node pulling this feed: sent to like a viewer, never counted as one."""
        self.downstream.add(node)

    def remove_downstream(self, node: Viewer) -> None:
        self.downstream.discard(node)

    def close(self) -> None:
        self._cancel_pending_keyframe()


SourceLookup = Callable[[str], Source | None]
