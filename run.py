"""Start Meridian: `python run.py` on embedded defaults, or `--config meridian.toml`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from config.loader import ConfigError, load_settings
from config.settings import Settings
from server.api import metrics_app
from server.app import create_app, drain
from server.demo import start_demo_studio
from server.live_settings import SettingsLoader
from server.logs import configure_logging
from server.memory import freeze_startup_objects, reclaim_forever
from server.reload import reload_settings
from server.state import REGISTRY, SESSIONS

log = logging.getLogger("meridian")

# Seconds the HTTP server waits for requests in flight at shutdown (after the drain).
HTTP_SHUTDOWN_TIMEOUT = 1.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run.py",
        description=(
            "Meridian: a live WebRTC relay. Studios publish over WHIP (POST /whip/<studio>, "
            "bearer token), viewers watch over WHEP (POST /whep/<studio>), Prometheus scrapes "
            "/metrics. With no --config it starts on embedded defaults with the demo studio."
        ),
        epilog=(
            "Every setting can also be overridden from the environment as "
            "MERIDIAN_<SECTION>__<KEY>, e.g. MERIDIAN_SERVER__PORT=9000; see meridian.toml."
        ),
    )
    parser.add_argument("--config", type=Path, help="TOML configuration file (see meridian.toml)")
    parser.add_argument("--host", help="address to listen on for HTTP (default 0.0.0.0)")
    parser.add_argument("--port", type=int, help="HTTP port (default 8080)")
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (default INFO)",
    )
    parser.add_argument(
        "--log-format", choices=["text", "json"], help="log line format (default text)"
    )
    parser.add_argument(
        "--no-demo", action="store_true", help="do not publish the demo test pattern"
    )
    parser.add_argument(
        "--check-config", action="store_true", help="validate the configuration and exit"
    )
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace, demo_token: str | None = None) -> Settings:
    environ = dict(os.environ)
    overrides = {
        "MERIDIAN_SERVER__HOST": args.host,
        "MERIDIAN_SERVER__PORT": None if args.port is None else str(args.port),
        "MERIDIAN_LOG_LEVEL": args.log_level,
        "MERIDIAN_LOG_FORMAT": args.log_format,
        "MERIDIAN_DEMO__ENABLED": "false" if args.no_demo else None,
    }
    environ.update({k: v for k, v in overrides.items() if v is not None})
    return load_settings(args.config, environ, demo_token=demo_token)


def settings_loader(args: argparse.Namespace) -> SettingsLoader:
    """Reads the configuration again for a reload, keeping the demo studio's token."""

    def load(current: Settings) -> Settings:
        demo = current.studio(current.demo.studio_id)
        return settings_from(args, demo.token if demo is not None else None)

    return load


async def reload_on_signal(app: web.Application) -> None:
    try:
        await reload_settings(app)
    except ConfigError as exc:
        log.error("reload refused; the settings in force stay", extra={"error": str(exc)})
    except Exception:
        log.exception("reload failed; the settings in force stay")


def allow_many_files() -> None:
    """Every WebRTC session holds UDP sockets: raise the soft open-files limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            log.warning("could not raise the open files limit", extra={"limit": soft})


async def serve(settings: Settings, reload: SettingsLoader | None = None) -> None:
    app = create_app(settings, reload=reload)
    runners = [
        web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT
        )
    ]
    server = settings.server
    listeners = [(server.host, server.port)]
    if server.metrics_port:  # /metrics on its own address, not on the public port
        runners.append(
            web.AppRunner(
                metrics_app(app[REGISTRY]),
                handle_signals=False,
                access_log=None,
                shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
            )
        )
        listeners.append((server.metrics_host or server.host, server.metrics_port))
    for runner, (host, port) in zip(runners, listeners, strict=True):
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        log.info("listening", extra={"url": f"http://{host}:{port}"})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    reloads: set[asyncio.Task[None]] = set()

    def on_sighup() -> None:
        task = asyncio.ensure_future(reload_on_signal(app))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)
    freeze_startup_objects()
    sessions = app[SESSIONS]
    reclaimer = asyncio.ensure_future(reclaim_forever(lambda: sessions.removed_total))
    demo = start_demo_studio(settings) if settings.demo.enabled else None
    await stop.wait()
    log.info("shutting down: no new sessions, ending every session")
    reclaimer.cancel()
    if demo is not None:
        demo.cancel()
    await drain(app)
    for runner in reversed(runners):
        await runner.cleanup()
    log.info("stopped")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from(args)
    except ConfigError as exc:
        print(f"meridian: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"configuration OK: {len(settings.studios)} studios")
        return 0
    configure_logging(settings.log_level, settings.log_format)
    allow_many_files()
    uvloop.run(serve(settings, settings_loader(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
