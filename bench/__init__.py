"""Meridian benchmarks: `python -m bench` (or `make bench ARGS=...`).

The fan-out benchmark starts a Meridian server, one studio that publishes a
pre-encoded 720p30 H.264 + Opus loop over WHIP, and viewers in load processes of
their own that do real ICE, DTLS and SRTP but never decode; it reads the server's
CPU time and memory from /proc and its packet counters from /metrics.
"""
