"""Requests written as text, sent to Meridian over a raw socket (shared by the HTTP fuzz
harness and the tests that replay its corpus).

An input is one request:

    POST /whip/berlin
    Content-Type: application/sdp
    Authorization: Bearer {token}

    v=0 ...

(first line: method and path; then headers up to an empty line; then the body). `{token}`,
`{admin}`, `{session}` and `{etag}` stand for the studio's token, the admin token, and the
id and ETag of a live WHIP session kept for them, so that inputs reach PATCH and DELETE.
Host, Connection and Content-Length are the client's (framing is not what is fuzzed);
every other byte goes out as written, so a header may carry bytes that are not UTF-8.
Bodies go through `loopback_only`: no address but this machine's reaches an ICE agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from dataclasses import dataclass

from aiohttp import web

from fuzz.common import ADMIN_TOKEN, STUDIO_TOKEN, loopback_only
from server.state import SESSIONS
from tests.sdp_samples import offer

FRAMING = {b"host", b"connection", b"content-length", b"transfer-encoding", b"expect"}
ANSWER_WITHIN = 10.0


@dataclass
class Request:
    method: bytes
    path: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


def parse_input(data: bytes) -> Request:
    head, _, body = data.replace(b"\r\n", b"\n").partition(b"\n\n")
    first, *lines = head.split(b"\n")
    method, _, path = first.strip().partition(b" ")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if colon and name.strip():
            headers.append((name.strip(), value.strip()))
    return Request(method or b"GET", path.strip() or b"/", headers, body)


@dataclass
class Answer:
    status: int  # 0: the server closed the connection without an answer
    headers: dict[bytes, bytes]
    request: bytes


class RawClient:
    """Sends inputs to a Meridian app listening on 127.0.0.1:`port`."""

    def __init__(self, app: web.Application, port: int) -> None:
        self.app = app
        self.port = port
        self.session = b""
        self.etag = b""

    def fill(self, value: bytes) -> bytes:
        return (
            value.replace(b"{token}", STUDIO_TOKEN.encode())
            .replace(b"{admin}", ADMIN_TOKEN.encode())
            .replace(b"{session}", self.session)
            .replace(b"{etag}", self.etag)
        )

    def render(self, request: Request) -> bytes:
        method = request.method.replace(b"\r", b"").replace(b" ", b"")
        path = self.fill(request.path).replace(b"\r", b"").replace(b" ", b"%20")
        body = request.body
        with contextlib.suppress(UnicodeDecodeError):  # refused before parsing (400)
            body = loopback_only(body.decode("utf-8")).encode("utf-8")
        lines = [method + b" " + path + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
        for name, value in request.headers:
            if name.lower() not in FRAMING:
                value = self.fill(value).replace(b"\r", b"")
                lines.append(name.replace(b"\r", b"") + b": " + value)
        lines.append(b"Content-Length: " + str(len(body)).encode())
        return b"\r\n".join(lines) + b"\r\n\r\n" + body

    async def exchange(self, raw: bytes) -> Answer:
        """Send one request; the status and headers of the answer."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        # Reset on close: no TIME_WAIT, so a long run does not run out of local ports.
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        try:
            writer.write(raw)
            async with asyncio.timeout(ANSWER_WITHIN):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return Answer(0, {}, raw)
        except TimeoutError:
            raise AssertionError(f"no answer within {ANSWER_WITHIN} s to {raw[:2000]!r}") from None
        finally:
            writer.close()
        status_line, *header_lines = head.split(b"\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        return Answer(int(status_line.split(b" ")[1]), headers, raw)

    async def ensure_session(self) -> None:
        """Keep one WHIP session for {session} and {etag} (an input may have ended it)."""
        registry = self.app[SESSIONS]
        if self.session and registry.get("whip", "berlin", self.session.decode()) is not None:
            return
        request = Request(
            b"POST",
            b"/whip/berlin",
            [(b"Content-Type", b"application/sdp"), (b"Authorization", b"Bearer {token}")],
            offer("sendonly").encode(),
        )
        answer = await self.exchange(self.render(request))
        if answer.status != 201:
            raise RuntimeError(f"could not open the WHIP session for PATCH: {answer.status}")
        self.session = answer.headers[b"location"].rsplit(b"/", 1)[1]
        self.etag = answer.headers[b"etag"]

    async def send(self, data: bytes) -> Answer:
        """Send one input; a session it created is ended again at once."""
        await self.ensure_session()
        answer = await self.exchange(self.render(parse_input(data)))
        location = answer.headers.get(b"location", b"")
        if answer.status == 201 and location.count(b"/") == 3:
            headers = [(b"Authorization", b"Bearer {token}")]
            await self.exchange(self.render(Request(b"DELETE", location, headers, b"")))
        return answer
