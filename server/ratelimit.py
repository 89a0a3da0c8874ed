"""Per-client rate limit on POST, PATCH and DELETE: a token bucket per client address.

The client is the HTTP peer, or the address a trusted proxy forwarded (`geo.trusted_proxies`,
the same rule that places viewers in countries); an IPv6 client counts by its /64, since
one host usually holds a whole /64. Each client may send `limits.rate_burst` requests at
once and `limits.rate_per_second` on average; beyond, `429` with `Retry-After`. At most
`limits.rate_clients` clients are remembered: the least recently seen are forgotten
first (and start again with a full bucket), so memory stays bounded whatever the traffic.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from metrics.geo import GeoResolver
from server.live_settings import LiveSettings
from server.problems import Handler, Problem

log = logging.getLogger("meridian.http")

LIMITED_METHODS = frozenset({"POST", "PATCH", "DELETE"})


class RateLimiter:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        # client -> (tokens left, when counted); insertion order is recency order.
        self._buckets: dict[str, tuple[float, float]] = {}
        self._clock = clock

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, client: str, rate: float, burst: int, max_clients: int) -> float:
        """Spend one request of `client`: 0.0 if allowed, else seconds until one would be."""
        now = self._clock()
        bucket = self._buckets.pop(client, None)
        if bucket is None:
            tokens = float(burst)
        else:
            tokens = min(float(burst), bucket[0] + (now - bucket[1]) * rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rate
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > max_clients:
            del self._buckets[next(iter(self._buckets))]  # the least recently seen
        return wait


def client_key(request: web.Request, geo: GeoResolver) -> str:
    """The address a request counts against (an IPv6 client: its /64)."""
    try:
        address = geo.client_address(request.remote, request.headers)
    except Exception:  # a broken resolver must not stop requests; the peer still counts
        log.warning("could not resolve a client address for the rate limit", exc_info=True)
        address = None
    if address is None:
        return request.remote or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def rate_limit_middleware(live: LiveSettings, geo: GeoResolver) -> Middleware:
    limiter = RateLimiter()

    @web.middleware
    async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method in LIMITED_METHODS:
            limits = live.current.limits
            if limits.rate_per_second > 0:
                wait = limiter.take(
                    client_key(request, geo),
                    limits.rate_per_second,
                    limits.rate_burst,
                    limits.rate_clients,
                )
                if wait > 0:
                    raise Problem(
                        429,
                        "Too Many Requests",
                        f"more than {limits.rate_burst} requests at once or "
                        f"{limits.rate_per_second:g} per second from one address; "
                        f"try again in {math.ceil(wait)} s",
                        headers={"Retry-After": str(math.ceil(wait))},
                    )
        return await handler(request)

    return rate_limit
