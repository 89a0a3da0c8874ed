"""Who watches what from where: the audience since start-up, and now.

`AudienceLedger` remembers what relay state forgets: sessions that joined (saw their first
keyframe) per studio and country, and viewing time. Viewing time is counted from a
session's first keyframe to its end; sessions still watching contribute their time so far,
so the counter read at any scrape is exact and never goes back.

`audience_snapshot` is the live picture `GET /api/audience` and `GET /api/events` serve:
viewers now from relay state (flowing sessions), the rest from the ledger.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from relay.source import Source

StudioCountry = tuple[str, str]


@dataclass(slots=True)
class _Watching:
    studio: str
    country: str
    since: float


class AudienceLedger:
    """Sessions and viewing time per (studio, country) since start-up.

    Viewing time is kept per (studio, country) as seconds of ended sessions plus, for the
    live ones, their count and the sum of their start times, so reading it costs one step
    per (studio, country), however many viewers watch.
    """

    def __init__(self, unknown_label: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.unknown = unknown_label
        self._clock = clock
        self.sessions: Counter[StudioCountry] = Counter()
        self.countries_seen: set[str] = set()
        self._watching: dict[object, _Watching] = {}
        self._seconds_done: dict[StudioCountry, float] = {}
        self._live: Counter[StudioCountry] = Counter()
        self._live_since: dict[StudioCountry, float] = {}
        self._last_read: dict[StudioCountry, float] = {}

    def joined(self, session: object, studio: str, country: str) -> None:
        """`session` saw its first keyframe: one more session, its viewing time starts."""
        if session in self._watching:
            return
        key = (studio, country)
        since = self._clock()
        self.sessions[key] += 1
        if country != self.unknown:
            self.countries_seen.add(country)
        self._watching[session] = _Watching(studio, country, since)
        self._live[key] += 1
        self._live_since[key] = self._live_since.get(key, 0.0) + since

    def left(self, session: object) -> None:
        """`session` ended; a session that never joined is ignored."""
        watching = self._watching.pop(session, None)
        if watching is None:
            return
        key = (watching.studio, watching.country)
        self._seconds_done[key] = self._seconds_done.get(key, 0.0) + self._clock() - watching.since
        self._live[key] -= 1
        self._live_since[key] -= watching.since
        if not self._live[key]:
            del self._live[key], self._live_since[key]

    @property
    def sessions_since_start(self) -> int:
        return sum(self.sessions.values())

    @property
    def watching(self) -> int:
        return len(self._watching)

    def viewing_seconds(self) -> dict[StudioCountry, float]:
        """Seconds watched per (studio, country): ended sessions, plus live ones so far.

        Never less than the last answer: a counter must not go back, not even by the
        rounding of a float.
        """
        now = self._clock()
        seconds = dict(self._seconds_done)
        for key, count in self._live.items():
            seconds[key] = seconds.get(key, 0.0) + count * now - self._live_since[key]
        last = self._last_read
        for key, value in seconds.items():
            seconds[key] = last[key] = max(value, last.get(key, 0.0))
        return seconds


def flowing_by_country(sources: Iterable[Source]) -> dict[str, Counter[str]]:
    """Viewers whose media flows now, per studio and country, read from relay state."""
    return {
        source.studio_id: Counter(v.country for v in source.viewers if v.flowing)
        for source in sources
    }


def audience_snapshot(
    studio_ids: Iterable[str], sources: Mapping[str, Source], ledger: AudienceLedger
) -> dict[str, Any]:
    """The JSON document of `GET /api/audience` (the watch page relies on its shape).

    Per-studio and per-country listings include the unknown label, so they add up to
    `viewers`; `countries_now` and `countries_since_start` count real countries only.
    """
    now = flowing_by_country(sources[studio_id] for studio_id in studio_ids)
    totals: Counter[str] = Counter()
    studios = []
    for studio_id, countries in now.items():
        totals.update(countries)
        studios.append(
            {
                "id": studio_id,
                "viewers": sum(countries.values()),
                "countries": dict(sorted(countries.items(), key=_most_first)),
            }
        )
    return {
        "viewers": sum(totals.values()),
        "countries_now": sum(1 for country in totals if country != ledger.unknown),
        "countries_since_start": len(ledger.countries_seen),
        "sessions_since_start": ledger.sessions_since_start,
        "studios": studios,
        "countries": [
            {"country": country, "viewers": count}
            for country, count in sorted(totals.items(), key=_most_first)
        ],
    }


def _most_first(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]
