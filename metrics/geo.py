"""A viewer's country, resolved once per session (DESIGN.md, "Geography").

Order:
1. When the HTTP peer is a trusted proxy (`geo.trusted_proxies`): a country header it
   set (`geo.country_headers`), else the client address it forwarded (`Forwarded`, else
   `X-Forwarded-For`, read from the right: the first address that is not itself a
   trusted proxy is the client; anything left of it may have been written by the client).
2. Otherwise the HTTP peer's own address; headers from an untrusted peer are ignored.
3. When the address from 1 or 2 is not public (private, loopback, ...) or missing (and
   no trusted country header answered), the media path's ICE-selected remote address is
   used instead once the session's first keyframe goes out, if that one is public
   (`GeoResolver.refine`): it is harder to forge than an HTTP header, and viewers behind
   a reverse proxy that is not configured as trusted are still placed. Such a viewer
   counts under the unknown label between ICE connecting and its first keyframe (a
   fraction of a second); its sessions and viewing-time counters start at that keyframe,
   so they only ever see the final country.
4. The address is looked up in the MaxMind-format database when `geo.database` is set
   (then in the embedded table when the database has no country for it), otherwise in
   the embedded offline table (`iptocc`, IPv4 and IPv6, nothing downloaded at run time).

Private, loopback, link-local, garbage and unlisted addresses give `geo.unknown_label`.
Every result is an ISO 3166-1 alpha-2 code or that label, so metric labels stay bounded.
The address itself is only ever logged at DEBUG level and never leaves this module.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Literal

import iptocc
import maxminddb
from multidict import MultiMapping

from config.loader import COUNTRY_CODES
from config.settings import GeoSettings

log = logging.getLogger("meridian.geo")

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Via = Literal["country-header", "forwarded", "peer"]


def parse_address(text: str | None) -> IpAddress | None:
    """An address as written in a socket peer or a forwarding header, or None.

    Accepts `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`, quoted forms
    and IPv4-mapped IPv6 (unwrapped to IPv4); anything else (`unknown`, `_hidden`,
    garbage) is None.
    """
    if not text:
        return None
    value = text.strip().strip('"').strip()
    if value.startswith("["):
        value = value[1 : value.find("]")] if "]" in value else ""
    elif value.count(":") == 1:
        value = value.partition(":")[0]  # IPv4 with a port
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_for(headers: MultiMapping[str]) -> list[str] | None:
    """The `for=` chain of RFC 7239 `Forwarded`, else of `X-Forwarded-For`, left to right."""
    forwarded = headers.getall("Forwarded", [])
    if forwarded:
        chain: list[str] = []
        for element in ",".join(forwarded).split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.strip().lower() == "for":
                    chain.append(value.strip())
        return chain
    xff = headers.getall("X-Forwarded-For", [])
    if xff:
        return [part.strip() for part in ",".join(xff).split(",")]
    return None


@dataclass(frozen=True, slots=True)
class Located:
    """Where one viewer is, as far as the HTTP request tells."""

    country: str
    via: Via
    # True when the ICE-selected media address may replace this answer (see `refine`).
    refinable: bool


class GeoResolver:
    """Resolves addresses and WHEP requests to ISO countries; holds the open database."""

    def __init__(self, settings: GeoSettings) -> None:
        self.unknown = settings.unknown_label
        self._trusted: tuple[IpNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in settings.trusted_proxies
        )
        self._country_headers = settings.country_headers
        self._database: maxminddb.Reader | None = (
            maxminddb.open_database(settings.database) if settings.database else None
        )

    def close(self) -> None:
        if self._database is not None:
            self._database.close()
            self._database = None

    # ------------------------------------------------------------------ addresses

    def is_trusted(self, address: IpAddress | None) -> bool:
        return address is not None and any(address in network for network in self._trusted)

    def country_of(self, address: IpAddress | str | None) -> str:
        """The ISO country of an address, or the unknown label."""
        if isinstance(address, str):
            address = parse_address(address)
        if address is None or not address.is_global:
            return self.unknown
        code = self._from_database(address) if self._database is not None else None
        if code is None:
            code = iptocc.country_code(str(address))
        return self._checked(code)

    def _from_database(self, address: IpAddress) -> str | None:
        assert self._database is not None
        try:
            record = self._database.get(str(address))
        except ValueError:  # an IPv6 address in an IPv4-only database
            return None
        if not isinstance(record, dict):
            return None
        for key in ("country", "registered_country"):
            entry = record.get(key)
            if isinstance(entry, dict) and isinstance(entry.get("iso_code"), str):
                return str(entry["iso_code"])
        return None

    def _checked(self, code: str | None) -> str:
        """Only ISO codes become labels: a bounded set, whatever a database or CDN says."""
        if code is None:
            return self.unknown
        code = code.strip().upper()
        return code if code in COUNTRY_CODES else self.unknown

    # ------------------------------------------------------------------ requests

    def locate(self, peer: str | None, headers: MultiMapping[str]) -> Located:
        """The country of a WHEP request from `peer` (the socket's remote address)."""
        peer_address = parse_address(peer)
        if self.is_trusted(peer_address):
            for name in self._country_headers:
                for value in headers.getall(name, []):
                    code = self._checked(value)
                    if code != self.unknown:
                        log.debug("country from a trusted proxy's header", extra=_debug(peer))
                        return Located(code, "country-header", refinable=False)
            chain = forwarded_for(headers)
            if chain:
                client = self._client_in(chain)
                country = self.country_of(client)
                log.debug(
                    "country from a trusted proxy's forwarded address",
                    extra={**_debug(peer), "client": str(client), "country": country},
                )
                return Located(country, "forwarded", refinable=not _is_public(client))
        country = self.country_of(peer_address)
        log.debug("country from the peer address", extra={**_debug(peer), "country": country})
        return Located(country, "peer", refinable=not _is_public(peer_address))

    def client_address(self, peer: str | None, headers: MultiMapping[str]) -> IpAddress | None:
        """The client's address: the peer's own, or the one a trusted proxy forwarded.

        The per-client rate limit keys on it, by the same rule that places viewers.
        """
        peer_address = parse_address(peer)
        if self.is_trusted(peer_address):
            chain = forwarded_for(headers)
            client = self._client_in(chain) if chain else None
            if client is not None:
                return client
        return peer_address

    def _client_in(self, chain: list[str]) -> IpAddress | None:
        """The rightmost address that is not a trusted proxy (None if garbage stops the walk)."""
        client: IpAddress | None = None
        for text in reversed(chain):
            client = parse_address(text)
            if not self.is_trusted(client):
                return client
        return client  # every hop is a trusted proxy: the leftmost one

    def refine(self, located: Located, media_address: str | None) -> str:
        """The final country once the ICE-selected remote address of the media is known."""
        if not located.refinable:
            return located.country
        address = parse_address(media_address)
        if not _is_public(address):
            return located.country
        country = self.country_of(address)
        if country == self.unknown:
            return located.country
        log.debug(
            "country from the media path's address",
            extra={"media_address": media_address, "country": country},
        )
        return country


def _is_public(address: IpAddress | None) -> bool:
    return address is not None and address.is_global


def _debug(peer: str | None) -> dict[str, object]:
    return {"peer": peer}
