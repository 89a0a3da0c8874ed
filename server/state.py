"""Typed application keys: all server state lives on the app, none in module globals."""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry

from metrics.geo import GeoResolver
from metrics.relay_metrics import RelayMetrics
from relay.rtc_internals import SharedCertificate
from relay.source import Source
from server.admission import Admission
from server.live_settings import LiveSettings
from server.sessions import SessionRegistry

# The settings in force: `app[SETTINGS].current` (a reload replaces it).
SETTINGS = web.AppKey("settings", LiveSettings)
# One source per configured studio: a dict, to which a reload adds and removes studios.
SOURCES = web.AppKey("sources", Mapping[str, Source])
SESSIONS = web.AppKey("sessions", SessionRegistry)
ADMISSION = web.AppKey("admission", Admission)
REGISTRY = web.AppKey("registry", CollectorRegistry)
METRICS = web.AppKey("metrics", RelayMetrics)
GEO = web.AppKey("geo", GeoResolver)
CERTIFICATE = web.AppKey("certificate", SharedCertificate)
