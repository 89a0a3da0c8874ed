"""Meridian's metrics read from relay state: exact gauges, monotonic counters, bounded labels."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ingest.studio import StudioSession
from metrics.audience import AudienceLedger
from metrics.bench_scrape import run as bench_run
from metrics.relay_metrics import RelayMetrics
from relay.source import Source
from relay.track import OutputTrack


@dataclass(eq=False)
class FakeViewer:
    country: str
    flowing: bool = True

    def end(self, reason: str) -> None:
        self.flowing = False


class FakeStudio(StudioSession):
    """A studio session with given loss and NACK counts (nothing negotiated)."""

    def __init__(self, created_at: float, lost: dict[str, int], nacks: dict[str, int]) -> None:
        self.created_at = created_at
        self.lost = lost
        self.nacks_sent = nacks

    def packets_lost(self) -> dict[str, int]:
        return dict(self.lost)

    def request_keyframe(self) -> None: ...


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def samples(registry: CollectorRegistry) -> Samples:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def values(registry: CollectorRegistry, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        labels: value for (sample, labels), value in samples(registry).items() if sample == name
    }


@pytest.fixture
def sources() -> dict[str, Source]:
    return {"berlin": Source("berlin"), "cairo": Source("cairo")}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


def test_viewers_gauge_is_read_from_relay_state(
    sources: dict[str, Source], registry: CollectorRegistry
) -> None:
    RelayMetrics(registry, lambda: sources)
    berlin = [FakeViewer("DE"), FakeViewer("DE"), FakeViewer("FR"), FakeViewer("unknown")]
    connecting = FakeViewer("JP", flowing=False)
    for viewer in [*berlin, connecting]:
        sources["berlin"].add_viewer(viewer)
    sources["cairo"].add_viewer(FakeViewer("EG"))
    assert values(registry, "meridian_viewers") == {
        labels(studio="berlin", country="DE"): 2,
        labels(studio="berlin", country="FR"): 1,
        labels(studio="berlin", country="unknown"): 1,
        labels(studio="cairo", country="EG"): 1,
    }
    # A country whose last viewer leaves disappears by itself; a viewer that stops
    # flowing stops counting at once.
    sources["berlin"].remove_viewer(berlin[2])
    berlin[0].end("deleted")
    assert values(registry, "meridian_viewers") == {
        labels(studio="berlin", country="DE"): 1,
        labels(studio="berlin", country="unknown"): 1,
        labels(studio="cairo", country="EG"): 1,
    }
    assert values(registry, "meridian_studio_up") == {
        labels(studio="berlin"): 0,
        labels(studio="cairo"): 0,
    }


def test_sessions_and_viewing_time_per_country(registry: CollectorRegistry) -> None:
    clock = Clock()
    metrics = RelayMetrics(registry, dict, clock=clock)
    ledger = metrics.audience
    first, second, third = object(), object(), object()
    metrics.viewer_joined(first, "berlin", "DE", 0.4)
    clock.now += 10
    metrics.viewer_joined(second, "berlin", "DE", 0.6)
    metrics.viewer_joined(third, "cairo", "unknown", None)
    metrics.viewer_joined(third, "cairo", "unknown", None)  # counted once
    clock.now += 5
    assert values(registry, "meridian_viewer_sessions_total") == {
        labels(studio="berlin", country="DE"): 2,
        labels(studio="cairo", country="unknown"): 1,
    }
    assert values(registry, "meridian_viewing_seconds_total") == {
        labels(studio="berlin", country="DE"): 15 + 5,
        labels(studio="cairo", country="unknown"): 5,
    }
    metrics.viewer_left(first)
    metrics.viewer_left(first)  # once only
    metrics.viewer_left(object())  # never joined: ignored
    clock.now += 1
    assert values(registry, "meridian_viewing_seconds_total") == {
        labels(studio="berlin", country="DE"): 15 + 6,
        labels(studio="cairo", country="unknown"): 6,
    }
    metrics.viewer_left(second)
    metrics.viewer_left(third)
    clock.now += 100  # nobody watches: the counters stand still
    assert values(registry, "meridian_viewing_seconds_total") == {
        labels(studio="berlin", country="DE"): 15 + 6,
        labels(studio="cairo", country="unknown"): 6,
    }
    assert ledger.sessions_since_start == 3 and ledger.countries_seen == {"DE"}
    joins = values(registry, "meridian_viewer_join_seconds_count")
    assert joins == {labels(studio="berlin"): 2}
    assert (
        values(registry, "meridian_viewer_join_seconds_bucket")[labels(studio="berlin", le="0.5")]
        == 1
    )


def test_viewing_time_never_goes_back() -> None:
    clock = Clock()
    ledger = AudienceLedger("unknown", clock)
    sessions = [object() for _ in range(1000)]
    last = 0.0
    for index, session in enumerate(sessions):
        clock.now += 0.1 + index * 1e-7
        ledger.joined(session, "berlin", "DE")
        if index % 3 == 0:
            ledger.left(sessions[index // 2])
        value = ledger.viewing_seconds().get(("berlin", "DE"), 0.0)
        assert value >= last
        last = value


def test_ingest_loss_and_nacks_survive_a_studio_reconnect(
    sources: dict[str, Source], registry: CollectorRegistry
) -> None:
    RelayMetrics(registry, lambda: sources)
    source = sources["berlin"]
    source.tracks["video"] = OutputTrack("video")
    source.tracks["audio"] = OutputTrack("audio")
    first = FakeStudio(1.0, {"video": 7, "audio": 1}, {"video": 3})
    source.publisher = first
    assert values(registry, "meridian_ingest_packets_lost_total") == {
        labels(studio="berlin", kind="video"): 7,
        labels(studio="berlin", kind="audio"): 1,
    }
    first.lost = {"video": 9, "audio": 1}
    assert (
        values(registry, "meridian_ingest_packets_lost_total")[
            labels(studio="berlin", kind="video")
        ]
        == 9
    )
    # Duplicates can make aiortc's cumulative loss go down; the counter does not.
    first.lost = {"video": 8, "audio": 1}
    assert (
        values(registry, "meridian_ingest_packets_lost_total")[
            labels(studio="berlin", kind="video")
        ]
        == 9
    )
    # The studio reconnects: its new session counts from zero, the counter goes on.
    source.publisher = None
    assert (
        values(registry, "meridian_ingest_packets_lost_total")[
            labels(studio="berlin", kind="video")
        ]
        == 9
    )
    source.publisher = FakeStudio(2.0, {"video": 2, "audio": 0}, {"video": 1})
    assert values(registry, "meridian_ingest_packets_lost_total") == {
        labels(studio="berlin", kind="video"): 11,
        labels(studio="berlin", kind="audio"): 1,
    }
    assert values(registry, "meridian_ingest_nacks_sent_total") == {
        labels(studio="berlin", kind="video"): 4,
        labels(studio="berlin", kind="audio"): 0,
    }


def test_http_request_labels_stay_bounded(registry: CollectorRegistry) -> None:
    metrics = RelayMetrics(registry, dict)
    metrics.http_request_answered("whep", "POST", 201)
    metrics.http_request_answered("whep", "BREW", 405)
    metrics.http_request_answered("whep", "X" * 300, 405)
    assert values(registry, "meridian_http_requests_total") == {
        labels(protocol="whep", method="POST", code="201"): 1,
        labels(protocol="whep", method="other", code="405"): 2,
    }


def test_metric_names_follow_the_conventions(
    sources: dict[str, Source], registry: CollectorRegistry
) -> None:
    metrics = RelayMetrics(registry, lambda: sources)
    sources["berlin"].tracks["video"] = OutputTrack("video")
    sources["berlin"].add_viewer(FakeViewer("DE"))
    metrics.viewer_joined(object(), "berlin", "DE", 0.3)
    metrics.session_ended("whep", "berlin", "deleted")
    metrics.http_request_answered("whip", "POST", 201)
    text = generate_latest(registry).decode()
    names = {family.name for family in text_string_to_metric_families(text)}
    assert names >= {
        "meridian_viewers",
        "meridian_viewer_sessions",
        "meridian_viewing_seconds",
        "meridian_viewer_join_seconds",
        "meridian_viewer_sessions_ended",
        "meridian_studio_up",
        "meridian_studio_seconds_since_keyframe",
        "meridian_ingest_packets",
        "meridian_ingest_bytes",
        "meridian_ingest_packets_lost",
        "meridian_ingest_nacks_sent",
        "meridian_ingest_keyframes",
        "meridian_keyframe_requests_sent",
        "meridian_egress_packets",
        "meridian_egress_bytes",
        "meridian_dropped_packets",
        "meridian_viewer_nacks",
        "meridian_http_requests",
    } - {"meridian_studio_seconds_since_keyframe"}  # only once a keyframe arrived
    for family in text_string_to_metric_families(text):
        assert family.name.startswith("meridian_")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples), family.name


async def test_scrape_benchmark_runs(capsys: pytest.CaptureFixture[str]) -> None:
    figures = await bench_run(argparse.Namespace(viewers=300, studios=2, rounds=2))
    assert figures["scrape_median_s"] > 0
    assert figures["metrics_bytes"] > 1000
    assert "GET /metrics with 300 viewers in state" in capsys.readouterr().out
