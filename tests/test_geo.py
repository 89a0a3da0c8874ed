"""GeoIP: addresses and WHEP requests to ISO countries, trusted proxies, databases."""

from __future__ import annotations

import logging
from pathlib import Path

import aiohttp
import iptocc
import pytest
from aiohttp.test_utils import TestServer
from mmdb_writer import MMDBWriter
from multidict import CIMultiDict
from netaddr import IPSet

from clients.audience_load import light_viewer
from config.settings import GeoSettings
from metrics.geo import GeoResolver, Located, forwarded_for, parse_address
from relay.viewer import ViewerSession
from server.state import SESSIONS
from tests.conftest import TOKENS, url
from tests.metrics_probe import wait_for_viewers
from tests.rtc_peers import publishing
from tests.test_relay_e2e import wait_live

# Addresses whose registry country the embedded table (iptocc, pinned) knows.
BERLIN_V4, PARIS_V4, TOKYO_V4, CAIRO_V4 = "81.169.145.150", "62.4.0.1", "133.242.0.1", "41.32.0.1"
GERMANY_V6, JAPAN_V6, KENYA_V6 = "2a01:4f8::1", "2001:200::1", "2c0f:fb50::1"


def write_mmdb(path: Path, networks: dict[str, str], *, city: bool = False) -> Path:
    """A tiny MaxMind-format database: CIDR -> ISO code, shaped like GeoLite2 Country/City."""
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type="GeoLite2-City" if city else "GeoLite2-Country",
        languages=["en"],
        description="Meridian test database",
    )
    for cidr, code in networks.items():
        record: dict[str, object]
        if city:  # a City record with only the registered country, as for some ranges
            record = {
                "city": {"names": {"en": "Somewhere"}},
                "registered_country": {"iso_code": code},
            }
        else:
            record = {"country": {"iso_code": code, "names": {"en": code}}}
        writer.insert_network(IPSet([cidr]), record)
    writer.to_db_file(str(path))
    return path


def resolver(**settings: object) -> GeoResolver:
    return GeoResolver(GeoSettings(**settings))  # type: ignore[arg-type]


def headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict((name.replace("_", "-"), value) for name, value in values.items())


# ------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("address", "country"),
    [
        (BERLIN_V4, "DE"),
        (PARIS_V4, "FR"),
        (TOKYO_V4, "JP"),
        (CAIRO_V4, "EG"),
        (GERMANY_V6, "DE"),
        (JAPAN_V6, "JP"),
        (KENYA_V6, "KE"),
        (f"::ffff:{BERLIN_V4}", "DE"),  # IPv4-mapped, as a dual-stack socket reports it
        (f"{BERLIN_V4}:5678", "DE"),
        (f"[{JAPAN_V6}]:443", "JP"),
        (f'"[{JAPAN_V6}]"', "JP"),
    ],
)
def test_public_addresses_resolve_with_the_embedded_table(address: str, country: str) -> None:
    assert resolver().country_of(address) == country


@pytest.mark.parametrize(
    "address",
    [
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "100.64.0.1",  # carrier-grade NAT
        "169.254.1.1",
        "fc00::1",
        "fe80::1%eth0",
        "2001:db8::1",  # documentation range
        "127.0.0.1",
        "::1",
        "0.0.0.0",
        "::",
    ],
)
def test_private_and_loopback_addresses_are_unknown(address: str) -> None:
    assert resolver().country_of(address) == "unknown"
    assert resolver(unknown_label="elsewhere").country_of(address) == "elsewhere"


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "   ",
        "unknown",
        "_hidden",
        "not-an-ip",
        "999.1.1.1",
        "1.2.3",
        "1.2.3.4.5",
        "::g",
        "[::1",
    ],
)
def test_garbage_is_unknown(garbage: str) -> None:
    assert parse_address(garbage) is None
    assert resolver().country_of(garbage) == "unknown"
    assert resolver().country_of(None) == "unknown"


def test_every_answer_is_an_iso_code_or_the_label() -> None:
    geo = resolver()
    for first in range(1, 224, 3):
        country = geo.country_of(f"{first}.{first}.1.1")
        assert country == "unknown" or (len(country) == 2 and country.isupper()), country


# -------------------------------------------------------------------------- requests


def test_headers_from_an_untrusted_peer_are_ignored() -> None:
    geo = resolver(trusted_proxies=("10.0.0.0/8",))
    spoofed = headers(CF_IPCountry="FR", X_Forwarded_For=PARIS_V4, Forwarded=f"for={PARIS_V4}")
    assert geo.locate(CAIRO_V4, spoofed) == Located("EG", "peer", refinable=False)
    # No trusted proxies configured at all: the same headers from anywhere are ignored.
    assert resolver().locate("10.0.0.5", spoofed) == Located("unknown", "peer", refinable=True)


def test_a_trusted_proxy_forwards_the_client_address() -> None:
    geo = resolver(trusted_proxies=("10.0.0.0/8", "::1"))
    located = geo.locate("10.0.0.5", headers(X_Forwarded_For=BERLIN_V4))
    assert located == Located("DE", "forwarded", refinable=False)
    assert geo.locate("::1", headers(X_Forwarded_For=JAPAN_V6)).country == "JP"


def test_only_the_rightmost_untrusted_forwarded_address_counts() -> None:
    geo = resolver(trusted_proxies=("10.0.0.0/8",))
    # The client wrote the first entry itself; the proxy appended what it saw.
    assert (
        geo.locate("10.0.0.5", headers(X_Forwarded_For=f"{PARIS_V4}, {BERLIN_V4}")).country == "DE"
    )
    # A chain of trusted proxies is walked through.
    chain = headers(X_Forwarded_For=f"{PARIS_V4}, {TOKYO_V4}, 10.0.0.7, 10.0.0.8")
    assert geo.locate("10.0.0.5", chain).country == "JP"
    # Several X-Forwarded-For headers are one list.
    several = CIMultiDict([("X-Forwarded-For", PARIS_V4), ("X-Forwarded-For", CAIRO_V4)])
    assert geo.locate("10.0.0.5", several).country == "EG"


def test_forwarded_header_wins_over_x_forwarded_for() -> None:
    geo = resolver(trusted_proxies=("10.0.0.0/8",))
    both = headers(
        Forwarded=f'for=1.2.3.4, for="[{JAPAN_V6}]:443";proto=https, for=10.0.0.9',
        X_Forwarded_For=BERLIN_V4,
    )
    assert forwarded_for(both) == ["1.2.3.4", f'"[{JAPAN_V6}]:443"', "10.0.0.9"]
    assert geo.locate("10.0.0.5", both) == Located("JP", "forwarded", refinable=False)


def test_garbage_forwarded_by_a_trusted_proxy_is_unknown() -> None:
    geo = resolver(trusted_proxies=("10.0.0.0/8",))
    for value in ("garbage", "unknown", "192.168.0.3", ""):
        located = geo.locate("10.0.0.5", headers(X_Forwarded_For=value))
        assert located.country == "unknown" and located.refinable, value


def test_a_trusted_country_header_comes_first() -> None:
    geo = resolver(trusted_proxies=("127.0.0.0/8",))
    both = headers(CF_IPCountry="fr", X_Forwarded_For=BERLIN_V4)
    assert geo.locate("127.0.0.1", both) == Located("FR", "country-header", refinable=False)
    second = headers(CloudFront_Viewer_Country="JP")
    assert geo.locate("127.0.0.1", second).country == "JP"
    # A CDN's "no country" (XX), Tor (T1) or junk falls through to the forwarded address.
    for value in ("XX", "T1", "EU", "Germany", ""):
        fallback = headers(CF_IPCountry=value, X_Forwarded_For=BERLIN_V4)
        assert geo.locate("127.0.0.1", fallback) == Located("DE", "forwarded", refinable=False)
    # Neither: the proxy's own (loopback) address, hence unknown.
    assert geo.locate("127.0.0.1", headers()) == Located("unknown", "peer", refinable=True)


def test_country_header_names_are_configurable() -> None:
    geo = resolver(trusted_proxies=("127.0.0.1",), country_headers=("X-Viewer-Country",))
    assert geo.locate("127.0.0.1", headers(X_Viewer_Country="BR")).country == "BR"
    assert geo.locate("127.0.0.1", headers(CF_IPCountry="BR")).country == "unknown"


def test_the_media_address_refines_a_private_request_address() -> None:
    geo = resolver()
    behind_proxy = geo.locate("192.168.1.20", headers())
    assert behind_proxy == Located("unknown", "peer", refinable=True)
    assert geo.refine(behind_proxy, BERLIN_V4) == "DE"
    assert geo.refine(behind_proxy, JAPAN_V6) == "JP"
    assert geo.refine(behind_proxy, "10.0.0.1") == "unknown"
    assert geo.refine(behind_proxy, None) == "unknown"
    # Never overrides what a public address or a trusted header said.
    assert geo.refine(geo.locate(CAIRO_V4, headers()), BERLIN_V4) == "EG"
    trusted = resolver(trusted_proxies=("127.0.0.1",))
    from_cdn = trusted.locate("127.0.0.1", headers(CF_IPCountry="PE"))
    assert trusted.refine(from_cdn, BERLIN_V4) == "PE"


def test_addresses_are_logged_at_debug_level_only(caplog: pytest.LogCaptureFixture) -> None:
    geo = resolver(trusted_proxies=("10.0.0.0/8",))
    request_headers = headers(X_Forwarded_For=BERLIN_V4)
    with caplog.at_level(logging.INFO, logger="meridian.geo"):
        geo.locate("10.0.0.5", request_headers)
        geo.refine(geo.locate("10.0.0.6", headers()), TOKYO_V4)
    assert not caplog.records
    with caplog.at_level(logging.DEBUG, logger="meridian.geo"):
        geo.locate("10.0.0.5", request_headers)
    assert any(BERLIN_V4 in str(vars(record)) for record in caplog.records)
    assert all(record.levelno == logging.DEBUG for record in caplog.records)


# ------------------------------------------------------------------------- databases


def test_a_maxmind_database_is_used_when_configured(tmp_path: Path) -> None:
    database = write_mmdb(
        tmp_path / "tiny.mmdb", {"8.8.8.0/24": "DE", "2001:4860::/32": "FR", "9.9.9.0/24": "EU"}
    )
    assert iptocc.country_code("8.8.8.8") == "US"  # so the answers below come from the file
    geo = resolver(database=str(database))
    try:
        assert geo.country_of("8.8.8.8") == "DE"
        assert geo.country_of("2001:4860:4860::8888") == "FR"
        assert geo.country_of("::ffff:8.8.8.8") == "DE"
        # Not in the file: the embedded table answers.
        assert geo.country_of(TOKYO_V4) == "JP"
        assert geo.country_of(KENYA_V6) == "KE"
        # Not an ISO country (a continent code): the unknown label, labels stay bounded.
        assert geo.country_of("9.9.9.9") == "unknown"
        assert geo.country_of("10.0.0.1") == "unknown"
    finally:
        geo.close()
        geo.close()  # idempotent


def test_a_city_database_with_registered_country(tmp_path: Path) -> None:
    database = write_mmdb(tmp_path / "city.mmdb", {"8.8.8.0/24": "CA"}, city=True)
    geo = resolver(database=str(database))
    assert geo.country_of("8.8.8.8") == "CA"
    geo.close()


def test_an_ipv4_only_database_still_answers_ipv6_from_the_embedded_table(tmp_path: Path) -> None:
    writer = MMDBWriter(ip_version=4, database_type="GeoLite2-Country")
    writer.insert_network(IPSet(["8.8.8.0/24"]), {"country": {"iso_code": "NO"}})
    writer.to_db_file(str(tmp_path / "v4.mmdb"))
    geo = resolver(database=str(tmp_path / "v4.mmdb"))
    assert geo.country_of("8.8.8.8") == "NO"
    assert geo.country_of(JAPAN_V6) == "JP"
    geo.close()


def test_embedded_fallback_without_a_database() -> None:
    geo = resolver()
    assert geo.country_of("8.8.8.8") == "US"
    assert geo.country_of("2001:4860:4860::8888") == "US"


def test_the_load_helper_addresses_are_where_it_says() -> None:
    from clients.audience_load import COUNTRIES

    geo = resolver()
    assert len({country for country, _, _ in COUNTRIES}) == len(COUNTRIES) >= 40
    for country, _, address in COUNTRIES:
        assert geo.country_of(address) == country, address


# ------------------------------------------------------------------- through WHEP


async def test_whep_ignores_a_spoofed_country_header(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    """No trusted proxy configured: a viewer's own headers do not place it anywhere."""
    spoofed = {"CF-IPCountry": "FR", "X-Forwarded-For": PARIS_V4, "Forwarded": f"for={PARIS_V4}"}
    async with publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"], audio=False):
        await wait_live(http, server, "berlin")
        async with light_viewer(http, url(server, "/whep/berlin"), spoofed, kinds=("video",)):
            [resource] = [r for r in server.app[SESSIONS].all() if r.protocol == "whep"]
            session = resource.session
            assert isinstance(session, ViewerSession)
            # The loopback HTTP peer is unknown; the media path's address decides if public.
            expected = resolver().country_of(session.remote_address)
            await wait_for_viewers(http, str(server.make_url("")), "berlin", {expected: 1})
            assert expected != "FR"
