"""Meridian's Prometheus metrics.

Naming rule: prefix `meridian_`, base units (`_seconds`, `_bytes`), `_total` on
counters; labels stay bounded (studio id, ISO country, media kind, a small enum).
Event counters are bumped through functions named after the event; everything that
the relay already counts (packets, bytes, viewers) is read from relay state at
scrape time by `RelayCollector`, so the hot path never touches a metric and the
viewer gauges are always the truth.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.source import Source


class RelayMetrics:
    def __init__(
        self, registry: CollectorRegistry, sources: Callable[[], Mapping[str, Source]]
    ) -> None:
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
        registry.register(RelayCollector(sources))

    def http_request_answered(self, protocol: str, method: str, code: int) -> None:
        self.http_requests.labels(protocol, method, str(code)).inc()

    def session_ended(self, protocol: str, studio: str, reason: str) -> None:
        ended = self.viewer_sessions_ended if protocol == "whep" else self.studio_sessions_ended
        ended.labels(studio, reason).inc()


class RelayCollector(Collector):
    """Reads sources, tracks and viewers when Prometheus scrapes."""

    def __init__(self, sources: Callable[[], Mapping[str, Source]]) -> None:
        self._sources = sources

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
            for kind, track in sorted(source.tracks.items()):
                ingest_packets.add_metric([studio, kind], track.packets_in)
                ingest_bytes.add_metric([studio, kind], track.bytes_in)
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
            ingest_keyframes,
            keyframe_requests,
            egress_packets,
            egress_bytes,
            dropped,
            nacks,
        )
