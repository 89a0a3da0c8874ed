"""Start Meridian: `python run.py` on embedded defaults, or `--config meridian.toml`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import uvloop
from aiohttp import web

from config.loader import ConfigError, load_settings
from config.settings import Settings
from server.app import create_app
from server.demo import start_demo_studio
from server.logs import configure_logging

log = logging.getLogger("meridian")


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


def settings_from(args: argparse.Namespace) -> Settings:
    environ = dict(os.environ)
    overrides = {
        "MERIDIAN_SERVER__HOST": args.host,
        "MERIDIAN_SERVER__PORT": None if args.port is None else str(args.port),
        "MERIDIAN_LOG_LEVEL": args.log_level,
        "MERIDIAN_LOG_FORMAT": args.log_format,
        "MERIDIAN_DEMO__ENABLED": "false" if args.no_demo else None,
    }
    environ.update({k: v for k, v in overrides.items() if v is not None})
    return load_settings(args.config, environ)


async def serve(settings: Settings) -> None:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.server.host, settings.server.port)
    await site.start()
    log.info("listening", extra={"url": f"http://{settings.server.host}:{settings.server.port}"})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    demo = start_demo_studio(settings) if settings.demo.enabled else None
    await stop.wait()
    log.info("shutting down")
    if demo is not None:
        demo.cancel()
    await runner.cleanup()


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
    uvloop.run(serve(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
