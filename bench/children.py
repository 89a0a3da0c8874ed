"""The benchmark's child processes: started, talked to, and always ended.

Every child runs in a session of its own (a Ctrl-C at the terminal reaches only
the parent, which then ends them in order) and with a parent-death signal, so that
even a parent killed outright takes its children with it. They are ended by their
own process ids, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

_PR_SET_PDEATHSIG = 1
# Loaded here, not after fork: a child of a threaded parent should only make syscalls.
_LIBC = ctypes.CDLL(None, use_errno=True)


def _child_setup(cpus: frozenset[int] | None) -> Callable[[], None]:
    """What runs in the child between fork and exec: die with the parent; pin it."""

    def setup() -> None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if cpus:
            os.sched_setaffinity(0, cpus)

    return setup


class ChildFailed(RuntimeError):
    pass


class Child:
    """A child process; with `json_stdout`, one whose stdout speaks bench.protocol."""

    def __init__(
        self, name: str, process: asyncio.subprocess.Process, log_path: Path, log: IO[bytes]
    ) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self._log = log
        self._messages: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self.last_error: str | None = None  # the latest `error` message it wrote
        if process.stdout is not None:
            self._reader = asyncio.ensure_future(self._read_stdout(process.stdout))

    @classmethod
    async def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        cwd: Path,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        json_stdout: bool = True,
        cpus: frozenset[int] | None = None,
    ) -> Child:
        log_path = log_dir / f"{name}.log"
        log = log_path.open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=None if env is None else dict(env),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE if json_stdout else log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_child_setup(cpus),
            )
        except BaseException:
            log.close()
            raise
        return cls(name, process, log_path, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    async def _read_stdout(self, stdout: asyncio.StreamReader) -> None:
        try:
            while line := await stdout.readline():
                try:
                    message = json.loads(line)
                except ValueError:
                    self._log.write(b"[stdout] " + line)
                    continue
                if isinstance(message, dict):
                    if message.get("event") == "error":
                        self.last_error = str(message.get("message", message))
                    self._messages.put_nowait(message)
        finally:
            self._messages.put_nowait(None)

    def log_tail(self, lines: int = 15) -> str:
        self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def _failure(self, what: str) -> ChildFailed:
        tail = self.log_tail()
        status = "running" if self.running else f"exited with {self.process.returncode}"
        if self.last_error is not None:
            what += f" (it said: {self.last_error})"
        return ChildFailed(
            f"{self.name} ({status}): {what}" + (f"\n--- {self.log_path}:\n{tail}" if tail else "")
        )

    async def send(self, command: str) -> None:
        stdin = self.process.stdin
        if stdin is None or stdin.is_closing():
            raise self._failure(f"cannot send {command!r}: its input is closed")
        stdin.write(command.encode() + b"\n")
        try:
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise self._failure(f"cannot send {command!r}") from exc

    async def expect(
        self, event: str, within: float, match: Mapping[str, object] | None = None
    ) -> dict[str, Any]:
        """The next message with this event (and fields), within `within` seconds.

        An `error` message from the child, its exit or the timeout raise ChildFailed.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise self._failure(f"no {event!r} within {within:.0f} s")
            try:
                message = await asyncio.wait_for(self._messages.get(), left)
            except TimeoutError:
                raise self._failure(f"no {event!r} within {within:.0f} s") from None
            if message is None:
                self._messages.put_nowait(None)  # stays at end of stream
                raise self._failure(f"ended before {event!r}")
            if message.get("event") == "error":
                raise self._failure(str(message.get("message", message)))
            if message.get("event") == event and all(
                message.get(k) == v for k, v in (match or {}).items()
            ):
                return message

    async def stop(self, grace: float, command: str | None = "stop") -> None:
        """Ask it to end (`command`, or SIGTERM), then SIGTERM, then SIGKILL; reap it."""
        try:
            if self.running:
                if command is not None and self.process.stdin is not None:
                    with contextlib.suppress(ChildFailed):
                        await self.send(command)
                else:
                    self._signal(signal.SIGTERM)
                if not await self._wait(grace):
                    self._signal(signal.SIGTERM)
                    if not await self._wait(3.0):
                        self._signal(signal.SIGKILL)
                        await self._wait(5.0)
        finally:
            if self.process.stdin is not None:
                self.process.stdin.close()
            if self._reader is not None:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(self._reader), 2.0)
                self._reader.cancel()
            self._log.close()

    async def wait_exit(self, within: float) -> bool:
        """Whether it ended by itself within `within` seconds."""
        return await self._wait(within)

    def _signal(self, signum: int) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    async def _wait(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.process.wait(), seconds)
        except TimeoutError:
            return False
        return True
