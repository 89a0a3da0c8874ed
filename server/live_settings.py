"""The settings in force, in one small mutable holder.

aiohttp freezes an application's state once it has started (assigning a key then is an
error), so a reload (SIGHUP, `POST /admin/reload`) replaces `current` inside this
holder instead: every reader asks `app[SETTINGS].current` each time it needs a value.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from config.settings import Settings

# Reads the configuration again; given the settings in force (to keep the demo's token).
SettingsLoader = Callable[[Settings], Settings]


class LiveSettings:
    def __init__(self, settings: Settings, loader: SettingsLoader | None = None) -> None:
        self.current = settings
        # None: nothing to reload from (an app built from settings in code, as tests do).
        self.loader = loader
        self.reloading = asyncio.Lock()  # one reload at a time
