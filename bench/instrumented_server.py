"""Meridian exactly as `run.py` starts it, plus a relay-latency probe only the benchmark has.

`python -m bench.instrumented_server --config ...` takes run.py's arguments. Before
the app is built it wraps one function, in this process only (production never
carries it, as tests/no_codec_server.py does for codecs):

* `relay.rtc_internals._PacketTap.add`, where each decrypted studio packet enters the
  relay and which returns only after `OutputTrack.forward` has sent it to every
  viewer. For each video packet it reads the studio's abs-send-time header extension
  (WebRTC's http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time: 6.18 fixed-point
  NTP seconds that aiortc, like libwebrtc, stamps on each packet as it sends it) and the
  wall clock on entry and on return:

    in  = the studio's send time (publisher and relay share this machine's clock)
    tap = the packet reaches the relay (loopback, the UDP socket, ICE, DTLS/SRTP
          decryption and aiortc's receiver statistics are behind it)
    out = the last viewer's sendto() has returned

  so `out - in` is the relay latency of that packet, queueing included (a packet that
  waited in the socket while the relay sent the one before to every viewer carries
  that wait), and `out - tap` its fan-out part. The loopback hop itself is a few us.
  Retransmissions (a sequence number not newer than the last) are left out.

GET /bench/latency answers the percentiles of the samples since the last
`?reset=1`. The probe costs about 1 us per studio packet (not per viewer packet).

With MERIDIAN_BENCH_TRACEMALLOC=1, Python allocations are also traced (slow: for a
memory diagnosis only, never with timings); GET /bench/memory?mark=1 remembers a
snapshot, and without `mark` it answers the biggest growths since then, by line.
"""

from __future__ import annotations

import os
import sys
import time
import tracemalloc
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run
from relay import rtc_internals

_NTP_EPOCH_OFFSET = 2208988800
_ABS_SEND_TIME_UNITS = 1 << 18  # per second (6.18 fixed point)
_ABS_SEND_TIME_MASK = 0xFFFFFF  # 64 s of range
_MAX_SAMPLES = 1_000_000


class LatencyProbe:
    """Microseconds per video packet: studio send to relay out, and relay in to out."""

    def __init__(self) -> None:
        self.total = array("f")
        self.fanout = array("f")
        self.skipped = 0  # packets without abs-send-time, or retransmitted
        self._last_sequence: dict[int, int] = {}

    def reset(self) -> None:
        self.total = array("f")
        self.fanout = array("f")
        self.skipped = 0

    def wrap(self, add: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        clock = time.time
        last_sequence = self._last_sequence

        def add_and_time(tap: Any, packet: Any) -> Any:
            tapped = clock()
            result = add(tap, packet)
            out = clock()
            sent = packet.extensions.abs_send_time
            if sent is None:
                return result
            ssrc, sequence = packet.ssrc, packet.sequence_number
            last = last_sequence.get(ssrc)
            last_sequence[ssrc] = sequence
            if last is not None and not 0 < (sequence - last) & 0xFFFF < 0x8000:
                self.skipped += 1
                return result
            now = int((out + _NTP_EPOCH_OFFSET) * _ABS_SEND_TIME_UNITS) & _ABS_SEND_TIME_MASK
            total = ((now - sent) & _ABS_SEND_TIME_MASK) / _ABS_SEND_TIME_UNITS
            if len(self.total) < _MAX_SAMPLES:
                self.total.append(total * 1e6)
                self.fanout.append((out - tapped) * 1e6)
            return result

        return add_and_time

    def summary(self) -> dict[str, Any]:
        return {
            "count": len(self.total),
            "skipped": self.skipped,
            "total_us": percentiles(self.total),
            "fanout_us": percentiles(self.fanout),
        }


def percentiles(values: array[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    last = len(ordered) - 1

    def at(q: float) -> float:
        return round(float(ordered[min(last, int(q * len(ordered)))]), 1)

    return {
        "min": round(float(ordered[0]), 1),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "p999": at(0.999),
        "max": round(float(ordered[last]), 1),
        "mean": round(sum(ordered) / len(ordered), 1),
    }


PROBE = LatencyProbe()
_memory_mark: list[tracemalloc.Snapshot] = []


async def latency(request: web.Request) -> web.Response:
    summary = PROBE.summary()
    if request.query.get("reset"):
        PROBE.reset()
    return web.json_response(summary)


async def memory(request: web.Request) -> web.Response:
    if not tracemalloc.is_tracing():
        return web.json_response({"error": "set MERIDIAN_BENCH_TRACEMALLOC=1"}, status=409)
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(False, tracemalloc.__file__)]
    )
    if request.query.get("mark") or not _memory_mark:
        _memory_mark[:] = [snapshot]
        return web.json_response({"marked": True})
    top = int(request.query.get("top", "25"))
    stats = snapshot.compare_to(_memory_mark[0], "lineno")
    traced, _ = tracemalloc.get_traced_memory()
    return web.json_response(
        {
            "traced_bytes": traced,
            "growth_bytes": sum(s.size_diff for s in stats),
            "top": [
                {"where": str(s.traceback), "bytes": s.size_diff, "blocks": s.count_diff}
                for s in stats[:top]
            ],
        }
    )


def install() -> None:
    tap = rtc_internals._PacketTap
    tap.add = PROBE.wrap(tap.add)  # type: ignore[method-assign,assignment]
    create_app: Callable[..., web.Application] = vars(run)["create_app"]

    def create_app_with_probe(*args: Any, **kwargs: Any) -> web.Application:
        app = create_app(*args, **kwargs)
        app.router.add_get("/bench/latency", latency)
        app.router.add_get("/bench/memory", memory)
        return app

    setattr(run, "create_app", create_app_with_probe)  # noqa: B010 (run.py does not export it)
    if os.environ.get("MERIDIAN_BENCH_TRACEMALLOC") == "1":
        tracemalloc.start(int(os.environ.get("MERIDIAN_BENCH_TRACEMALLOC_FRAMES", "1")))


if __name__ == "__main__":
    install()
    sys.exit(run.main(sys.argv[1:]))
