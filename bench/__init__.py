"""Meridian benchmarks: `python -m bench` (or `make bench ARGS=...`).

The fan-out benchmark starts a relay in a process of its own (Meridian through
bench/instrumented_server.py, or the aiortc `MediaRelay` baseline of
bench/mediarelay_server.py), one publisher process whose studios replay a
pre-encoded 720p30 H.264 + Opus loop over WHIP, and viewers in load processes that
do real ICE, DTLS and SRTP but never decode. It ramps the viewers up, for 1 and 8
studios, and reads the server's CPU time and memory from /proc, its packet counters
from /metrics, delivery and join times from the viewers, relay latency from the
instrumented server. bench/results/ receives a Markdown report and a JSON record.
"""
