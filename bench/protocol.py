"""How the benchmark's load processes talk to the parent: lines on stdin and stdout.

The parent writes one command per line (`snapshot <id>`, `stop`); the child answers
with one JSON object per line on stdout, each with an `event` key. End of input
means the parent is gone: the child stops too, so no load process outlives a run.
Nothing else may be printed on stdout (logs go to stderr).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def commands(deadline: float, abort: asyncio.Event | None = None) -> AsyncIterator[list[str]]:
    """The parent's commands, split into words, until `stop`, end of input or `deadline`.

    `deadline` is on the event loop's clock: the child ends by itself then, whatever
    the parent does. `abort` set (e.g. the peer connection failed) ends it too.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    aborted = asyncio.ensure_future((abort or asyncio.Event()).wait())
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0 or aborted.done():
                return
            reading = asyncio.ensure_future(reader.readline())
            done, _ = await asyncio.wait(
                {reading, aborted}, timeout=left, return_when=asyncio.FIRST_COMPLETED
            )
            if reading not in done:
                reading.cancel()
                return
            line = reading.result()
            words = line.decode().split()
            if not line or words[:1] == ["stop"]:
                return
            if words:
                yield words
    finally:
        aborted.cancel()
