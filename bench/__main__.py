"""`python -m bench`: the fan-out benchmark (see bench/fanout.py), Meridian and its baseline."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import sys
from collections.abc import Sequence

from bench import procfs, report
from bench.fanout import MEDIARELAY, MERIDIAN, Options, RunInfo, Scenario, ScenarioResult, sweep

DEFAULT_VIEWERS = (10, 50, 100, 200)
DEFAULT_STUDIOS = (1, 8)
DEFAULT_BASELINE_VIEWERS = (1, 2, 4)
QUICK_VIEWERS = (10, 50)
QUICK_BASELINE_VIEWERS = (1, 2)


def counts(text: str) -> tuple[int, ...]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("counts must be positive")
    return tuple(sorted(set(values)))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "How one Meridian process forwards a 720p30 H.264 ~2.5 Mbit/s + Opus stream to "
            "N viewers of 1 or more studios (server CPU per forwarded packet, viewers per "
            "core, delivery, join time, relay latency, memory), next to the relay aiortc's "
            "MediaRelay gives (decode, re-encode per viewer) on the same stream."
        ),
    )
    parser.add_argument(
        "--viewers",
        type=counts,
        help=f"viewer counts, ramped up (default {','.join(map(str, DEFAULT_VIEWERS))})",
    )
    parser.add_argument(
        "--studios",
        type=counts,
        help=f"studio counts, one scenario each (default {','.join(map(str, DEFAULT_STUDIOS))})",
    )
    parser.add_argument(
        "--baseline-viewers",
        type=counts,
        help="MediaRelay viewer counts; stops when it cannot keep up "
        f"(default {','.join(map(str, DEFAULT_BASELINE_VIEWERS))})",
    )
    parser.add_argument("--no-baseline", dest="baseline", action="store_false")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short windows, 10,50 viewers, baseline at 1,2 (a smoke run, ~3 min)",
    )
    parser.add_argument("--duration", type=float, help="steady window per step, s (15)")
    parser.add_argument("--warmup", type=float, help="after a step's joins, s (3)")
    parser.add_argument("--studio-only", type=float, help="studios alone before viewers, s (5)")
    parser.add_argument("--processes", type=int, default=2, help="viewer load processes")
    parser.add_argument("--bitrate", type=int, default=2_500_000, help="video bit/s")
    parser.add_argument(
        "--studio-pacing",
        type=float,
        default=2.5,
        metavar="FACTOR",
        help="studios pace their packets at FACTOR x the bitrate, as browsers (libwebrtc) "
        "do (default 2.5); 0 sends each frame's packets back to back, as FFmpeg does",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="py-spy the Meridian server this long after each scenario's last step",
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="trace Meridian's Python allocations per viewer (a memory diagnosis: the "
        "tracing slows the server, so its timings mean nothing)",
    )
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server to one CPU and the load to the others",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("--no-save", dest="save", action="store_false", help="print only")
    args = parser.parse_args(argv)
    quick = args.quick
    args.viewers = args.viewers or (QUICK_VIEWERS if quick else DEFAULT_VIEWERS)
    args.studios = args.studios or DEFAULT_STUDIOS
    args.baseline_viewers = args.baseline_viewers or (
        QUICK_BASELINE_VIEWERS if quick else DEFAULT_BASELINE_VIEWERS
    )
    args.duration = args.duration if args.duration is not None else (6.0 if quick else 15.0)
    args.warmup = args.warmup if args.warmup is not None else (2.0 if quick else 3.0)
    args.studio_only = args.studio_only if args.studio_only is not None else (3.0 if quick else 5.0)
    if args.duration <= 0 or args.warmup < 0 or args.studio_only <= 0 or args.processes < 1:
        parser.error("--duration and --studio-only must be > 0, --warmup >= 0, --processes >= 1")
    return args


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    planned = [Scenario(MERIDIAN, studios, args.viewers) for studios in args.studios]
    if args.baseline:
        planned.append(Scenario(MEDIARELAY, 1, args.baseline_viewers))
    return planned


async def sweep_until_signalled(
    planned: Sequence[Scenario], options: Options
) -> tuple[RunInfo, list[ScenarioResult]]:
    """The sweep; SIGTERM cancels it like Ctrl-C does, so every child is ended in order."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await sweep(planned, options)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    options = Options(
        duration=args.duration,
        warmup=args.warmup,
        studio_only=args.studio_only,
        processes=args.processes,
        bitrate=args.bitrate,
        pacing_factor=args.studio_pacing,
        pin=args.pin,
        keep_logs=args.keep_logs,
        profile=args.profile,
        tracemalloc=args.tracemalloc,
    )
    command = shlex.join(["python", "-m", "bench", *argv])
    machine = procfs.machine()
    try:
        info, results = asyncio.run(sweep_until_signalled(scenarios(args), options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process it started was ended", file=sys.stderr)
        return 130
    table = report.markdown(command, machine, options, info, results)
    print(table)
    if args.save:
        data = report.record(command, machine, options, info, results)
        path = report.save(data, table, results)
        print(f"wrote {path} and its Markdown report beside it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
