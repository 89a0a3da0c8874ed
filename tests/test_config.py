"""Tests for config.loader: defaults, the shipped example, overrides and every rejection."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from config.loader import ConfigError, load_settings
from config.settings import (
    AdminSettings,
    DemoSettings,
    GeoSettings,
    LimitSettings,
    RelaySettings,
    ServerSettings,
    Settings,
    StudioSettings,
    ViewerTokenSettings,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "meridian.toml"
CAPITALS = ("TASHKENT", "CAIRO", "BERLIN", "PARIS", "JAKARTA", "BEIJING", "LIMA", "BUENOS_AIRES")
CAPITAL_IDS = {
    "tashkent": "UZ",
    "cairo": "EG",
    "berlin": "DE",
    "paris": "FR",
    "jakarta": "ID",
    "beijing": "CN",
    "lima": "PE",
    "buenos-aires": "AR",
}
TOKEN = "t0ken-" + "x" * 20
STUDIO = f'[[studios]]\nid = "kyiv"\nname = "Kyiv studio"\ncountry = "UA"\ntoken = "{TOKEN}"\n'


def load(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> Settings:
    path = tmp_path / "meridian.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(path, environ or {})


def rejects(tmp_path: Path, text: str, environ: Mapping[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, environ)
    return str(info.value)


def test_defaults_without_file() -> None:
    settings = load_settings(None, {})
    assert settings.server == ServerSettings()
    assert settings.relay == RelaySettings()
    assert settings.demo == DemoSettings()
    assert settings.geo == GeoSettings()
    assert settings.geo.unknown_label == "unknown" and settings.geo.trusted_proxies == ()
    assert (settings.log_level, settings.log_format) == ("INFO", "text")
    [demo] = settings.studios
    assert (demo.id, demo.country) == ("demo", "ZZ")
    assert len(demo.token) >= 32
    assert load_settings(None, {}).studios[0].token != demo.token  # fresh per load


def test_example_file_is_valid() -> None:
    environ = {
        f"MERIDIAN_TOKEN_{city}": f"secret-of-{city.lower()}-0123456789" for city in CAPITALS
    }
    settings = load_settings(EXAMPLE, environ)
    assert [(s.id, s.country) for s in settings.studios] == [*CAPITAL_IDS.items(), ("demo", "ZZ")]
    assert settings.studio("buenos-aires") == StudioSettings(
        id="buenos-aires",
        name="Buenos Aires studio",
        country="AR",
        city="Buenos Aires",
        token="secret-of-buenos_aires-0123456789",
    )
    assert settings.demo.enabled
    assert settings.server == ServerSettings()
    assert settings.relay == RelaySettings()
    assert settings.geo == GeoSettings()


def test_example_file_needs_its_token_variables() -> None:
    with pytest.raises(ConfigError, match=r"studios\[0\]\.token_env.*MERIDIAN_TOKEN_TASHKENT"):
        load_settings(EXAMPLE, {})


def test_example_file_documents_every_option() -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for section in (
        ServerSettings(),
        RelaySettings(),
        DemoSettings(),
        GeoSettings(),
        LimitSettings(),
        AdminSettings(),
        ViewerTokenSettings(),
    ):
        for name in section.__slots__:
            assert re.search(rf"^#? ?{name} = ", text, re.MULTILINE), name
    assert "# log_level = " in text and "# log_format = " in text


@pytest.mark.parametrize(
    ("var", "value", "section", "field", "expected"),
    [
        ("MERIDIAN_SERVER__PORT", "9000", "server", "port", 9000),
        ("MERIDIAN_SERVER__HOST", "127.0.0.1", "server", "host", "127.0.0.1"),
        (
            "MERIDIAN_SERVER__CORS_ORIGINS",
            "https://a.example, https://b.example:8443",
            "server",
            "cors_origins",
            ("https://a.example", "https://b.example:8443"),
        ),
        ("MERIDIAN_SERVER__CORS_ORIGINS", "", "server", "cors_origins", ()),
        ("MERIDIAN_RELAY__CONNECT_TIMEOUT", "12.5", "relay", "connect_timeout", 12.5),
        (
            "MERIDIAN_RELAY__KEYFRAME_REQUEST_INTERVAL",
            "0",
            "relay",
            "keyframe_request_interval",
            0.0,
        ),
        ("MERIDIAN_DEMO__ENABLED", "false", "demo", "enabled", False),
        ("MERIDIAN_DEMO__ENABLED", "No", "demo", "enabled", False),
        ("MERIDIAN_DEMO__ENABLED", "0", "demo", "enabled", False),
        ("MERIDIAN_DEMO__ENABLED", "yes", "demo", "enabled", True),
        ("MERIDIAN_DEMO__FPS", " 25 ", "demo", "fps", 25),
    ],
)
def test_env_overrides(var: str, value: str, section: str, field: str, expected: object) -> None:
    settings = load_settings(None, {var: value})
    assert getattr(getattr(settings, section), field) == expected


def test_env_overrides_top_level_and_wins_over_file(tmp_path: Path) -> None:
    environ = {
        "MERIDIAN_LOG_LEVEL": "debug",
        "MERIDIAN_LOG_FORMAT": "JSON",
        "MERIDIAN_SERVER__PORT": "9000",
    }
    settings = load(tmp_path, 'log_level = "ERROR"\n[server]\nport = 7000\nhost = "::"\n', environ)
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert (settings.server.port, settings.server.host) == (9000, "::")


def test_env_ignores_unrelated_meridian_variables() -> None:
    environ = {"MERIDIAN_TOKEN_BERLIN": "whatever", "MERIDIAN_HOME": "/srv", "PORT": "1"}
    assert load_settings(None, environ).server == ServerSettings()


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {"MERIDIAN_SERVER__PORT": "abc"},
            "server.port (from MERIDIAN_SERVER__PORT): must be an integer 1..65535, got 'abc'",
        ),
        ({"MERIDIAN_SERVER__PORT": "70000"}, "server.port (from MERIDIAN_SERVER__PORT)"),
        (
            {"MERIDIAN_DEMO__ENABLED": "maybe"},
            "demo.enabled (from MERIDIAN_DEMO__ENABLED): must be true or false",
        ),
        ({"MERIDIAN_RELAY__CONNECT_TIMEOUT": "nan"}, "relay.connect_timeout (from"),
        ({"MERIDIAN_RELAY__CONNECT_TIMEOUT": "-1"}, "relay.connect_timeout (from"),
        ({"MERIDIAN_LOG_LEVEL": "LOUD"}, "log_level (from MERIDIAN_LOG_LEVEL): must be one of"),
        (
            {"MERIDIAN_SERVER__PROT": "9000"},
            "server.prot (from MERIDIAN_SERVER__PROT): unknown key; allowed: host, port,",
        ),
        ({"MERIDIAN_SERVR__PORT": "9000"}, "MERIDIAN_SERVR__PORT: unknown section 'servr'"),
    ],
)
def test_env_rejections(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, environ)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'log_level = "TRACE"',
            "log_level: must be one of DEBUG, INFO, WARNING, ERROR, got 'TRACE'",
        ),
        ('log_format = "xml"', "log_format: must be one of text, json"),
        (
            "log_levl = 1",
            "log_levl: unknown key; allowed: server, relay, demo, geo,",
        ),
        ("server = 1", "server: must be a table"),
        ('[server]\nport = "abc"', "server.port: must be an integer 1..65535, got 'abc'"),
        ("[server]\nport = 0", "server.port: must be an integer 1..65535, got 0"),
        ("[server]\nport = true", "server.port: must be an integer"),
        (
            "[server]\nprot = 1",
            "server.prot: unknown key; allowed: host, port, max_body_bytes, cors_origins",
        ),
        ('[server]\nhost = ""', "server.host: must be a non-empty host name"),
        ("[server]\nmax_body_bytes = 0", "server.max_body_bytes: must be a positive integer"),
        ('[server]\ncors_origins = "*"', "server.cors_origins: must be a list of origins"),
        ("[server]\ncors_origins = [1]", "server.cors_origins: must be a list of origins"),
        (
            '[server]\ncors_origins = ["https://a.example/"]',
            "server.cors_origins: must be a list of origins",
        ),
        (
            "[relay]\noffline_retry_after = 0",
            "relay.offline_retry_after: must be a positive integer",
        ),
        (
            "[relay]\noffline_retry_after = 1.5",
            "relay.offline_retry_after: must be a positive integer",
        ),
        ("[relay]\nconnect_timeout = 0", "relay.connect_timeout: must be a positive number"),
        ('[relay]\nconnect_timeout = "30"', "relay.connect_timeout: must be a positive number"),
        (
            "[relay]\nstudio_silence_timeout = -5.0",
            "relay.studio_silence_timeout: must be a positive",
        ),
        ("[relay]\nconnect_timeout = inf", "relay.connect_timeout: must be a positive number"),
        (
            "[relay]\nkeyframe_request_interval = -0.1",
            "relay.keyframe_request_interval: must be a number >= 0",
        ),
        (
            "[relay]\nviewer_send_buffer_bytes = 0",
            "relay.viewer_send_buffer_bytes: must be a positive",
        ),
        ('[demo]\nenabled = "yes"', "demo.enabled: must be true or false, got 'yes'"),
        ('[demo]\nstudio_id = "Demo"', "demo.studio_id: must be an id matching"),
        ("[demo]\nwidth = 641", "demo.width: must be a positive even integer"),
        ("[demo]\nheight = 0", "demo.height: must be a positive even integer"),
        ("[demo]\nfps = 0", "demo.fps: must be a positive integer"),
        ("[demo]\nloop_seconds = 0", "demo.loop_seconds: must be a positive number"),
        ("[demo]\ncolour = 1", "demo.colour: unknown key"),
        ("[studios]\nid = 1", "studios: must be an array of tables"),
    ],
)
def test_rejections(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in rejects(tmp_path, text)


def studio(**keys: Any) -> str:
    table = {"id": "kyiv", "name": "Kyiv studio", "country": "UA", "token": TOKEN} | keys
    lines = [f"{key} = {json.dumps(value)}" for key, value in table.items() if value is not None]
    return (
        f'[[studios]]\nid = "zero"\nname = "Zero"\ncountry = "NL"\ntoken = "{TOKEN}"\n'
        + "\n".join(["[[studios]]", *lines])
    )


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            {"id": "Kyiv"},
            "studios[1].id: must be an id matching ^[a-z0-9][a-z0-9_-]{0,62}$, got 'Kyiv'",
        ),
        ({"id": "-kyiv"}, "studios[1].id: must be an id"),
        ({"id": "k" * 64}, "studios[1].id: must be an id"),
        ({"id": 7}, "studios[1].id: must be an id"),
        ({"id": "zero"}, "studios[1].id: 'zero' is already used by studios[0]"),
        ({"id": None}, "studios[1].id: required"),
        ({"name": None}, "studios[1].name: required"),
        ({"name": "  "}, "studios[1].name: must be a non-empty string"),
        ({"country": None}, "studios[1].country: required"),
        (
            {"country": "Germany"},
            "studios[1].country: must be an ISO 3166-1 alpha-2 code like \"DE\", got 'Germany'",
        ),
        ({"country": "UK"}, "studios[1].country: must be an ISO 3166-1 alpha-2 code"),
        ({"city": 3}, "studios[1].city: must be a string, got 3"),
        (
            {"colour": "red"},
            "studios[1].colour: unknown key; allowed: id, name, country, city, token",
        ),
        (
            {"token": None},
            "studios[1]: needs exactly one of token, token_env, token_file; got none",
        ),
        (
            {"token_env": "X"},
            "studios[1]: needs exactly one of token, token_env, token_file; got token, token_env",
        ),
        ({"token": "short"}, "studios[1].token: must be at least 16 characters, got 5"),
        ({"token": "has spaces in the middle"}, "studios[1].token: may only hold letters, digits"),
        ({"token": 1234567890123456789}, "studios[1].token: must be a non-empty string"),
        (
            {"token": None, "token_env": "KYIV_TOKEN"},
            "studios[1].token_env: environment variable KYIV_TOKEN is not set",
        ),
        (
            {"token": None, "token_env": "EMPTY"},
            "studios[1].token_env (EMPTY): must be at least 16 characters, got 0",
        ),
        ({"token": None, "token_file": "missing.txt"}, "studios[1].token_file: cannot read "),
    ],
)
def test_studio_rejections(tmp_path: Path, keys: dict[str, Any], expected: str) -> None:
    assert expected in rejects(tmp_path, studio(**keys), {"EMPTY": ""})


def test_token_errors_never_show_the_token(tmp_path: Path) -> None:
    for token in ("s3cr3t", "s3cr3t with a space"):
        assert "s3cr3t" not in rejects(tmp_path, studio(token=token))


def test_token_sources(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "paris.token").write_text(f"  {TOKEN}-file\n", encoding="utf-8")
    text = (
        studio(id="paris", country="fr", token=None, token_file="secrets/paris.token")
        + '\n[[studios]]\nid = "lima"\nname = "Lima"\ncountry = "PE"\ntoken_env = "LIMA_TOKEN"\n'
    )
    settings = load(tmp_path, text, {"LIMA_TOKEN": f"{TOKEN}-env\n"})
    zero, paris, lima, _demo = settings.studios
    assert zero.token == TOKEN
    assert (paris.token, paris.country, paris.city) == (f"{TOKEN}-file", "FR", "")
    assert lima.token == f"{TOKEN}-env"


def test_token_file_absolute_path(tmp_path: Path) -> None:
    secret = tmp_path / "elsewhere" / "t"
    secret.parent.mkdir()
    secret.write_text(TOKEN, encoding="utf-8")
    settings = load(tmp_path, studio(token=None, token_file=str(secret)))
    assert settings.studio("kyiv") == StudioSettings("kyiv", "Kyiv studio", "UA", "", TOKEN)


def test_demo_studio_appended_last(tmp_path: Path) -> None:
    settings = load(tmp_path, STUDIO)
    assert [s.id for s in settings.studios] == ["kyiv", "demo"]
    demo = settings.studios[-1]
    assert (demo.name, demo.country, demo.city) == ("Demo studio", "ZZ", "Test pattern")


def test_demo_studio_follows_its_id(tmp_path: Path) -> None:
    settings = load(tmp_path, STUDIO + '[demo]\nstudio_id = "pattern"\n')
    assert [s.id for s in settings.studios] == ["kyiv", "pattern"]


def test_demo_studio_not_added_when_disabled(tmp_path: Path) -> None:
    assert [s.id for s in load(tmp_path, STUDIO + "[demo]\nenabled = false\n").studios] == ["kyiv"]
    environ = {"MERIDIAN_DEMO__ENABLED": "false"}
    assert [s.id for s in load(tmp_path, STUDIO, environ).studios] == ["kyiv"]
    assert load_settings(None, environ).studios == ()


def test_demo_studio_not_added_when_configured(tmp_path: Path) -> None:
    settings = load(tmp_path, STUDIO + '[demo]\nstudio_id = "kyiv"\n')
    assert settings.studios == (StudioSettings("kyiv", "Kyiv studio", "UA", "", TOKEN),)


def test_missing_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match=re.escape(str(path))):
        load_settings(path, {})


def test_directory_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        load_settings(tmp_path, {})


@pytest.mark.parametrize("text", ["[server\nport = 1", "port = = 1", "a = 1\na = 2"])
def test_toml_syntax_error_names_the_file(tmp_path: Path, text: str) -> None:
    message = rejects(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'meridian.toml'}: invalid TOML")


def test_non_utf8_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('city = "Bogot\xe1"'.encode("latin-1"))
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid TOML")):
        load_settings(path, {})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# ---------------------------------------------------------------------------- [geo]


def test_geo_section_and_overrides(tmp_path: Path) -> None:
    text = (
        '[geo]\ntrusted_proxies = ["10.0.0.0/8", "2001:db8::1"]\n'
        'country_headers = ["X-Country"]\nunknown_label = "elsewhere"\n'
    )
    geo = load(tmp_path, text).geo
    assert geo == GeoSettings(("10.0.0.0/8", "2001:db8::1"), ("X-Country",), "", "elsewhere")
    environ = {
        "MERIDIAN_GEO__TRUSTED_PROXIES": "127.0.0.1, 192.168.0.0/16",
        "MERIDIAN_GEO__UNKNOWN_LABEL": "xx-none",
    }
    geo = load(tmp_path, text, environ).geo
    assert geo.trusted_proxies == ("127.0.0.1", "192.168.0.0/16")
    assert (geo.country_headers, geo.unknown_label) == (("X-Country",), "xx-none")


def test_geo_database_is_resolved_against_the_file(tmp_path: Path) -> None:
    from tests.test_geo import write_mmdb

    (tmp_path / "geo").mkdir()
    write_mmdb(tmp_path / "geo" / "tiny.mmdb", {"8.8.8.0/24": "DE"})
    settings = load(tmp_path, '[geo]\ndatabase = "geo/tiny.mmdb"\n')
    assert settings.geo.database == str(tmp_path / "geo" / "tiny.mmdb")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[geo]\ntrusted_proxies = ["10.0.0.0/33"]',
            'geo.trusted_proxies: must be a list of CIDRs or addresses like "10.0.0.0/8"',
        ),
        ('[geo]\ntrusted_proxies = "10.0.0.0/8"', "geo.trusted_proxies: must be a list"),
        ('[geo]\ntrusted_proxies = ["proxy.example"]', "geo.trusted_proxies: must be"),
        ('[geo]\ncountry_headers = ["CF IPCountry"]', "geo.country_headers: must be a list of"),
        ('[geo]\nunknown_label = ""', "geo.unknown_label: must be 1 to 32 letters"),
        ('[geo]\nunknown_label = "de"', "geo.unknown_label: must be 1 to 32 letters"),
        ('[geo]\nunknown_label = "not known"', "geo.unknown_label: must be"),
        ('[geo]\ndatabase = "missing.mmdb"', "geo.database: cannot read "),
        ('[geo]\ndatabase = "meridian.toml"', "is not a MaxMind DB file"),
        ("[geo]\nregion = 1", "geo.region: unknown key; allowed: trusted_proxies,"),
    ],
)
def test_geo_rejections(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in rejects(tmp_path, text)


def test_geo_database_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"geo\.database \(from MERIDIAN_GEO__DATABASE\)"):
        load_settings(None, {"MERIDIAN_GEO__DATABASE": str(tmp_path / "none.mmdb")})
