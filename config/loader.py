"""Build `Settings` from an optional TOML file plus `MERIDIAN_*` environment overrides.

Every rejected value raises `ConfigError` with a message that starts with the key at
fault (`server.port`, `studios[2].country`, ...; studios are counted from 0), so a
typo is fixed from the first line of the log rather than found at the first publish.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
import secrets
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, get_type_hints

import maxminddb

from config.settings import (
    AdminSettings,
    ClusterSettings,
    DemoSettings,
    GeoSettings,
    LimitSettings,
    RelaySettings,
    ServerSettings,
    Settings,
    StudioSettings,
    ViewerTokenSettings,
)

__all__ = ["COUNTRY_CODES", "ConfigError", "load_settings"]


class ConfigError(ValueError):
    """The configuration cannot be used; the message names the file or key at fault."""


ENV_PREFIX = "MERIDIAN_"
_SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "relay": RelaySettings,
    "demo": DemoSettings,
    "geo": GeoSettings,
    "cluster": ClusterSettings,
    "limits": LimitSettings,
    "admin": AdminSettings,
    "viewer_tokens": ViewerTokenSettings,
}
_TOP_SCALARS = ("log_level", "log_format")
_STUDIO_KEYS = (
    *("id", "name", "country", "city", "token", "token_env", "token_file"),
    "require_viewer_token",
)
_TOKEN_SOURCES = ("token", "token_env", "token_file")
_SECRET_SOURCES = ("secret", "secret_env", "secret_file")
_MIN_TOKEN_LEN = 16
_MIN_SECRET_LEN = 32  # the HMAC-SHA256 key of viewer tokens

_ID = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_ORIGIN = re.compile(r"\*|https?://[^/\s]+")  # what a browser sends: no path, no trailing "/"
_BEARER = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 b64token, so any token can be sent
# ISO 3166-1 alpha-2 (plus "XK", Kosovo, as GeoIP databases and registries use it);
# listed rather than shape-checked because "UK" for "GB" is the classic mistake.
_COUNTRY_LIST = (
    "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN"
    " BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ"
    " DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL"
    " GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM"
    " JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME"
    " MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP"
    " NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD"
    " SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO"
    " TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS XK YE YT ZA ZM ZW"
)
COUNTRY_CODES = frozenset(_COUNTRY_LIST.split())
# Studios may also use the user-assigned "ZZ" (unknown), as the demo studio does.
_STUDIO_COUNTRIES = COUNTRY_CODES | {"ZZ"}
_PUBLIC_URL = re.compile(r"https?://[^/\s]+")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]+")
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,32}")


class _Rule(NamedTuple):
    must_be: str  # completes "<key>: must be ..." for both type and range failures
    ok: Callable[[Any], object]
    fix: Callable[[Any], Any] = lambda value: value


def _positive(value: float) -> bool:
    return value > 0


def _networks(values: tuple[str, ...]) -> bool:
    for value in values:
        ipaddress.ip_network(value, strict=False)  # ValueError: rejected below
    return True


def _unknown_label(value: str) -> bool:
    return bool(_LABEL.fullmatch(value)) and value.upper() not in _STUDIO_COUNTRIES


def _port_or_0(value: int) -> bool:
    return 0 <= value <= 65535


def _even_positive(value: int) -> bool:

    return value > 0 and value % 2 == 0  # 4:2:0 video cannot have odd dimensions


_RULES: dict[str, _Rule] = {
    "server.host": _Rule("a non-empty host name or address", bool),
    "server.port": _Rule("an integer 1..65535", lambda v: 1 <= v <= 65535),
    "server.max_body_bytes": _Rule("a positive integer", _positive),
    "server.metrics_port": _Rule("an integer 0..65535 (0: /metrics on server.port)", _port_or_0),
    "server.cors_origins": _Rule(
        'a list of origins like "https://example.com" or "*"',
        lambda v: all(_ORIGIN.fullmatch(o) for o in v),
    ),
    "relay.offline_retry_after": _Rule("a positive integer", _positive),
    "relay.connect_timeout": _Rule("a positive number", _positive),
    "relay.studio_silence_timeout": _Rule("a positive number", _positive),
    "relay.keyframe_request_interval": _Rule("a number >= 0", lambda v: v >= 0),
    "relay.viewer_send_buffer_bytes": _Rule("a positive integer", _positive),
    "demo.studio_id": _Rule(f"an id matching ^{_ID.pattern}$", _ID.fullmatch),
    "demo.width": _Rule("a positive even integer", _even_positive),
    "demo.height": _Rule("a positive even integer", _even_positive),
    "demo.fps": _Rule("a positive integer", _positive),
    "demo.loop_seconds": _Rule("a positive number", _positive),
    "geo.trusted_proxies": _Rule(
        'a list of CIDRs or addresses like "10.0.0.0/8" or "2001:db8::1"', _networks
    ),
    "geo.country_headers": _Rule(
        'a list of header names like "CF-IPCountry"',
        lambda v: all(_HEADER_NAME.fullmatch(h) for h in v),
    ),
    "geo.unknown_label": _Rule(
        "1 to 32 letters, digits, - or _, and not an ISO country code", _unknown_label
    ),
    "cluster.role": _Rule(
        "one of single, origin, edge, both",
        lambda v: v in ("single", "origin", "edge", "both"),
        str.lower,
    ),
    "cluster.node_id": _Rule(
        f"empty or an id matching ^{_ID.pattern}$", lambda v: not v or _ID.fullmatch(v)
    ),
    "cluster.public_url": _Rule(
        'empty or a base URL like "https://edge1.example.com:8443" (no path)',
        lambda v: not v or _PUBLIC_URL.fullmatch(v),
        lambda v: v.rstrip("/"),
    ),
    "cluster.region": _Rule("1 to 32 letters, digits, - or _", _LABEL.fullmatch),
    "cluster.countries": _Rule(
        'a list of ISO 3166-1 alpha-2 codes like "DE"',
        lambda v: all(c in COUNTRY_CODES for c in v),
        lambda v: tuple(c.upper() for c in v),
    ),
    "cluster.capacity": _Rule("a positive integer", _positive),
    "cluster.redis_url": _Rule(
        "a redis://, rediss:// or unix:// URL",
        lambda v: v.startswith(("redis://", "rediss://", "unix://")),
    ),
    "cluster.upstream": _Rule(
        "one of origin, region", lambda v: v in ("origin", "region"), str.lower
    ),
    "cluster.max_edge_pulls": _Rule("an integer >= 0 (0: no bound)", lambda v: v >= 0),
    "cluster.heartbeat_interval": _Rule("a positive number", _positive),
    "cluster.node_ttl": _Rule("a positive number", _positive),
    "cluster.pull_grace": _Rule("a number >= 0", lambda v: v >= 0),
    "limits.rate_per_second": _Rule("a number >= 0 (0: no rate limit)", lambda v: v >= 0),
    "limits.rate_burst": _Rule("a positive integer", _positive),
    "limits.rate_clients": _Rule("a positive integer", _positive),
    "limits.max_viewers": _Rule("an integer >= 0 (0: no cap)", lambda v: v >= 0),
    "limits.max_viewers_per_studio": _Rule("an integer >= 0 (0: no cap)", lambda v: v >= 0),
    "limits.max_pending_sessions": _Rule("an integer >= 0 (0: no cap)", lambda v: v >= 0),
    "limits.retry_after": _Rule("a positive integer", _positive),
    "log_level": _Rule(
        "one of DEBUG, INFO, WARNING, ERROR",
        lambda v: v in ("DEBUG", "INFO", "WARNING", "ERROR"),
        str.upper,
    ),
    "log_format": _Rule("one of text, json", lambda v: v in ("text", "json"), str.lower),
    "studios.id": _Rule(f"an id matching ^{_ID.pattern}$", _ID.fullmatch),
    "studios.name": _Rule("a non-empty string", lambda v: bool(v.strip())),
    "studios.country": _Rule(
        'an ISO 3166-1 alpha-2 code like "DE"', lambda v: v in _STUDIO_COUNTRIES, str.upper
    ),
}


# Parsers take a TOML value (strictly typed) or, when `text`, an environment string.
def _int(value: Any, text: bool) -> int:
    if text:
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError


def _float(value: Any, text: bool) -> float:
    if not text and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise TypeError
    number = float(value)
    if not math.isfinite(number):
        raise ValueError
    return number


_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _bool(value: Any, text: bool) -> bool:
    if text:
        value = _BOOLS.get(value.strip().lower())
    if isinstance(value, bool):
        return value
    raise ValueError


def _str(value: Any, text: bool) -> str:
    if isinstance(value, str):
        return value
    raise TypeError


def _strs(value: Any, text: bool) -> tuple[str, ...]:
    if text:
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise TypeError


_PARSERS: dict[object, tuple[str, Callable[[Any, bool], Any]]] = {
    int: ("an integer", _int),
    float: ("a number", _float),
    bool: ("true or false", _bool),
    str: ("a string", _str),
    tuple[str, ...]: ("a list of strings", _strs),
}


def _value(where: str, rule_key: str, kind: object, value: Any, text: bool) -> Any:
    type_name, parse = _PARSERS[kind]
    rule = _RULES.get(rule_key)
    try:
        parsed = parse(value, text)
        if rule is None:
            return parsed
        parsed = rule.fix(parsed)
        if rule.ok(parsed):
            return parsed
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"{where}: must be {rule.must_be if rule else type_name}, got {value!r}")


def _fields(
    section: str,
    kinds: Mapping[str, object],
    table: Mapping[str, Any],
    env: Mapping[str, tuple[str, str]],
) -> dict[str, Any]:
    """Checked values of one section, environment winning over the file."""
    given: list[tuple[str, Any, str | None]] = [
        (name, value, None) for name, value in table.items()
    ]
    given += [(name, text, var) for name, (var, text) in env.items()]
    out: dict[str, Any] = {}
    for name, value, var in given:
        key = f"{section}.{name}" if section else name
        where = f"{key} (from {var})" if var else key
        if name not in kinds:
            raise ConfigError(f"{where}: unknown key; allowed: {', '.join(kinds)}")
        out[name] = _value(where, key, kinds[name], value, var is not None)
    return out


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, tuple[str, str]]]:
    """`{section: {key: (variable, text)}}`, top-level keys under section ""."""
    found: dict[str, dict[str, tuple[str, str]]] = {}
    for var, text in environ.items():
        if not var.startswith(ENV_PREFIX):
            continue
        section, sep, name = var[len(ENV_PREFIX) :].lower().partition("__")
        if not sep:
            # Only the known top-level names: MERIDIAN_TOKEN_* and the like hold tokens.
            section, name = "", section
            if name not in _TOP_SCALARS:
                continue
        elif section not in _SECTIONS:
            raise ConfigError(
                f"{var}: unknown section {section!r}; allowed: {', '.join(_SECTIONS)}"
            )
        found.setdefault(section, {})[name] = (var, text)
    return found


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _table(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{name}: must be a table ([{name}])")
    return table


def _token(
    at: str,
    table: Mapping[str, Any],
    environ: Mapping[str, str],
    base: Path,
    *,
    sources: tuple[str, str, str] = _TOKEN_SOURCES,  # the value itself, its variable, its file
    min_len: int = _MIN_TOKEN_LEN,
) -> str:
    given = [key for key in sources if key in table]
    if len(given) != 1:
        got = ", ".join(given) or "none"
        raise ConfigError(f"{at}: needs exactly one of {', '.join(sources)}; got {got}")
    source = given[0]
    ref = table[source]
    where = f"{at}.{source}"
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"{where}: must be a non-empty string, got {ref!r}")
    if source == sources[1]:
        if ref not in environ:
            raise ConfigError(f"{where}: environment variable {ref} is not set")
        token, where = environ[ref].strip(), f"{where} ({ref})"
    elif source == sources[2]:
        file = base / Path(ref).expanduser()
        try:
            token = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(f"{where}: cannot read {file}: {reason}") from None
        where = f"{where} ({file})"
    else:
        token = ref
    # Never echo the token: these messages end up in logs.
    if len(token) < min_len:
        raise ConfigError(f"{where}: must be at least {min_len} characters, got {len(token)}")
    if not _BEARER.fullmatch(token):
        raise ConfigError(f"{where}: may only hold letters, digits and -._~+/ (then = padding)")
    return token


def _studios(raw: Any, environ: Mapping[str, str], base: Path) -> list[StudioSettings]:
    if not isinstance(raw, list) or not all(isinstance(table, dict) for table in raw):
        raise ConfigError("studios: must be an array of tables ([[studios]])")
    studios: list[StudioSettings] = []
    for index, table in enumerate(raw):
        at = f"studios[{index}]"
        for key in table:
            if key not in _STUDIO_KEYS:
                raise ConfigError(f"{at}.{key}: unknown key; allowed: {', '.join(_STUDIO_KEYS)}")
        for key in ("id", "name", "country"):
            if key not in table:
                raise ConfigError(f"{at}.{key}: required")
        text = {
            key: _value(f"{at}.{key}", f"studios.{key}", str, table[key], False)
            for key in ("id", "name", "country", "city")
            if key in table
        }
        for earlier, studio in enumerate(studios):
            if studio.id == text["id"]:
                raise ConfigError(f"{at}.id: {text['id']!r} is already used by studios[{earlier}]")
        private = "require_viewer_token" in table and _value(
            f"{at}.require_viewer_token", "", bool, table["require_viewer_token"], False
        )
        studios.append(
            StudioSettings(
                **text, token=_token(at, table, environ, base), require_viewer_token=private
            )
        )
    return studios


def _admin(admin: AdminSettings, environ: Mapping[str, str], base: Path) -> AdminSettings:
    """Resolve the admin token; none configured leaves the admin API off."""
    given = {key: getattr(admin, key) for key in _TOKEN_SOURCES if getattr(admin, key)}
    if not given:
        return admin
    return dataclasses.replace(admin, token=_token("admin", given, environ, base))


def _viewer_tokens(
    viewer_tokens: ViewerTokenSettings,
    studios: list[StudioSettings],
    environ: Mapping[str, str],
    base: Path,
) -> ViewerTokenSettings:
    """Resolve the viewer-token secret; studios that require viewer tokens need one."""
    given = {
        key: getattr(viewer_tokens, key) for key in _SECRET_SOURCES if getattr(viewer_tokens, key)
    }
    if given:
        secret = _token(
            "viewer_tokens", given, environ, base, sources=_SECRET_SOURCES, min_len=_MIN_SECRET_LEN
        )
        return dataclasses.replace(viewer_tokens, secret=secret)
    for index, studio in enumerate(studios):
        if studio.require_viewer_token:
            raise ConfigError(
                f"studios[{index}].require_viewer_token: needs a viewer token secret "
                f"(viewer_tokens.{', viewer_tokens.'.join(_SECRET_SOURCES)})"
            )
    return viewer_tokens


def _geo_database(geo: GeoSettings, from_env: bool, base: Path) -> GeoSettings:
    """Resolve `geo.database` against the file's directory and check it opens."""
    if not geo.database:
        return geo
    where = "geo.database (from MERIDIAN_GEO__DATABASE)" if from_env else "geo.database"
    file = base / Path(geo.database).expanduser()
    try:
        maxminddb.open_database(str(file)).close()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {file}: {exc.strerror or exc}") from None
    except (maxminddb.InvalidDatabaseError, ValueError) as exc:
        raise ConfigError(f"{where}: {file} is not a MaxMind DB file ({exc})") from None
    return dataclasses.replace(geo, database=str(file))


def _cluster(cluster: ClusterSettings, environ: Mapping[str, str], base: Path) -> ClusterSettings:
    """Resolve the cluster token (a clustered node needs one) and check the timings."""
    if cluster.node_ttl < 2 * cluster.heartbeat_interval:
        raise ConfigError(
            f"cluster.node_ttl: must be at least twice cluster.heartbeat_interval "
            f"({cluster.heartbeat_interval}), got {cluster.node_ttl}"
        )
    given = {key: getattr(cluster, key) for key in _TOKEN_SOURCES if getattr(cluster, key)}
    if cluster.role == "single" and not given:
        return cluster
    return dataclasses.replace(cluster, token=_token("cluster", given, environ, base))


def load_settings(
    path: Path | None, environ: Mapping[str, str], *, demo_token: str | None = None
) -> Settings:
    """Settings from `path` (defaults only when None), overridden by `environ`.

    Relative `token_file` and `geo.database` paths are resolved against the file's
    directory (the working directory when there is no file).  When the
    demo is enabled and no studio has its id, a demo studio with a fresh random token
    is appended: the server publishes the test pattern to itself with that token
    (`demo_token` instead, so that a reload keeps the token the demo publishes with).
    """
    raw = _read_toml(path) if path is not None else {}
    allowed = (*_SECTIONS, "studios", *_TOP_SCALARS)
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{key}: unknown key; allowed: {', '.join(allowed)}")
    env = _env_overrides(environ)
    sections = {
        name: cls(**_fields(name, get_type_hints(cls), _table(raw, name), env.get(name, {})))
        for name, cls in _SECTIONS.items()
    }
    top_kinds = {key: get_type_hints(Settings)[key] for key in _TOP_SCALARS}
    top = {key: raw[key] for key in _TOP_SCALARS if key in raw}
    scalars = _fields("", top_kinds, top, env.get("", {}))

    base = path.parent if path is not None else Path.cwd()
    from_env = "database" in env.get("geo", {})
    sections["geo"] = _geo_database(sections["geo"], from_env, base)
    sections["cluster"] = _cluster(sections["cluster"], environ, base)
    studios = _studios(raw.get("studios", []), environ, base)
    sections["admin"] = _admin(sections["admin"], environ, base)
    sections["viewer_tokens"] = _viewer_tokens(sections["viewer_tokens"], studios, environ, base)
    server: ServerSettings = sections["server"]
    if server.metrics_port == server.port:
        raise ConfigError(
            f"server.metrics_port: must differ from server.port ({server.port}), "
            "or be 0 to serve /metrics on server.port"
        )
    demo: DemoSettings = sections["demo"]
    if demo.enabled and not any(studio.id == demo.studio_id for studio in studios):
        studios.append(
            StudioSettings(
                id=demo.studio_id,
                name="Demo studio",
                country="ZZ",
                city="Test pattern",
                token=demo_token or secrets.token_urlsafe(32),
            )
        )
    return Settings(**sections, **scalars, studios=tuple(studios))
