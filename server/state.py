"""Typed application keys: all server state lives on the app, none in module globals."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry

from config.settings import Settings
from metrics.geo import GeoResolver
from metrics.relay_metrics import RelayMetrics
from relay.rtc_internals import SharedCertificate
from relay.source import Source
from server.sessions import SessionRegistry

SETTINGS = web.AppKey("settings", Settings)
SOURCES = web.AppKey("sources", Mapping[str, Source])
SESSIONS = web.AppKey("sessions", SessionRegistry)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", RelayMetrics)
GEO = web.AppKey("geo", GeoResolver)
CERTIFICATE = web.AppKey("certificate", SharedCertificate)
