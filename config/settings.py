"""The settings Meridian runs on, as frozen dataclasses.

Every field has an embedded default so that `python run.py` with no file starts a
working single-node relay with the built-in demo studio.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StudioSettings:
    """One studio that may publish over WHIP."""

    id: str
    name: str
    country: str  # ISO 3166-1 alpha-2 of the studio's location, e.g. "UZ"
    city: str = ""
    token: str = ""  # the bearer token itself, already resolved from token_env/token_file
    # Viewers need a signed viewer token for this studio (see ViewerTokenSettings).
    require_viewer_token: bool = False


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    # Largest SDP offer or trickle fragment accepted, in bytes (413 above it).
    max_body_bytes: int = 64 * 1024
    # CORS: origins allowed to call WHIP/WHEP from a browser ("*" for any).
    cors_origins: tuple[str, ...] = ("*",)
    # /metrics on a listener of its own (port 0: served on the main port); host "" means `host`.
    metrics_host: str = ""
    metrics_port: int = 0


@dataclass(frozen=True, slots=True)
class RelaySettings:
    # Seconds a WHEP client is told to wait (Retry-After) while a studio is offline.
    offline_retry_after: int = 5
    # Seconds a session may take to connect ICE and DTLS before it is dropped.
    connect_timeout: float = 30.0
    # Seconds without RTP after which a studio counts as down.
    studio_silence_timeout: float = 4.0
    # Minimum seconds between two keyframe requests sent to one studio.
    keyframe_request_interval: float = 0.3
    # Kernel send buffer of a viewer's socket; a viewer that fills it is dropped to the next
    # keyframe.
    viewer_send_buffer_bytes: int = 256 * 1024


@dataclass(frozen=True, slots=True)
class DemoSettings:
    # Publish a built-in test pattern as studio `demo` through the WHIP endpoint.
    enabled: bool = True
    studio_id: str = "demo"
    width: int = 640
    height: int = 360
    fps: int = 30
    loop_seconds: float = 4.0


@dataclass(frozen=True, slots=True)
class GeoSettings:
    """Where a viewer's country comes from (see DESIGN.md, "Geography")."""

    # Proxies (CIDRs or single addresses) whose forwarding headers are believed: a country
    # header, then Forwarded / X-Forwarded-For. Empty: every such header is ignored.
    trusted_proxies: tuple[str, ...] = ()
    # Country headers a trusted proxy or CDN sets (ISO 3166-1 alpha-2), first one present wins.
    country_headers: tuple[str, ...] = ("CF-IPCountry", "CloudFront-Viewer-Country")
    # MaxMind-format database (GeoLite2/GeoIP2 Country or City); empty: the embedded table.
    database: str = ""
    # Country label for private, loopback and unresolvable addresses.
    unknown_label: str = "unknown"


@dataclass(frozen=True, slots=True)
class ClusterSettings:
    """Many processes and machines (see cluster/): roles, the Redis directory, edge pulls.

    `single` (the default) is one self-contained node that never touches Redis.
    """

    # single | origin (takes WHIP) | edge (serves WHEP, pulls from origins) | both
    role: str = "single"
    # This node's name in the directory; empty: "<host name>-<port>".
    node_id: str = ""
    # Base URL viewers and other nodes reach this node at; empty: http://<host>:<port>.
    public_url: str = ""
    # Free-form region name ("eu-west"); viewers go to edges of their own region first.
    region: str = "default"
    # ISO countries whose viewers count as this node's region (empty: only the region name).
    countries: tuple[str, ...] = ()
    # Viewers this node takes before it is left out of redirects.
    capacity: int = 500
    redis_url: str = "redis://127.0.0.1:6379/0"
    # The cluster token edges pull with, resolved from token / token_env / token_file.
    token: str = ""
    token_env: str = ""
    token_file: str = ""
    # Where an edge pulls from: "origin" (the origin may redirect it to an edge that has the
    # feed) or "region" (an edge of its own region that has the feed first, else the origin).
    upstream: str = "origin"
    # Edge pulls this node serves at most; beyond, a pull is redirected to an edge that
    # already has the feed (a tree). 0: no bound.
    max_edge_pulls: int = 0
    # Seconds between directory updates, and how long a registration outlives its node.
    heartbeat_interval: float = 1.0
    node_ttl: float = 5.0
    # Seconds an edge keeps pulling a studio after its last viewer left.
    pull_grace: float = 5.0


@dataclass(frozen=True, slots=True)
class LimitSettings:
    """Load shedding: what one client and the whole node may ask for (0: no cap)."""

    # POST/PATCH/DELETE per client address (an IPv6 client: its /64), as a token bucket.
    rate_per_second: float = 20.0
    rate_burst: int = 100
    # Client addresses remembered at once (the least recently seen are forgotten).
    rate_clients: int = 50_000
    # Viewers on this node and per studio, connecting or connected (503 beyond).
    max_viewers: int = 0
    max_viewers_per_studio: int = 0
    # Viewer sessions whose ICE and DTLS have not completed yet (503 beyond).
    max_pending_sessions: int = 200
    # Retry-After seconds on a 503 (caps, draining).
    retry_after: int = 5


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin API (/admin/...): on only when a token is configured."""

    # The bearer token, resolved from token / token_env / token_file; empty: no admin API.
    token: str = ""
    token_env: str = ""
    token_file: str = ""


@dataclass(frozen=True, slots=True)
class ViewerTokenSettings:
    """The key that signs viewer tokens (JWT HS256) for studios with require_viewer_token."""

    # The secret, resolved from secret / secret_env / secret_file; empty: none configured.
    secret: str = ""
    secret_env: str = ""
    secret_file: str = ""


@dataclass(frozen=True, slots=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    geo: GeoSettings = field(default_factory=GeoSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    viewer_tokens: ViewerTokenSettings = field(default_factory=ViewerTokenSettings)

    studios: tuple[StudioSettings, ...] = ()
    log_level: str = "INFO"
    log_format: str = "text"  # "text" or "json"

    def studio(self, studio_id: str) -> StudioSettings | None:
        return next((s for s in self.studios if s.id == studio_id), None)
