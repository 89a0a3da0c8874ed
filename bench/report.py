"""The benchmark's outputs: a Markdown report and a JSON record with the machine."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import profile
from bench.fanout import (
    MEDIARELAY,
    MERIDIAN,
    Options,
    PointResult,
    RunInfo,
    Scenario,
    ScenarioResult,
)
from bench.procfs import Machine

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Issue 5's targets.
TARGET_VIEWERS_PER_CORE = 400
TARGET_DELIVERY = 0.999
TARGET_JOIN_P95_MS = 300
TARGET_LATENCY_P99_MS = 5
TARGET_KIB_PER_VIEWER = 256
TARGET_RATIO = 100


def _num(value: float | None, digits: int = 0, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def _ms_from_us(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1000:.2f}"


def meridian_points(results: list[ScenarioResult]) -> list[PointResult]:
    return [p for r in results if r.scenario.relay == MERIDIAN for p in r.points]


def baseline_points(results: list[ScenarioResult]) -> list[PointResult]:
    return [p for r in results if r.scenario.relay == MEDIARELAY for p in r.points]


def headline_points(results: list[ScenarioResult]) -> list[PointResult]:
    """Meridian's largest viewer count of each studio count: fixed costs shared out most."""
    return [r.points[-1] for r in results if r.scenario.relay == MERIDIAN and r.points]


def best_baseline(results: list[ScenarioResult]) -> PointResult | None:
    points = baseline_points(results)
    return max(points, key=lambda p: p.viewers_per_core) if points else None


def ratio(results: list[ScenarioResult]) -> tuple[PointResult, PointResult, float] | None:
    """Meridian (1 studio, most viewers, else the first headline) over the best baseline."""
    heads = headline_points(results)
    base = best_baseline(results)
    if not heads or base is None or base.viewers_per_core <= 0:
        return None
    head = next((p for p in heads if p.studios == 1), heads[0])
    return head, base, head.viewers_per_core / base.viewers_per_core


def meridian_table(points: list[PointResult]) -> list[str]:
    lines = [
        "| studios | viewers | forwarded pkt/s | server CPU | us/packet | marginal | slope "
        "| viewers/core | delivery | worst viewer | join p50 / p95 ms | latency p50 / p99 ms "
        "| fan-out p99 ms | memory/viewer | keyframe req. per join |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        joined = f"{p.connected}" if p.connected == p.viewers else f"{p.connected}/{p.viewers}"
        if p.viewers_without_packets:
            joined += f" ({p.viewers_without_packets} silent)"
        lines.append(
            f"| {p.studios} | {joined} | {p.forwarded_packets_per_second:,.0f} "
            f"| {p.server_cpu_percent:.1f} % | {p.us_per_packet:.2f} "
            f"| {p.marginal_us_per_packet:.2f} | {_num(p.slope_us_per_packet, 2)} "
            f"| {p.viewers_per_core:.0f} | {p.delivery_ratio * 100:.3f} % "
            f"| {p.worst_viewer_delivery * 100:.2f} % "
            f"| {_num(p.join_p50_ms)} / {_num(p.join_p95_ms)} "
            f"| {_ms_from_us(p.latency_p50_us)} / {_ms_from_us(p.latency_p99_us)} "
            f"| {_ms_from_us(p.fanout_p99_us)} | {p.kib_per_viewer:.0f} KiB "
            f"| {p.keyframe_requests_per_join:.2f} |"
        )
    return lines


def baseline_table(points: list[PointResult]) -> list[str]:
    lines = [
        "| viewers | server CPU | frames delivered | viewers/core | its own pkt/s "
        "| us/packet (its own) | delivery | join p50 / p95 ms | memory/viewer |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p.viewers} | {p.server_cpu_percent:.1f} % | {p.frame_delivery * 100:.1f} % "
            f"| {p.viewers_per_core:.2f} | {p.forwarded_packets_per_second:,.0f} "
            f"| {p.us_per_packet:,.0f} | {p.delivery_ratio * 100:.2f} % "
            f"| {_num(p.join_p50_ms)} / {_num(p.join_p95_ms)} | {p.kib_per_viewer:,.0f} KiB |"
        )
    return lines


def _verdict(met: bool, gap: str) -> str:
    return "met" if met else f"**missed** ({gap})"


def targets_table(results: list[ScenarioResult]) -> list[str]:
    points = meridian_points(results)
    heads = headline_points(results)
    if not points or not heads:
        return []
    lines = [
        "| target | goal | measured | verdict |",
        "|---|---:|---:|---|",
    ]
    worst_vpc = min(heads, key=lambda p: p.viewers_per_core)
    lines.append(
        f"| viewers per core (largest N of each studio count) | >= {TARGET_VIEWERS_PER_CORE} "
        f"| {', '.join(f'{p.viewers_per_core:.0f} ({p.studios} st.)' for p in heads)} | "
        + _verdict(
            worst_vpc.viewers_per_core >= TARGET_VIEWERS_PER_CORE,
            f"{worst_vpc.viewers_per_core / TARGET_VIEWERS_PER_CORE - 1:+.0%}: needs "
            f"{1e6 / (TARGET_VIEWERS_PER_CORE * worst_vpc.stream_packets_per_second):.2f} "
            f"us/packet, has {worst_vpc.us_per_packet:.2f}",
        )
        + " |"
    )
    worst_delivery = min(points, key=lambda p: p.delivery_ratio)
    lines.append(
        f"| delivery at the viewers (every point) | >= {TARGET_DELIVERY * 100:.1f} % "
        f"| {worst_delivery.delivery_ratio * 100:.3f} % (worst: {worst_delivery.studios} st., "
        f"{worst_delivery.viewers} viewers) | "
        + _verdict(
            worst_delivery.delivery_ratio >= TARGET_DELIVERY,
            f"{(1 - worst_delivery.delivery_ratio) * 100:.3f} % lost, "
            f"{(1 - worst_delivery.delivery_ratio) / (1 - TARGET_DELIVERY):.1f}x the allowance",
        )
        + " |"
    )
    joins = [p for p in points if not math.isnan(p.join_p95_ms)]
    if joins:
        worst_join = max(joins, key=lambda p: p.join_p95_ms)
        lines.append(
            f"| join p95, WHEP POST to first keyframe (every step) | <= {TARGET_JOIN_P95_MS} ms "
            f"| {worst_join.join_p95_ms:.0f} ms (worst: {worst_join.studios} st., "
            f"{worst_join.joined} joining to {worst_join.viewers}) | "
            + _verdict(
                worst_join.join_p95_ms <= TARGET_JOIN_P95_MS,
                f"+{worst_join.join_p95_ms - TARGET_JOIN_P95_MS:.0f} ms",
            )
            + " |"
        )
    latencies = [p for p in points if p.latency_p99_us is not None]
    if latencies:
        worst_latency = max(latencies, key=lambda p: p.latency_p99_us or 0.0)
        p99_ms = (worst_latency.latency_p99_us or 0.0) / 1000
        lines.append(
            f"| relay latency p99 (every point) | <= {TARGET_LATENCY_P99_MS} ms "
            f"| {p99_ms:.2f} ms (worst: {worst_latency.studios} st., "
            f"{worst_latency.viewers} viewers) | "
            + _verdict(p99_ms <= TARGET_LATENCY_P99_MS, f"{p99_ms / TARGET_LATENCY_P99_MS:.1f}x")
            + " |"
        )
    worst_memory = max(heads, key=lambda p: p.kib_per_viewer)
    lines.append(
        f"| server memory per viewer (largest N) | <= {TARGET_KIB_PER_VIEWER} KiB "
        f"| {', '.join(f'{p.kib_per_viewer:.0f} KiB ({p.studios} st.)' for p in heads)} | "
        + _verdict(
            worst_memory.kib_per_viewer <= TARGET_KIB_PER_VIEWER,
            f"+{worst_memory.kib_per_viewer - TARGET_KIB_PER_VIEWER:.0f} KiB, "
            f"{worst_memory.kib_per_viewer / TARGET_KIB_PER_VIEWER - 1:+.0%}",
        )
        + " |"
    )
    compared = ratio(results)
    if compared is not None:
        factor = compared[2]
        lines.append(
            f"| viewers per core over aiortc MediaRelay | >= {TARGET_RATIO}x | {factor:,.0f}x | "
            + _verdict(factor >= TARGET_RATIO, f"{factor / TARGET_RATIO:.2f} of it")
            + " |"
        )
    return lines


def details_table(points: list[PointResult]) -> list[str]:
    lines = [
        "| relay | studios | viewers | server CPU user + system | us/packet user + system "
        "| waited for a CPU "
        "| studios alone "
        "| marginal viewers/core | stream pkt/s, Mbit/s per studio | forwarded Mbit/s "
        "| received / forwarded | frames | checked (invalid) | RTCP RR/s in | relay drops "
        "| UDP drops "
        "server / viewers | NACKs | sessions ended | joins took "
        "| join = connect + keyframe wait, p50 / p95 ms "
        "| latency min / p999 / max ms "
        "| RSS | load processes CPU | publisher CPU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        user = p.server_cpu_percent - p.server_system_cpu_percent
        load = " + ".join(f"{c:.0f} %" for c in p.load_process_cpu_percent)
        latency = (
            f"{_ms_from_us(p.latency_min_us)} / {_ms_from_us(p.latency_p999_us)} / "
            f"{_ms_from_us(p.latency_max_us)}"
            if p.latency_samples
            else "n/a"
        )
        lines.append(
            f"| {p.relay} | {p.studios} | {p.viewers} "
            f"| {user:.1f} % + {p.server_system_cpu_percent:.1f} % "
            f"| {p.user_us_per_packet:,.2f} + {p.system_us_per_packet:,.2f} "
            f"| {p.server_cpu_wait_percent:.1f} % "
            f"| {p.studio_only_cpu_percent:.1f} % | {p.marginal_viewers_per_core:,.1f} "
            f"| {p.stream_packets_per_second:.0f}, "
            f"{_num(p.stream_payload_mbps or None, 2)} "
            f"| {p.forwarded_payload_mbps:,.1f} | {p.received_over_forwarded:.4f} "
            f"| {p.frame_delivery * 100:.1f} % | {p.packets_checked} ({p.packets_invalid}) "
            f"| {p.receiver_reports_per_second:,.0f} "
            f"| {p.dropped_packets} | {p.server_udp_drops} / {p.load_udp_drops} "
            f"| {p.viewer_nacks} "
            f"| {', '.join(f'{n} {k}' for k, n in p.sessions_ended.items()) or 0} "
            f"| {p.join_wave_seconds:.1f} s "
            f"| {_num(p.connect_p50_ms)} + {_num(p.keyframe_wait_p50_ms)} / "
            f"{_num(p.connect_p95_ms)} + {_num(p.keyframe_wait_p95_ms)} "
            f"| {latency} | {p.rss_studio_only_mib:.0f} -> {p.rss_mib:.0f} MiB | {load} "
            f"| {p.publisher_cpu_percent:.0f} % |"
        )
    return lines


# Frames that start the process and run the event loop: under (nearly) every sample.
_ENTRY_FRAMES = (
    "<module> (",
    "_run_module_as_main (",
    "_run_code (",
    "main (run.py)",
    "Runner.run (",
    "run (uvloop",
)


def profile_section(results: list[ScenarioResult]) -> list[str]:
    lines: list[str] = []
    for result in results:
        data = result.profile
        if not data:
            continue
        summary = profile.summarize(str(data["raw"]), 20) if "raw" in data else data["summary"]
        us = float(data["us_per_packet"])
        lines += [
            "",
            f"### Profile: {result.scenario.name}, {data['viewers']} viewers "
            f"({data['seconds']:.0f} s of py-spy, {summary['samples']} samples, server CPU "
            f"{data['server_cpu_percent']:.1f} %, {us:.2f} us per forwarded packet)",
            "",
            "Self time by line (native code is charged to the Python line that called it); "
            "*us/packet* is the share times the us per forwarded packet measured meanwhile.",
            "",
            "| share | us/packet | where |",
            "|---:|---:|---|",
        ]
        for name, share in summary["self"]:
            lines.append(f"| {share * 100:.1f} % | {share * us:.2f} | `{name}` |")
        lines += ["", "Inclusive, by function:", "", "| share | us/packet | function |"]
        lines.append("|---:|---:|---|")
        for name, share in summary["inclusive"]:
            if not name.startswith(_ENTRY_FRAMES):  # the frames under every sample
                lines.append(f"| {share * 100:.1f} % | {share * us:.2f} | `{name}` |")
    return lines


def memory_section(results: list[ScenarioResult]) -> list[str]:
    lines: list[str] = []
    for result in results:
        data = result.memory
        if not data or not result.points:
            continue
        point = result.points[-1]
        viewers = max(int(data.get("viewers", 0)), 1)
        growth = int(data.get("growth_bytes", 0))
        lines += [
            "",
            f"### Memory: {result.scenario.name}, {viewers} viewers (tracemalloc)",
            "",
            f"Python allocations grew by {growth / 1024 / viewers:.0f} KiB per viewer over the "
            f"studios-alone state; RSS by {point.kib_per_viewer:.0f} KiB per viewer (the rest "
            "is native: OpenSSL's DTLS state, libsrtp sessions, the allocators' slack). "
            "Tracing slows the server: this run's timings are not comparable.",
            "",
            "| KiB per viewer | blocks per viewer | where |",
            "|---:|---:|---|",
        ]
        for entry in data.get("top", []):
            lines.append(
                f"| {entry['bytes'] / 1024 / viewers:.1f} | {entry['blocks'] / viewers:.1f} "
                f"| `{entry['where']}` |"
            )
    return lines


def pacing_text(options: Options, encoded: dict[str, Any]) -> str:
    if not options.pacing_factor:
        return "each frame's packets sent back to back (unpaced)"
    rate = options.pacing_factor * encoded.get("video_bitrate", 0)
    keyframe_ms = encoded.get("keyframe_bytes", 0) * 8 / rate * 1000 if rate else 0
    return (
        f"paced as libwebrtc paces (at {options.pacing_factor:g} x the bitrate: "
        f"{rate / 1e6:.2f} Mbit/s, a keyframe over ~{keyframe_ms:.0f} ms)"
    )


def markdown(
    command: str,
    machine: Machine,
    options: Options,
    info: RunInfo,
    results: list[ScenarioResult],
) -> str:
    e = info.encoded
    pinning = (
        "the server pinned to one CPU, the publisher and viewer processes to the other(s)"
        if options.pin
        else "not pinned"
    )
    before = " / ".join(f"{x:.2f}" for x in info.load_average_before)
    after = " / ".join(f"{x:.2f}" for x in info.load_average_after)
    lines = [
        "# Meridian fan-out benchmark",
        "",
        f"- Command: `{command}` ({info.seconds / 60:.1f} min)",
        f"- Machine: {machine.describe()}; load average {before} before, {after} after",
        (
            f"- Stream, per studio: {e.get('width')}x{e.get('height')} {e.get('fps')} fps H.264 "
            f"baseline, keyframe every {e.get('fps')} frames and on request, pre-encoded "
            f"{e.get('loop_seconds')} s loop replayed: video {e.get('video_bitrate', 0) / 1e6:.2f} "
            f"Mbit/s from the packet sizes (keyframe {e.get('keyframe_bytes', 0) / 1000:.0f} kB, "
            f"P-frame {e.get('delta_frame_bytes', 0) / 1000:.1f} kB), Opus "
            f"{e.get('audio_bitrate', 0) / 1000:.0f} kbit/s; {pacing_text(options, e)}"
        ),
        (
            f"- Each scenario: one relay process, one publisher process (all studios), viewers "
            f"in {options.processes} load processes; the studios alone for "
            f"{options.studio_only:.0f} s, then per step the new viewers join, "
            f"{options.warmup:.0f} s of warm-up and a {options.duration:.0f} s window; "
            f"{pinning}."
        ),
        "",
    ]
    compared = ratio(results)
    if compared is not None:
        head, base, factor = compared
        lines += [
            f"**Meridian serves {head.viewers_per_core:.0f} viewers per core "
            f"({head.studios} studio, {head.viewers} viewers), aiortc's MediaRelay "
            f"{base.viewers_per_core:.2f} (at {base.viewers} viewer"
            f"{'s' if base.viewers > 1 else ''}, its best): {factor:,.0f}x.**",
            "",
        ]
    points = meridian_points(results)
    disturbed = [p for p in points if p.server_cpu_wait_percent > 5]
    if disturbed:
        lines += [
            "Other work on the machine got in the server's way (it waited for a CPU "
            + ", ".join(
                f"{p.server_cpu_wait_percent:.0f} % of the time at {p.studios} st., "
                f"{p.viewers} viewers"
                for p in disturbed
            )
            + "): CPU per packet holds, but latency, joins and delivery there are pessimistic.",
            "",
        ]
    if points:
        lines += ["## Meridian", "", *meridian_table(points), ""]
    base_points = baseline_points(results)
    if base_points:
        lines += [
            "## Baseline: aiortc MediaRelay (decode once, encode per viewer)",
            "",
            *baseline_table(base_points),
            "",
        ]
        lines += [f"- {r.stopped}" for r in results if r.stopped]
        lines.append("")
    target_lines = targets_table(results)
    if target_lines:
        lines += ["## Targets (issue 5)", "", *target_lines, ""]
    lines += [
        "## Columns and method",
        "",
        "- *us/packet*: all server CPU time (user + system, every thread, from "
        "/proc/<pid>/stat) over the packets it forwarded (`meridian_egress_packets_total`), "
        "ingest included; *marginal*: less the CPU rate of the studios alone; *slope*: the "
        "extra CPU over the extra packets since the previous step, the cost of one more "
        "viewer packet (flat slope = per-packet cost does not grow with the work).",
        "- *viewers/core* (Meridian) = 1 s / (us/packet x the stream's packet rate per "
        "studio at ingest). For the baseline, which sends its own re-encoded stream: "
        "viewers x share of frames delivered / server cores used.",
        "- *delivery*: packets the viewers received / packets expected from the RTP "
        "sequence numbers they saw (a hold to the next keyframe or a loss shows as a gap), "
        "all viewers and both kinds (a viewer that received nothing in the window, "
        "*silent*, is expected the whole stream); *worst viewer*: the lowest single viewer. "
        "Cross-check, received / the server's own egress counter, is in the details.",
        "- *join*: WHEP POST sent to the first keyframe packet at the viewer (detected on "
        "the decrypted payload with `relay.codecs.h264_starts_keyframe`), over the viewers "
        "that joined in that step while the earlier ones kept watching. The studio "
        "answers a keyframe request with a keyframe on its next frame, as encoders do; "
        "*keyframe req. per join*: PLI/FIR that reached the studios (counted in the "
        "publisher's aiortc sender) during the step's joins, per joining viewer.",
        "- *latency*: per video packet, from the studio's send time (its abs-send-time "
        "header extension, stamped as aiortc sends the packet; same machine, same clock) "
        "to the return of the relay's fan-out, when the last viewer's `sendto` is done "
        "(bench/instrumented_server.py wraps the relay's ingest tap at start-up, in the "
        "benchmark only). So it includes the loopback hop, socket queueing, DTLS/SRTP and "
        "aiortc's receive path; *fan-out* is the part from the tap to the last send. "
        "The abs-send-time is stamped when the studio's pacer lets the packet go. Unpaced "
        "(`--studio-pacing 0`), a keyframe's ~42 packets arrive back to back and queue "
        "behind each other's fan-out. The probe costs about 1 us per studio packet, not "
        "per viewer packet.",
        "- *memory/viewer*: (server RSS now - RSS with the studios alone) / viewers.",
        "- Details: *us/packet user + system* splits the cost: on loopback the kernel part "
        "of `sendto` also delivers the datagram to the viewer's socket. *waited for a CPU*: "
        "time the server's threads were runnable but not running (/proc/<pid>/task/*/"
        "schedstat, summed over threads), i.e. other work on the machine in the way: it "
        "costs no CPU time but shows up in latency, joins and, at worst, delivery. "
        "*UDP drops*: datagrams the kernel dropped on the server's or the viewers' sockets "
        "(/proc/net/udp); *relay drops*: packets Meridian skipped for a slow viewer.",
        "- Viewers: aiortc peers (ICE, DTLS, SRTP keys, RTCP) that take RTP off their "
        "socket before aiortc's receive path, count it from the clear header, decrypt "
        "every packet until the first keyframe and then 1 in 64 (*checked*; *invalid* = "
        "failed authentication or not H.264), and never decode. Each sends an RTCP "
        "receiver report per stream every 0.5 to 1.5 s, as aiortc's receiver would (*RTCP "
        "RR/s in*).",
        "- The baseline (bench/mediarelay_server.py: aiohttp WHIP/WHEP, "
        "`MediaRelay().subscribe(track)` per viewer and kind, a `MediaBlackhole` keeping "
        "the studio's tracks consumed) is measured the same way, on the same stream, with "
        "the same viewers (which offer H.264 first, so aiortc encodes H.264 for them: "
        "libx264 at aiortc's defaults, 1 Mbit/s to start). It stops at the first step "
        f"where less than {options.baseline_stop_below:.0%} of the frames reach the "
        "viewers; the ratio takes its best step.",
        "",
        "## Details",
        "",
        *details_table([*points, *base_points]),
    ]
    lines += profile_section(results)
    lines += memory_section(results)
    return "\n".join(lines) + "\n"


def record(
    command: str,
    machine: Machine,
    options: Options,
    info: RunInfo,
    results: list[ScenarioResult],
) -> dict[str, Any]:
    compared = ratio(results)
    return {
        "benchmark": "fanout",
        "command": command,
        "machine": asdict(machine),
        "options": asdict(options),
        "stream": info.encoded,
        "load_average_before": info.load_average_before,
        "load_average_after": info.load_average_after,
        "seconds": info.seconds,
        "ratio_over_mediarelay": round(compared[2], 1) if compared else None,
        "scenarios": [
            {
                "relay": r.scenario.relay,
                "studios": r.scenario.studios,
                "viewers": list(r.scenario.viewers),
                "stopped": r.stopped,
                "points": [asdict(p) for p in r.points],
                "memory": r.memory,
                "profile": (
                    {k: v for k, v in r.profile.items() if k != "raw"}
                    | {"summary": profile.summarize(str(r.profile["raw"]), 25)}
                    if r.profile
                    else None
                ),
            }
            for r in results
        ],
    }


def load(path: Path) -> tuple[str, Machine, Options, RunInfo, list[ScenarioResult]]:
    """A saved record back as the run's objects, to write its report again."""
    data = json.loads(path.read_text())
    stamp = path.stem.removeprefix("fanout-")
    info = RunInfo(
        encoded=data["stream"],
        load_average_before=tuple(data["load_average_before"]),
        load_average_after=tuple(data["load_average_after"]),
        seconds=float(data["seconds"]),
    )
    results = []
    for saved in data["scenarios"]:
        scenario = Scenario(saved["relay"], saved["studios"], tuple(saved["viewers"]))
        result = ScenarioResult(scenario, stopped=saved["stopped"], memory=saved.get("memory"))
        result.points = [PointResult(**point) for point in saved["points"]]
        if saved.get("profile"):
            result.profile = dict(saved["profile"])
            raw = path.parent / f"profile-{stamp}-{scenario.relay}-{scenario.studios}studios.txt"
            if raw.exists():
                result.profile["raw"] = raw.read_text()
        results.append(result)
    return (
        data["command"],
        Machine(**data["machine"]),
        # Runs recorded before studios paced their packets sent them unpaced.
        Options(**{"pacing_factor": 0.0, **data["options"]}),
        info,
        results,
    )


def save(
    data: dict[str, Any], table: str, results: list[ScenarioResult], directory: Path = RESULTS_DIR
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = str(data["machine"]["date"]).replace(":", "").replace("-", "").replace("+0000", "Z")
    path = directory / f"fanout-{stamp}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    # Paced studios (browsers) and unpaced ones (FFmpeg, GStreamer) each keep their latest.
    paced = data["options"].get("pacing_factor", 0.0) > 0
    (directory / ("latest.md" if paced else "latest-unpaced.md")).write_text(table)
    for result in results:
        if result.profile:
            name = f"profile-{stamp}-{result.scenario.relay}-{result.scenario.studios}studios.txt"
            (directory / name).write_text(str(result.profile["raw"]))
    return path


def main(argv: list[str]) -> int:
    """`python -m bench.report RECORD.json`: that run's Markdown report again (to stdout)."""
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=main.__doc__)
    parser.add_argument("record", type=Path, help="a bench/results/fanout-*.json")
    parser.add_argument("--latest", action="store_true", help="also write results/latest.md")
    args = parser.parse_args(argv)
    table = markdown(*load(args.record))
    print(table, end="")
    if args.latest:
        (args.record.parent / "latest.md").write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
