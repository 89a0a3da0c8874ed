"""`python -m bench`: the fan-out benchmark (see bench/fanout.py)."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import sys
from collections.abc import Sequence

from bench import procfs, report
from bench.fanout import Options, PointResult, RunInfo, sweep


def viewer_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a comma-separated list of integers: {text!r}"
        ) from None
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError("viewer counts must be positive")
    return counts


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "How one Meridian process forwards a 720p30 H.264 ~2.5 Mbit/s + Opus stream to "
            "N viewers: server CPU per forwarded packet, viewers per core, delivery, memory."
        ),
    )
    parser.add_argument(
        "--viewers", type=viewer_counts, default=[10, 50], help="viewer counts (default 10,50)"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="steady window, s")
    parser.add_argument("--warmup", type=float, default=5.0, help="after joins, before window, s")
    parser.add_argument("--baseline", type=float, default=5.0, help="studio-only window, s")
    parser.add_argument("--processes", type=int, default=2, help="viewer load processes")
    parser.add_argument("--bitrate", type=int, default=2_500_000, help="video bit/s")
    parser.add_argument(
        "--no-pin",
        dest="pin",
        action="store_false",
        help="do not pin the server to one CPU and the load to the others",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the processes' logs")
    parser.add_argument("--no-save", dest="save", action="store_false", help="print only")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.baseline <= 0 or args.processes < 1:
        parser.error("--duration and --baseline must be > 0, --warmup >= 0, --processes >= 1")
    return args


async def sweep_until_signalled(
    counts: Sequence[int], options: Options
) -> tuple[RunInfo, list[PointResult]]:
    """The sweep; SIGTERM cancels it like Ctrl-C does, so every child is ended in order."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await sweep(counts, options)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    options = Options(
        duration=args.duration,
        warmup=args.warmup,
        baseline=args.baseline,
        processes=args.processes,
        bitrate=args.bitrate,
        pin=args.pin,
        keep_logs=args.keep_logs,
    )
    command = shlex.join(["python", "-m", "bench", *argv])
    machine = procfs.machine()
    try:
        info, results = asyncio.run(sweep_until_signalled(args.viewers, options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; every process it started was ended", file=sys.stderr)
        return 130
    table = report.markdown(command, machine, options, info, results)
    print(table)
    if args.save:
        path = report.save(report.record(command, machine, options, info, results), table)
        print(f"wrote {path} and {path.parent / 'latest.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
