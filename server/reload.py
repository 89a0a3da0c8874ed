"""Reloading the configuration while live (SIGHUP, `POST /admin/reload`).

The file is read again and checked as at start-up; a file that does not load leaves the
settings in force untouched. Then, without dropping a live session:
- studio tokens, names and viewer-token requirements, limits, the admin token, the
  viewer-token secret, `relay.offline_retry_after`, `relay.connect_timeout`,
  `relay.viewer_send_buffer_bytes`, `server.max_body_bytes` and `log_level` apply to the
  next request (a publishing studio keeps its session when its token is rotated);
- an added studio can publish at once;
- a removed studio's sessions, its publisher's and its viewers', are ended cleanly.
Everything else (listening addresses, CORS, GeoIP, the demo, the cluster, timings of
existing studios) takes effect at the next start; a reload names those keys in its log
line and its answer, never their values.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass, field

from aiohttp import web

from config.settings import Settings
from relay.source import Source
from server.state import SESSIONS, SETTINGS, SOURCES

log = logging.getLogger("meridian.reload")

# Keys (section.key) that a reload applies at once; any other change waits for a restart.
LIVE_KEYS = frozenset(
    {
        "server.max_body_bytes",
        "relay.offline_retry_after",
        "relay.connect_timeout",
        "relay.viewer_send_buffer_bytes",
        "log_level",
    }
)
LIVE_SECTIONS = frozenset({"limits", "admin", "viewer_tokens"})


class NothingToReload(RuntimeError):
    """The server was given its settings in code, not read from a configuration."""


@dataclass
class ReloadResult:
    added: list[str] = field(default_factory=list)  # studio ids
    removed: list[str] = field(default_factory=list)
    tokens_rotated: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)  # keys, never values

    def as_dict(self) -> dict[str, list[str]]:
        return dataclasses.asdict(self)


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """`section.key` (or a top-level key) for every setting that differs, studios aside."""
    changed: list[str] = []
    for item in dataclasses.fields(Settings):
        before, after = getattr(old, item.name), getattr(new, item.name)
        if item.name == "studios" or before == after:
            continue
        if dataclasses.is_dataclass(before):
            changed += [
                f"{item.name}.{key.name}"
                for key in dataclasses.fields(before)
                if getattr(before, key.name) != getattr(after, key.name)
            ]
        else:
            changed.append(item.name)
    return changed


def apply_settings(app: web.Application, new: Settings) -> ReloadResult:
    """Put `new` in force now (no await: every request sees the old or the new, whole)."""
    live = app[SETTINGS]
    old = live.current
    sources = app[SOURCES]
    assert isinstance(sources, dict)  # as create_app made it
    result = ReloadResult()
    for studio in new.studios:
        before = old.studio(studio.id)
        if before is None:
            result.added.append(studio.id)
            sources[studio.id] = Source(
                studio.id,
                keyframe_request_interval=new.relay.keyframe_request_interval,
                silence_timeout=new.relay.studio_silence_timeout,
            )
        elif before.token != studio.token:
            result.tokens_rotated.append(studio.id)
    result.removed = [studio.id for studio in old.studios if new.studio(studio.id) is None]
    result.restart_needed = [
        key
        for key in changed_keys(old, new)
        if key not in LIVE_KEYS and key.partition(".")[0] not in LIVE_SECTIONS
    ]
    live.current = new
    if new.log_level != old.log_level:
        logging.getLogger().setLevel(new.log_level)
    for studio_id in result.removed:
        for resource in app[SESSIONS].all():
            if resource.studio_id == studio_id:
                resource.session.end("studio_removed")
        sources.pop(studio_id).close()
    log.info("configuration reloaded", extra=result.as_dict())
    if result.restart_needed:
        log.warning(
            "some changed settings take effect at the next start",
            extra={"keys": result.restart_needed},
        )
    return result


async def reload_settings(app: web.Application) -> ReloadResult:
    """Read the configuration again and apply it; ConfigError leaves everything as it was."""
    live = app[SETTINGS]
    loader = live.loader
    if loader is None:
        raise NothingToReload("this server was not started from a configuration to reload")
    async with live.reloading:
        new = await asyncio.to_thread(loader, live.current)  # reads files: off the event loop
        return apply_settings(app, new)
