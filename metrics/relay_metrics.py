"""Meridian's Prometheus metrics, every one of them defined in this module.

Naming rule (the Prometheus naming guide): prefix `meridian_`, base units (`_seconds`,
`_bytes`), `_total` on counters. Labels stay bounded: studio id (from the configuration),
ISO 3166-1 alpha-2 country or the configured unknown label (never an address), media
kind (`audio`, `video`), and small enums (`reason`, HTTP `method` and `code`).

Events that relay state does not keep are counted through functions named after the
event (`viewer_joined`, `session_ended`, ...). Everything the relay already counts
(packets, bytes, viewers) is read from relay state when Prometheus scrapes, by
`RelayCollector`; viewing time and sessions per country come from the `AudienceLedger`
through `AudienceCollector`. So the hot path never touches a metric, and the viewer
gauge is always the truth: a country with no viewer left disappears by itself.

Exported:
- `meridian_viewers{studio,country}` viewers whose media flows now (relay state)
- `meridian_viewer_sessions_total{studio,country}` sessions that reached their first keyframe
- `meridian_viewing_seconds_total{studio,country}` time watched, from first keyframe to end
- `meridian_viewer_join_seconds{studio}` histogram: WHEP POST to the first keyframe sent
- `meridian_viewer_sessions_ended_total{studio,reason}`, `meridian_studio_sessions_ended_total`
- `meridian_studio_up{studio}`, `meridian_studio_seconds_since_keyframe{studio}`
- `meridian_ingest_packets_total`, `meridian_ingest_bytes_total`,
  `meridian_ingest_packets_lost_total`, `meridian_ingest_nacks_sent_total` `{studio,kind}`
- `meridian_ingest_keyframes_total{studio}`, `meridian_keyframe_requests_sent_total{studio}`
- `meridian_egress_packets_total`, `meridian_egress_bytes_total`,
  `meridian_dropped_packets_total` `{studio,kind}`, `meridian_viewer_nacks_total{studio}`
- `meridian_http_requests_total{protocol,method,code}` for WHIP and WHEP
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ingest.feed import FeedSession
from metrics.audience import AudienceLedger
from relay.source import Source

JOIN_BUCKETS = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RelayMetrics:
    def __init__(
        self,
        registry: CollectorRegistry,
        sources: Callable[[], Mapping[str, Source]],
        unknown_label: str = "unknown",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.audience = AudienceLedger(unknown_label, clock)
        self.http_requests = PromCounter(
            "meridian_http_requests",
            "WHIP and WHEP requests by protocol, method and status code.",
            ["protocol", "method", "code"],
            registry=registry,
        )
        self.viewer_sessions_ended = PromCounter(
            "meridian_viewer_sessions_ended",
            "Viewer sessions that ended, by studio and reason.",
            ["studio", "reason"],
            registry=registry,
        )
        self.studio_sessions_ended = PromCounter(
            "meridian_studio_sessions_ended",
            "Studio (WHIP) sessions that ended, by studio and reason.",
            ["studio", "reason"],
            registry=registry,
        )
        self.join_seconds = Histogram(
            "meridian_viewer_join_seconds",
            "Seconds from a viewer's WHEP POST to the first keyframe sent to it.",
            ["studio"],
            buckets=JOIN_BUCKETS,
            registry=registry,
        )
        registry.register(RelayCollector(sources))
        registry.register(AudienceCollector(self.audience))

    # ------------------------------------------------------------------ events

    def http_request_answered(self, protocol: str, method: str, code: int) -> None:
        method = method if method in _METHODS else "other"  # clients choose methods
        self.http_requests.labels(protocol, method, str(code)).inc()

    def session_ended(self, protocol: str, studio: str, reason: str) -> None:
        ended = self.viewer_sessions_ended if protocol == "whep" else self.studio_sessions_ended
        ended.labels(studio, reason).inc()

    def viewer_joined(
        self, session: object, studio: str, country: str, join_seconds: float | None
    ) -> None:
        """The first keyframe went out to `session`: it is watching from now on."""
        self.audience.joined(session, studio, country)
        if join_seconds is not None:
            self.join_seconds.labels(studio).observe(join_seconds)

    def viewer_left(self, session: object) -> None:
        self.audience.left(session)


class AudienceCollector(Collector):
    """Sessions and viewing time per studio and country, from the ledger at scrape time."""

    def __init__(self, ledger: AudienceLedger) -> None:
        self._ledger = ledger

    def collect(self) -> Iterable[Metric]:
        sessions = CounterMetricFamily(
            "meridian_viewer_sessions",
            "Viewer sessions that reached their first keyframe, by studio and country.",
            labels=["studio", "country"],
        )
        seconds = CounterMetricFamily(
            "meridian_viewing_seconds",
            "Seconds watched, from each session's first keyframe to its end (live ones so far).",
            labels=["studio", "country"],
        )
        for (studio, country), count in sorted(self._ledger.sessions.items()):
            sessions.add_metric([studio, country], count)
        for (studio, country), watched in sorted(self._ledger.viewing_seconds().items()):
            seconds.add_metric([studio, country], watched)
        yield sessions
        yield seconds


class _CarriedOver:
    """Counters kept by one studio session, made monotonic across that studio's reconnects."""

    def __init__(self) -> None:
        self._publisher: tuple[int, float] | None = None
        self._base: Counter[str] = Counter()
        self._last: Counter[str] = Counter()

    def totals(
        self, publisher: tuple[int, float] | None, current: Mapping[str, int]
    ) -> Counter[str]:
        if publisher is not None and publisher != self._publisher:
            self._base.update(self._last)  # what the previous session had counted stays
            self._last = Counter()
            self._publisher = publisher
        for kind, value in current.items():
            self._last[kind] = max(self._last[kind], value)
        return self._base + self._last


class RelayCollector(Collector):
    """Reads sources, tracks, viewers and studio sessions when Prometheus scrapes."""

    def __init__(self, sources: Callable[[], Mapping[str, Source]]) -> None:
        self._sources = sources
        self._lost: dict[str, _CarriedOver] = {}
        self._nacks_sent: dict[str, _CarriedOver] = {}

    def collect(self) -> Iterable[Metric]:
        viewers = GaugeMetricFamily(
            "meridian_viewers",
            "Viewers whose media is flowing now, by studio and country.",
            labels=["studio", "country"],
        )
        up = GaugeMetricFamily(
            "meridian_studio_up", "1 while the studio is publishing media.", labels=["studio"]
        )
        since_keyframe = GaugeMetricFamily(
            "meridian_studio_seconds_since_keyframe",
            "Seconds since the studio's last video keyframe.",
            labels=["studio"],
        )
        ingest_packets = CounterMetricFamily(
            "meridian_ingest_packets",
            "RTP packets received from the studio.",
            labels=["studio", "kind"],
        )
        ingest_bytes = CounterMetricFamily(
            "meridian_ingest_bytes",
            "RTP payload bytes received from the studio.",
            labels=["studio", "kind"],
        )
        ingest_lost = CounterMetricFamily(
            "meridian_ingest_packets_lost",
            "RTP packets from the studio lost on the way in (before any retransmission).",
            labels=["studio", "kind"],
        )
        nacks_sent = CounterMetricFamily(
            "meridian_ingest_nacks_sent",
            "NACKs sent to the studio asking it to retransmit lost packets.",
            labels=["studio", "kind"],
        )
        ingest_keyframes = CounterMetricFamily(
            "meridian_ingest_keyframes",
            "Video keyframes received from the studio.",
            labels=["studio"],
        )
        keyframe_requests = CounterMetricFamily(
            "meridian_keyframe_requests_sent",
            "Keyframe requests (PLI) sent to the studio, after coalescing.",
            labels=["studio"],
        )
        egress_packets = CounterMetricFamily(
            "meridian_egress_packets", "RTP packets sent to viewers.", labels=["studio", "kind"]
        )
        egress_bytes = CounterMetricFamily(
            "meridian_egress_bytes", "RTP payload bytes sent to viewers.", labels=["studio", "kind"]
        )
        dropped = CounterMetricFamily(
            "meridian_dropped_packets",
            "Packets not sent to viewers too slow to take them (skipped to the next keyframe).",
            labels=["studio", "kind"],
        )
        nacks = CounterMetricFamily(
            "meridian_viewer_nacks",
            "NACK feedback packets received from viewers.",
            labels=["studio"],
        )
        for studio, source in self._sources().items():
            by_country = Counter(v.country for v in source.viewers if v.flowing)
            for country, count in sorted(by_country.items()):
                viewers.add_metric([studio, country], count)
            up.add_metric([studio], 1.0 if source.live else 0.0)
            keyframe_requests.add_metric([studio], source.keyframe_requests_sent)
            nacks.add_metric([studio], source.viewer_nacks)
            lost, requested = self._studio_session_counters(studio, source)
            for kind, track in sorted(source.tracks.items()):
                ingest_packets.add_metric([studio, kind], track.packets_in)
                ingest_bytes.add_metric([studio, kind], track.bytes_in)
                ingest_lost.add_metric([studio, kind], lost[kind])
                nacks_sent.add_metric([studio, kind], requested[kind])
                stats = track.egress_totals()
                egress_packets.add_metric([studio, kind], stats.packets)
                egress_bytes.add_metric([studio, kind], stats.octets)
                dropped.add_metric([studio, kind], stats.dropped)
                if kind == "video":
                    ingest_keyframes.add_metric([studio], track.keyframes_in)
                    if track.last_keyframe_at:
                        since_keyframe.add_metric([studio], track.seconds_since_keyframe())
        yield from (
            viewers,
            up,
            since_keyframe,
            ingest_packets,
            ingest_bytes,
            ingest_lost,
            nacks_sent,
            ingest_keyframes,
            keyframe_requests,
            egress_packets,
            egress_bytes,
            dropped,
            nacks,
        )

    def _studio_session_counters(
        self, studio: str, source: Source
    ) -> tuple[Counter[str], Counter[str]]:
        """Loss and NACKs as the studio's sessions count them, carried over reconnects."""
        publisher = source.publisher
        current_lost: Mapping[str, int] = {}
        current_nacks: Mapping[str, int] = {}
        identity = None
        if isinstance(publisher, FeedSession):
            identity = (id(publisher), publisher.created_at)
            current_lost = publisher.packets_lost()
            current_nacks = publisher.nacks_sent
        lost = self._lost.setdefault(studio, _CarriedOver()).totals(identity, current_lost)
        nacks = self._nacks_sent.setdefault(studio, _CarriedOver()).totals(identity, current_nacks)
        return lost, nacks
