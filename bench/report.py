"""The benchmark's outputs: a Markdown table and a JSON record with the machine."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.fanout import Options, PointResult, RunInfo
from bench.procfs import Machine

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def markdown(
    command: str,
    machine: Machine,
    options: Options,
    info: RunInfo,
    results: list[PointResult],
) -> str:
    e = info.encoded
    pinning = (
        "server pinned to one CPU, publisher and viewer processes to the others"
        if options.pin
        else "not pinned"
    )
    lines = [
        "# Meridian fan-out benchmark",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine.describe()}",
        (
            f"- Stream: {e.get('width')}x{e.get('height')} {e.get('fps')} fps H.264 baseline, "
            f"keyframe every {e.get('fps')} frames, pre-encoded {e.get('loop_seconds')} s loop "
            f"replayed: video {e.get('video_bitrate', 0) / 1e6:.2f} Mbit/s from the packet "
            f"sizes (keyframe {e.get('keyframe_bytes', 0) / 1000:.0f} kB, P-frame "
            f"{e.get('delta_frame_bytes', 0) / 1000:.1f} kB), Opus "
            f"{e.get('audio_bitrate', 0) / 1000:.0f} kbit/s"
        ),
        (
            f"- Method: one server process, one publisher process, viewers in "
            f"{options.processes} load processes (aiortc ICE/DTLS/SRTP, no decoding); "
            f"{options.duration:.0f} s steady window after all viewers joined and "
            f"{options.warmup:.0f} s of warm-up; {pinning}. CPU is the server's "
            "utime+stime (/proc/<pid>/stat), forwarded packets are "
            "`meridian_egress_packets_total` deltas, delivery is what the viewers counted "
            "over that."
        ),
        "",
        "| viewers | stream pkt/s | forwarded pkt/s | server CPU | us/packet "
        "| marginal us/packet | viewers/core | delivery | worst viewer "
        "| RSS before -> after | memory/viewer |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        joined = f"{r.connected}" if r.connected == r.viewers else f"{r.connected}/{r.viewers}"
        lines.append(
            f"| {joined} | {r.stream_packets_per_second:.0f} "
            f"| {r.forwarded_packets_per_second:.0f} | {r.server_cpu_percent:.1f} % "
            f"| {r.us_per_packet:.2f} | {r.marginal_us_per_packet:.2f} "
            f"| {r.viewers_per_core:.0f} | {r.delivery_ratio:.4f} "
            f"| {r.worst_viewer_delivery:.4f} "
            f"| {r.rss_before_mib:.1f} -> {r.rss_after_mib:.1f} MiB "
            f"| {r.kib_per_viewer:.0f} KiB |"
        )
    lines += [
        "",
        "Column notes: *us/packet* is all server CPU over forwarded packets (ingest included); "
        "*marginal* subtracts the CPU the server spends with the studio alone (no viewers); "
        "*viewers/core* = 1 s / (us/packet x stream pkt/s); *delivery* = packets the viewers "
        "received / packets the server sent; *worst viewer* = one viewer's received packets / "
        "packets the studio sent.",
        "",
        "| viewers | server CPU user + system | baseline CPU (studio only) "
        "| marginal viewers/core | stream Mbit/s at ingest | forwarded Mbit/s "
        "| dropped | NACKs | keyframe requests | joins took | load processes CPU "
        "| publisher CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        user = r.server_cpu_percent - r.server_system_cpu_percent
        load = " + ".join(f"{c:.0f} %" for c in r.load_process_cpu_percent)
        lines.append(
            f"| {r.viewers} | {user:.1f} % + {r.server_system_cpu_percent:.1f} % "
            f"| {r.baseline_cpu_percent:.1f} % | {r.marginal_viewers_per_core:.0f} "
            f"| {r.stream_payload_mbps:.2f} | {r.forwarded_payload_mbps:.1f} "
            f"| {r.dropped_packets} | {r.viewer_nacks} "
            f"| {r.keyframe_requests} | {r.join_seconds:.1f} s | {load} "
            f"| {r.publisher_cpu_percent:.0f} % |"
        )
    return "\n".join(lines) + "\n"


def record(
    command: str,
    machine: Machine,
    options: Options,
    info: RunInfo,
    results: list[PointResult],
) -> dict[str, Any]:
    return {
        "benchmark": "fanout",
        "command": command,
        "machine": asdict(machine),
        "options": asdict(options),
        "stream": info.encoded,
        "results": [asdict(r) for r in results],
    }


def save(data: dict[str, Any], table: str, directory: Path = RESULTS_DIR) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = str(data["machine"]["date"]).replace(":", "").replace("-", "").replace("+0000", "Z")
    path = directory / f"fanout-{stamp}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    (directory / "latest.md").write_text(table)
    return path
