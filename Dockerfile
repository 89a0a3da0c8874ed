# Meridian: live WebRTC relay (WHIP ingest, WHEP playback).
#
#   docker build -t meridian .
#   docker run --rm --network host meridian
#
# ---------------------------------------------------------------------------
# NETWORKING: RUN WITH --network host (Linux)
#
# Only the HTTP side of Meridian (WHIP/WHEP signalling, /metrics, /healthz) uses
# the fixed port 8080/tcp declared by EXPOSE below. WebRTC media does NOT: every
# publisher and viewer session gets its own UDP sockets on ephemeral ports that the
# ICE stack (aioice) picks at run time, and the addresses advertised as ICE host
# candidates are the interfaces the process sees. Behind Docker's default bridge
# network those ports are not published and the advertised candidates are the
# container's private address, so the HTTP exchange succeeds but media never
# flows (ICE fails or times out).
#
# On Linux, run the container on the host's network stack:
#
#   docker run --rm --network host meridian
#
# With --network host, EXPOSE and -p are ignored: the relay listens on the host's
# port 8080 directly, and ICE candidates carry the host's real addresses.
# (Docker Desktop on macOS/Windows runs containers in a VM, where host networking
# does not give this; run Meridian natively there.)
# ---------------------------------------------------------------------------
#
# Configuration: with no arguments Meridian starts on its embedded defaults
# (0.0.0.0:8080 with the built-in demo studio). To use your own file, mount it and
# pass --config, e.g.
#
#   docker run --rm --network host \
#     -v "$PWD/meridian.toml:/app/meridian.toml:ro" \
#     meridian python run.py --config /app/meridian.toml
#
# The HEALTHCHECK below probes port 8080; keep the port at 8080 or adjust it.

FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 meridian \
    && useradd --system --uid 10001 --gid meridian --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin meridian

WORKDIR /app

# Dependencies first, so that code changes do not invalidate this layer.
COPY requirements.txt ./
RUN pip install --no-cache-dir -r requirements.txt

# Application code (owned by root, read-only to the service user).
COPY config/ ./config/
COPY ingest/ ./ingest/
COPY relay/ ./relay/
COPY metrics/ ./metrics/
COPY server/ ./server/
COPY clients/ ./clients/
COPY cluster/ ./cluster/
COPY run.py meridian.toml ./

USER meridian

# WHIP/WHEP signalling, /metrics and /healthz. Media uses ephemeral UDP ports: see above.
EXPOSE 8080/tcp

HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4)"]

CMD ["python", "run.py"]
