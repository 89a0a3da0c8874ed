"""A real Prometheus scrapes a running Meridian while viewers from several countries watch.

The viewers are real WebRTC peers (aiortc, receiving without decoding) that reach Meridian
through the test's own HTTP client acting as a trusted proxy: each says where it is with a
CDN country header, an X-Forwarded-For or a Forwarded address, or nothing at all (the
loopback address, hence `unknown`). PromQL through Prometheus' HTTP API must give the
exact per-country counts, and zero once everyone has left; every PromQL expression of
the Grafana dashboard and of the alert rules must run against that Prometheus.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from clients.audience_load import LightViewer
from config.loader import COUNTRY_CODES
from config.settings import DemoSettings, GeoSettings, Settings, StudioSettings
from deploy import dashboard
from metrics.geo import GeoResolver
from relay.viewer import ViewerSession
from server.app import create_app
from server.state import SESSIONS
from tests.conftest import TOKENS, url
from tests.metrics_probe import wait_for_viewers
from tests.prometheus_server import Prometheus, running_prometheus
from tests.rtc_peers import publishing
from tests.test_relay_e2e import wait_live

ALERTS = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"

# (studio, request headers, the country Meridian must place the viewer in)
VIEWERS: list[tuple[str, dict[str, str], str]] = [
    ("berlin", {"CF-IPCountry": "DE"}, "DE"),
    ("berlin", {"CF-IPCountry": "de"}, "DE"),
    ("berlin", {"X-Forwarded-For": "62.4.0.1"}, "FR"),
    ("berlin", {"X-Forwarded-For": "6.6.6.6, 2001:200::1"}, "JP"),  # rightmost untrusted
    ("berlin", {}, "unknown"),  # the proxy's own loopback address (see expected_countries)
    ("cairo", {"X-Forwarded-For": "41.32.0.1"}, "EG"),
    ("cairo", {"Forwarded": 'for="41.32.0.1:4711";proto=https'}, "EG"),
    ("cairo", {"CloudFront-Viewer-Country": "BR"}, "BR"),
]
ADDRESSES = ("62.4.0.1", "6.6.6.6", "2001:200::1", "41.32.0.1")

# Grafana's variables, as the dashboard would send them with every studio selected.
GRAFANA_VARIABLES = {"$studio": ".*", "$__rate_interval": "5s", "$__range": "1m"}


def settings() -> Settings:
    return Settings(
        studios=(
            StudioSettings("berlin", "Berlin studio", "DE", "Berlin", TOKENS["berlin"]),
            StudioSettings("cairo", "Cairo studio", "EG", "Cairo", TOKENS["cairo"]),
        ),
        demo=DemoSettings(enabled=False),
        geo=GeoSettings(trusted_proxies=("127.0.0.0/8", "::1")),
    )


@pytest.fixture
async def meridian() -> AsyncIterator[TestServer]:
    server = TestServer(create_app(settings(), CollectorRegistry()), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


def alert_expressions() -> dict[str, str]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_expressions() -> dict[str, list[str]]:
    dashboard.build()
    return {panel: list(exprs) for panel, exprs in dashboard.QUERIES.items()}


def with_grafana_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def expected_countries(meridian: TestServer) -> dict[str, dict[str, int]]:
    """VIEWERS' countries; the header-less viewer's follows its ICE address if public.

    Meridian places a viewer whose HTTP address is private by the media path's address
    when that one is public: on a machine with a public interface, the viewer that sent
    no header is placed by it.
    """
    expected: dict[str, Counter[str]] = {"berlin": Counter(), "cairo": Counter()}
    for studio, _, country in VIEWERS:
        expected[studio][country] += 1
    geo = GeoResolver(GeoSettings())
    for resource in meridian.app[SESSIONS].all():
        session = resource.session
        if isinstance(session, ViewerSession) and session.remote_address:
            placed = geo.country_of(session.remote_address)
            if placed != "unknown" and session.country == placed:
                expected["berlin"]["unknown"] -= 1
                expected["berlin"][placed] += 1
                break
    return {studio: +counts for studio, counts in expected.items()}


async def check_no_address_in_metrics(http: aiohttp.ClientSession, base: str) -> None:
    async with http.get(base + "/metrics") as response:
        text = await response.text()
    for address in ADDRESSES:
        assert address not in text
    for country in re.findall(r'country="([^"]*)"', text):
        assert country in COUNTRY_CODES or country == "unknown", country
        with pytest.raises(ValueError):
            ipaddress.ip_address(country)


async def run_every_expression(prometheus: Prometheus) -> dict[str, list[dict[str, Any]]]:
    """Each dashboard and alert expression through the HTTP API: none may be an error."""
    results: dict[str, list[dict[str, Any]]] = {}
    for panel, exprs in dashboard_expressions().items():
        for expr in exprs:
            results[f"dashboard: {panel}: {expr}"] = await prometheus.query(
                with_grafana_variables(expr)
            )
            # Panels draw ranges: the same expression as a range query must work too.
            await prometheus.query_range(with_grafana_variables(expr), 10)
    for alert, expr in alert_expressions().items():
        results[f"alert: {alert}"] = await prometheus.query(expr)
    return results


async def test_prometheus_sees_viewers_per_country(
    meridian: TestServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    base = str(meridian.make_url("")).rstrip("/")
    target = f"127.0.0.1:{meridian.port}"
    async with (
        running_prometheus(tmp_path / "prometheus", target, [ALERTS]) as prometheus,
        publishing(http, url(meridian, "/whip/berlin"), TOKENS["berlin"], audio=False),
        publishing(http, url(meridian, "/whip/cairo"), TOKENS["cairo"], audio=False),
    ):
        await wait_live(http, meridian, "berlin")
        await wait_live(http, meridian, "cairo")
        viewers = [
            LightViewer(url(meridian, f"/whep/{studio}"), headers) for studio, headers, _ in VIEWERS
        ]
        try:
            joined = await asyncio.gather(*(v.join(http, ("video",), 20.0) for v in viewers))
            assert all(joined), [v.error for v in viewers]
            expected = expected_countries(meridian)
            for studio, countries in expected.items():
                await wait_for_viewers(http, base, studio, countries)
            flat = {
                (studio, country): float(count)
                for studio, countries in expected.items()
                for country, count in countries.items()
            }

            # The exact per-country counts, through Prometheus.
            now = await prometheus.wait_for(
                "sum by (studio, country) (meridian_viewers)",
                ("studio", "country"),
                lambda seen: seen == flat,
            )
            print(f"\nsum by (studio, country) (meridian_viewers) = {sorted(now.items())}")
            by_country = await prometheus.by_labels(
                'sort_desc(sum by (country) (meridian_viewers{country!="unknown"}))', "country"
            )
            print(f"sum by (country) (meridian_viewers) = {by_country}")
            assert sum(by_country.values()) + flat.get(("berlin", "unknown"), 0) == 8
            total = await prometheus.query("sum(meridian_viewers)")
            assert float(total[0]["value"][1]) == len(VIEWERS)

            sessions = await prometheus.wait_for(
                "sum by (studio, country) (meridian_viewer_sessions_total)",
                ("studio", "country"),
                lambda seen: seen == flat,
            )
            print(f"meridian_viewer_sessions_total = {sorted(sessions.items())}")
            joins = await prometheus.wait_for(
                "sum(meridian_viewer_join_seconds_count)", (), lambda seen: seen == {(): 8.0}
            )
            p95 = await prometheus.query(
                "histogram_quantile(0.95, sum by (le) (meridian_viewer_join_seconds_bucket))"
            )
            print(f"join count {joins}, p95 {p95[0]['value'][1]} s")
            watched = await prometheus.wait_for(
                "sum by (studio, country) (meridian_viewing_seconds_total)",
                ("studio", "country"),
                lambda seen: set(seen) == set(flat) and all(v > 0 for v in seen.values()),
            )
            print(f"meridian_viewing_seconds_total = {sorted(watched.items())}")
            up = await prometheus.by_labels("meridian_studio_up", "studio")
            assert up == {("berlin",): 1.0, ("cairo",): 1.0}

            # The live audience API agrees.
            async with http.get(base + "/api/audience") as response:
                audience = await response.json()
            countries_now = {c for counts in expected.values() for c in counts} - {"unknown"}
            assert audience["viewers"] == len(VIEWERS)
            assert audience["countries_now"] == len(countries_now)
            assert audience["countries_since_start"] == len(countries_now)
            assert audience["sessions_since_start"] == len(VIEWERS)
            assert [(s["id"], s["viewers"], s["countries"]) for s in audience["studios"]] == [
                (studio, sum(counts.values()), dict(counts)) for studio, counts in expected.items()
            ]
            assert [c["viewers"] for c in audience["countries"]] == sorted(
                (c["viewers"] for c in audience["countries"]), reverse=True
            )

            await check_no_address_in_metrics(http, base)

            # Every expression of the dashboard and the alert rules runs; while viewers
            # watch, every dashboard panel has data.
            await asyncio.sleep(3)  # rate() over 5 s needs a few scrapes
            watching = await run_every_expression(prometheus)
            print(f"{len(watching)} expressions ran while watching")
            rules = await prometheus.api("rules")
            health = {
                rule["name"]: rule["health"] for group in rules["groups"] for rule in group["rules"]
            }
            assert set(health) == set(alert_expressions())
            assert all(state == "ok" for state in health.values()), health
        finally:
            await asyncio.gather(*(viewer.leave(http) for viewer in viewers))

        # Everyone left: the gauge series are gone and the total is back to zero.
        await wait_for_viewers(http, base, "berlin", {})
        await wait_for_viewers(http, base, "cairo", {})
        await prometheus.wait_for(
            "sum by (studio, country) (meridian_viewers)", ("studio", "country"), lambda s: not s
        )
        zero = await prometheus.query("sum(meridian_viewers) or vector(0)")
        print(f"after leaving: sum(meridian_viewers) or vector(0) = {zero[0]['value'][1]}")
        assert float(zero[0]["value"][1]) == 0
        ended = await prometheus.wait_for(
            "sum by (reason) (meridian_viewer_sessions_ended_total)",
            ("reason",),
            lambda seen: seen == {("deleted",): 8.0},
        )
        print(f"meridian_viewer_sessions_ended_total by reason = {ended}")
        sessions_after = await prometheus.by_labels("sum(meridian_viewer_sessions_total)", "studio")
        assert sessions_after == {("",): 8.0}
        # And again with nobody watching; each dashboard panel had data in one phase or the
        # other (sessions ended by reason only exists once someone left).
        await asyncio.sleep(2)
        left = await run_every_expression(prometheus)
        dashboard_empty = [
            name
            for name in watching
            if name.startswith("dashboard:") and not watching[name] and not left[name]
        ]
        assert not dashboard_empty
        firing = {name for name, result in left.items() if name.startswith("alert:") and result}
        print(f"alert expressions with a result after everyone left: {sorted(firing)}")
