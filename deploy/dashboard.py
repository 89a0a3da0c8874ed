"""Meridian's Grafana dashboard, generated from code (grafana-foundation-sdk, Grafana 11.6).

    python -m deploy.dashboard           # writes deploy/grafana/dashboards/meridian.json
    python -m deploy.dashboard --check   # exit 1 if the committed file differs

Grafana does not run where Meridian is built, so the dashboard stays valid by
construction: the SDK's typed builders make the JSON, a test checks that the committed
file equals this generator's output, and another runs every PromQL expression below
against a real Prometheus scraping a real Meridian (`QUERIES` lists them all).

"Today" panels use the dashboard's time range (`$__range`), which opens on today
(`now/d` to `now`). The country panels assume the default unknown label, `unknown`.

One node or fifty (an origin and its edges, cluster/): every node exports the same
names and Prometheus tells them apart by `instance` alone, so audience and delivery
panels `sum` over nodes. A studio's own stream arrives at its origin and again at every
edge that pulls it: those panels take `max`/`min` by studio (the stream as the node that
sees it best or worst), never a sum that would count it once per node.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import (
    geomap,
    prometheus,
    stat,
    statetimeline,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.geomap import TooltipMode
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT = Path(__file__).resolve().parent / "grafana" / "dashboards" / "meridian.json"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="meridian-prometheus")
UID = "meridian-audience"

STUDIO = 'studio=~"$studio"'
RATE = "$__rate_interval"
# Per node (audio and video together), so that the loss is each node's own ratio.
LOST = f"sum without (kind) (rate(meridian_ingest_packets_lost_total{{{STUDIO}}}[{RATE}]))"
RECEIVED = f"sum without (kind) (rate(meridian_ingest_packets_total{{{STUDIO}}}[{RATE}]))"

# Every PromQL expression of the dashboard, by panel: the tests run each of them.
QUERIES: dict[str, list[str]] = {}


def query(
    panel: str, expr: str, legend: str = "", *, instant: bool = False, as_table: bool = False
) -> prometheus.Dataquery:
    exprs = QUERIES.setdefault(panel, [])
    ref_id = "ABCDEFGH"[len(exprs)]
    exprs.append(expr)
    target = prometheus.Dataquery().expr(expr).datasource(DATASOURCE).ref_id(ref_id)
    if legend:
        target = target.legend_format(legend)
    if instant:
        target = target.instant()
    if as_table:
        target = target.format(PromQueryFormat.TABLE)
    return target


def thresholds(*steps: tuple[float | None, str]) -> dashboard_builder.ThresholdsConfig:
    return (
        dashboard_builder.ThresholdsConfig()
        .mode(model.ThresholdsMode.ABSOLUTE)
        .steps([model.Threshold(value=value, color=color) for value, color in steps])
    )


def big_number(
    title: str, expr: str, description: str, *, unit: str = "short", decimals: float = 0
) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .with_target(query(title, expr, instant=True))
        .unit(unit)
        .decimals(decimals)
        .graph_mode(common.BigValueGraphMode.NONE)
        .color_mode(common.BigValueColorMode.VALUE)
        .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(thresholds((None, "blue")))
        .no_value("0")
        .height(4)
        .span(4)
    )


def graph(
    title: str,
    description: str,
    targets: list[tuple[str, str]],
    *,
    unit: str = "short",
    width: int = 8,
    stacked: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .line_width(2)
        .fill_opacity(25 if stacked else 10)
        .legend(
            common_builder.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
        .height(8)
        .span(width)
    )
    if stacked:
        panel = panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
    for expr, legend in targets:
        panel = panel.with_target(query(title, expr, legend))
    return panel


def world_map() -> geomap.Panel:
    title = "Viewers by country, now"
    markers = (
        common_builder.MapLayerOptions()
        .type("markers")
        .name("Viewers")
        .location(
            common_builder.FrameGeometrySource()
            .mode(common.FrameGeometrySourceMode.LOOKUP)
            .lookup("country")
            .gazetteer("public/gazetteer/countries.json")
        )
        .tooltip(True)
        .config(
            {
                "showLegend": True,
                "style": {
                    "color": {"field": "Value", "fixed": "green"},
                    "opacity": 0.7,
                    "size": {"field": "Value", "fixed": 6, "min": 6, "max": 40},
                    "symbol": {"fixed": "img/icons/marker/circle.svg", "mode": "fixed"},
                    "text": {"field": "country", "mode": "field"},
                    "textConfig": {"fontSize": 11, "offsetY": -16, "textAlign": "center"},
                },
            }
        )
    )
    return (
        geomap.Panel()
        .title(title)
        .description(
            "Concurrent viewers whose media is flowing, per country (ISO 3166-1), all studios "
            "selected. Computed by Meridian from relay state at every scrape."
        )
        .datasource(DATASOURCE)
        .with_target(
            query(
                title,
                f'sum by (country) (meridian_viewers{{{STUDIO}, country!="unknown"}})',
                instant=True,
                as_table=True,
            )
        )
        .view(geomap.MapViewConfig().id("coords").lat(20).lon(10).zoom(1))
        .controls(geomap.ControlsOptions().show_zoom(True).mouse_wheel_zoom(False))
        .basemap(common_builder.MapLayerOptions().type("default").name("Basemap"))
        .layers([markers])
        .tooltip(geomap.TooltipOptions().mode(TooltipMode.DETAILS))
        .color_scheme(
            dashboard_builder.FieldColor().mode(model.FieldColorModeId.CONTINUOUS_GR_YL_RD)
        )
        .height(12)
        .span(16)
    )


def top_countries() -> table.Panel:
    title = "Top countries, now"
    return (
        table.Panel()
        .title(title)
        .description("Countries by concurrent viewers, selected studios.")
        .datasource(DATASOURCE)
        .with_target(
            query(
                title,
                f"sort_desc(sum by (country) (meridian_viewers{{{STUDIO}}}))",
                instant=True,
                as_table=True,
            )
        )
        .with_transformation(
            model.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "renameByName": {"country": "Country", "Value": "Viewers"},
                },
            )
        )
        .sort_by([common_builder.TableSortByFieldState().display_name("Viewers").desc(True)])
        .height(12)
        .span(8)
    )


def studio_up() -> statetimeline.Panel:
    title = "Studios up / down"
    return (
        statetimeline.Panel()
        .title(title)
        .description("1 while the studio publishes media (RTP within the silence timeout).")
        .datasource(DATASOURCE)
        .with_target(
            query(title, f"max by (studio) (meridian_studio_up{{{STUDIO}}})", "{{studio}}")
        )
        .mappings(
            [
                model.ValueMap(
                    options={
                        "0": model.ValueMappingResult(text="down", color="red", index=0),
                        "1": model.ValueMappingResult(text="up", color="green", index=1),
                    }
                )
            ]
        )
        .thresholds(thresholds((None, "red"), (1, "green")))
        .height(6)
        .span(24)
    )


def studio_variable() -> dashboard_builder.QueryVariable:
    return (
        dashboard_builder.QueryVariable("studio")
        .label("Studio")
        .datasource(DATASOURCE)
        .query("label_values(meridian_studio_up, studio)")
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(model.VariableOption(selected=True, text="All", value="$__all"))
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
    )


def build() -> dashboard_builder.Dashboard:
    QUERIES.clear()
    board = (
        dashboard_builder.Dashboard("Meridian: viewers per country and studio health")
        .uid(UID)
        .tags(["meridian", "webrtc"])
        .description("Who watches the marathon from where, right now and today; studio health.")
        .time("now/d", "now")
        .refresh("10s")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .with_variable(studio_variable())
        .with_row(dashboard_builder.Row("Audience"))
    )
    numbers: list[Builder[model.Panel]] = [
        big_number(
            "Watching now",
            f"sum(meridian_viewers{{{STUDIO}}})",
            "Viewers whose media is flowing now.",
        ),
        big_number(
            "Countries now",
            f'count(sum by (country) (meridian_viewers{{{STUDIO}, country!="unknown"}}))',
            "Distinct countries with at least one viewer now.",
        ),
        big_number(
            "Countries today",
            "count(sum by (country) (max_over_time("
            f'meridian_viewers{{{STUDIO}, country!="unknown"}}[$__range])))',
            "Distinct countries that had a viewer at any scrape in the time range (today).",
        ),
        big_number(
            "Viewer sessions today",
            f"round(sum(increase(meridian_viewer_sessions_total{{{STUDIO}}}[$__range])))",
            "Sessions that reached their first keyframe within the time range (today).",
        ),
        big_number(
            "Hours watched today",
            f"sum(increase(meridian_viewing_seconds_total{{{STUDIO}}}[$__range])) / 3600",
            "Viewing time within the time range, summed over every viewer.",
            decimals=1,
        ),
        big_number(
            "Join time p95 (today)",
            "histogram_quantile(0.95, sum by (le) ("
            f"increase(meridian_viewer_join_seconds_bucket{{{STUDIO}}}[$__range])))",
            "From the WHEP offer to the first keyframe sent, 95th percentile.",
            unit="s",
            decimals=2,
        ),
    ]
    for panel in numbers:
        board = board.with_panel(panel)
    board = board.with_panel(world_map()).with_panel(top_countries())
    board = board.with_panel(
        graph(
            "Viewers per studio",
            "Concurrent viewers per studio, stacked.",
            [(f"sum by (studio) (meridian_viewers{{{STUDIO}}})", "{{studio}}")],
            width=12,
            stacked=True,
        )
    ).with_panel(
        graph(
            "Viewers per country (top 10 now)",
            "Concurrent viewers for the ten countries with most viewers at each step.",
            [(f"topk(10, sum by (country) (meridian_viewers{{{STUDIO}}}))", "{{country}}")],
            width=12,
        )
    )

    board = board.with_row(dashboard_builder.Row("Studio health")).with_panel(studio_up())
    health = [
        graph(
            "Ingest bitrate",
            "Bits per second received from each studio (RTP payload), audio and video.",
            [
                (
                    "8 * max by (studio) (sum without (kind) "
                    f"(rate(meridian_ingest_bytes_total{{{STUDIO}}}[{RATE}])))",
                    "{{studio}}",
                )
            ],
            unit="bps",
        ),
        graph(
            "Ingest loss",
            "Share of the studio's packets lost on the way in, before retransmission "
            "(in a cluster: on the worst link, studio to origin or origin to edge).",
            [(f"max by (studio) ({LOST} / ({LOST} + {RECEIVED}))", "{{studio}}")],
            unit="percentunit",
        ),
        graph(
            "Keyframes",
            "Seconds since the studio's last keyframe, and the mean interval between keyframes.",
            [
                (
                    f"min by (studio) (meridian_studio_seconds_since_keyframe{{{STUDIO}}})",
                    "{{studio}} since last",
                ),
                (
                    f"1 / max by (studio) (rate(meridian_ingest_keyframes_total{{{STUDIO}}}[1m]))",
                    "{{studio}} interval",
                ),
            ],
            unit="s",
        ),
        graph(
            "Keyframe requests and NACKs to studios",
            "Coalesced keyframe requests (PLI) and NACKs sent upstream, per second: to the "
            "studio, and in a cluster also from each edge to the node it pulls from.",
            [
                (
                    f"sum by (studio) (rate(meridian_keyframe_requests_sent_total{{{STUDIO}}}"
                    f"[{RATE}]))",
                    "{{studio}} keyframe requests",
                ),
                (
                    f"sum by (studio) (rate(meridian_ingest_nacks_sent_total{{{STUDIO}}}[{RATE}]))",
                    "{{studio}} NACKs",
                ),
            ],
            unit="reqps",
            width=12,
        ),
        graph(
            "Viewer NACKs",
            "NACKs received from viewers (answered from the packet cache), per second.",
            [
                (
                    f"sum by (studio) (rate(meridian_viewer_nacks_total{{{STUDIO}}}[{RATE}]))",
                    "{{studio}}",
                )
            ],
            unit="reqps",
            width=12,
        ),
    ]
    for panel in health:
        board = board.with_panel(panel)

    board = board.with_row(dashboard_builder.Row("Delivery"))
    delivery = [
        graph(
            "Egress bandwidth",
            "Bits per second sent to viewers (RTP payload), per studio.",
            [
                (
                    f"8 * sum by (studio) (rate(meridian_egress_bytes_total{{{STUDIO}}}[{RATE}]))",
                    "{{studio}}",
                )
            ],
            unit="bps",
        ),
        graph(
            "Join time",
            "From the WHEP offer to the first keyframe sent to the viewer.",
            [
                (
                    "histogram_quantile(0.5, sum by (le) (rate(meridian_viewer_join_seconds_bucket"
                    f"{{{STUDIO}}}[{RATE}])))",
                    "p50",
                ),
                (
                    "histogram_quantile(0.95, sum by (le) (rate(meridian_viewer_join_seconds_bucket"
                    f"{{{STUDIO}}}[{RATE}])))",
                    "p95",
                ),
            ],
            unit="s",
        ),
        graph(
            "Packets dropped for slow viewers",
            "Packets skipped (to the next keyframe) because a viewer's link could not keep up.",
            [
                (
                    f"sum by (studio) (rate(meridian_dropped_packets_total{{{STUDIO}}}[{RATE}]))",
                    "{{studio}}",
                )
            ],
            unit="pps",
        ),
        graph(
            "Viewer sessions ended, by reason",
            "Sessions ended per minute: deleted by the player, ICE failed, timed out, ...",
            [
                (
                    "sum by (reason) (60 * rate(meridian_viewer_sessions_ended_total"
                    f"{{{STUDIO}}}[{RATE}]))",
                    "{{reason}}",
                )
            ],
            width=12,
            stacked=True,
        ),
        graph(
            "WHIP and WHEP requests",
            "HTTP requests per second by protocol, method and status code.",
            [
                (
                    f"sum by (protocol, method, code) (rate(meridian_http_requests_total[{RATE}]))",
                    "{{protocol}} {{method}} {{code}}",
                )
            ],
            unit="reqps",
            width=12,
        ),
    ]
    for panel in delivery:
        board = board.with_panel(panel)
    return board


def render() -> str:
    """The dashboard JSON, byte for byte as committed."""
    board = build().build()
    for number, panel in enumerate(board.panels or [], start=1):
        panel.id_val = number  # stable ids, so links to a panel survive regeneration
    return json.dumps(board, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.dashboard", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run python -m deploy.dashboard", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
