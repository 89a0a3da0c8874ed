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


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    # Largest SDP offer or trickle fragment accepted, in bytes (413 above it).
    max_body_bytes: int = 64 * 1024
    # CORS: origins allowed to call WHIP/WHEP from a browser ("*" for any).
    cors_origins: tuple[str, ...] = ("*",)


@dataclass(frozen=True, slots=True)
class RelaySettings:
    # Seconds a WHEP client is told to wait (Retry-After) while a studio is offline.
    offline_retry_after: int = 5
    # Seconds a session may take to connect ICE and DTLS before it is dropped.
    connect_timeout: float = 30.0
    # Seconds without RTP after which a studio counts as down.
    studio_silence_timeout: float = 5.0
    # Minimum seconds between two keyframe requests sent to one studio.
    keyframe_request_interval: float = 0.3
    # Bytes queued in a viewer's socket before its packets are dropped to the next keyframe.
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
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    geo: GeoSettings = field(default_factory=GeoSettings)
    studios: tuple[StudioSettings, ...] = ()
    log_level: str = "INFO"
    log_format: str = "text"  # "text" or "json"

    def studio(self, studio_id: str) -> StudioSettings | None:
        return next((s for s in self.studios if s.id == studio_id), None)
