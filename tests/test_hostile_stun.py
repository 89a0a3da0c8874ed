"""ICE checks without PRIORITY (some FFmpeg 8.0 builds send them) get a STUN 400, and the
session they were aimed at goes on.

RFC 8445 requires PRIORITY in every connectivity check; aioice reads it unconditionally, so
such a check would raise inside its UDP callback and close the socket. The test sends one,
properly authenticated (USERNAME, MESSAGE-INTEGRITY with the server's ICE password, and
FINGERPRINT), to the server's candidate from a real session's answer (for a viewer, from
the viewer's own socket: the server's socket for it takes no other address), expects an
error response with code 400 to that very transaction, and then checks that the session
still carries media. A well-formed check from the same socket is answered with a success, so
the 400 is for the missing PRIORITY alone.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from contextlib import AsyncExitStack
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from aioice import stun
from aiortc import RTCPeerConnection

from tests import sdp_samples
from tests.conftest import TOKENS, url
from tests.metrics_probe import scrape
from tests.rtc_peers import close_to, mean_colour, publishing, watching
from tests.test_relay_e2e import wait_live

GREEN = (40, 200, 60)


class StunClient(asyncio.DatagramProtocol):
    """A bare UDP socket that sends STUN requests and collects whatever comes back."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.received.put_nowait(data)

    async def ask(
        self, transport: asyncio.DatagramTransport, request: stun.Message, to: tuple[str, int]
    ) -> stun.Message:
        """Send `request` (up to three times) and return the response to its transaction."""
        for _ in range(3):
            transport.sendto(bytes(request), to)
            try:
                async with asyncio.timeout(1.0):
                    while True:
                        message = stun.parse_message(await self.received.get())
                        if message.transaction_id == request.transaction_id:
                            return message
                        # Anything else is the server's own check toward us: not our answer.
            except TimeoutError:
                continue
        raise AssertionError(f"no STUN response from {to}")


def host_candidate(answer: str) -> tuple[str, int]:
    """An IPv4 UDP candidate of the server's answer (aiortc answers with all of them)."""
    for line in sdp_samples.lines_of(answer):
        if line.startswith("a=candidate:"):
            parts = line.split()
            address, port, transport = parts[4], int(parts[5]), parts[2].lower()
            if transport == "udp" and ipaddress.ip_address(address).version == 4:
                return address, port
    raise AssertionError("the answer has no IPv4 UDP candidate")


def borrow_ice_socket(
    pc: RTCPeerConnection, client: StunClient
) -> tuple[asyncio.DatagramTransport, tuple[str, int]]:
    """A connected peer's own ICE socket, whose datagrams `client` sees too, and the
    server's address it is paired with."""
    ice = pc.getTransceivers()[0].sender.transport.transport
    pair = ice._connection._nominated[1]
    protocol = pair.protocol
    receive = protocol.datagram_received

    def seen_by_both(data: bytes | str, addr: tuple[Any, ...]) -> None:
        if isinstance(data, bytes):
            client.datagram_received(data, addr)
        receive(data, addr)

    protocol.datagram_received = seen_by_both  # type: ignore[method-assign]
    return pair.protocol.transport, pair.remote_addr


def binding_request(
    server_ufrag: str, client_ufrag: str, server_pwd: str, *, priority: bool
) -> stun.Message:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = f"{server_ufrag}:{client_ufrag}"
    if priority:
        request.attributes["PRIORITY"] = 1853824767
    request.attributes["ICE-CONTROLLING"] = random.getrandbits(64)
    request.add_message_integrity(server_pwd.encode("utf8"))
    request.add_fingerprint()
    return request


@pytest.mark.parametrize("protocol", ["whip", "whep"])
async def test_a_check_without_priority_gets_400_and_the_session_goes_on(
    server: TestServer, http: aiohttp.ClientSession, protocol: str
) -> None:
    loop = asyncio.get_running_loop()
    async with AsyncExitStack() as stack:
        studio = await stack.enter_async_context(
            publishing(http, url(server, "/whip/berlin"), TOKENS["berlin"], colour=GREEN)
        )
        await wait_live(http, server, "berlin")
        viewer = await stack.enter_async_context(watching(http, url(server, "/whep/berlin")))
        await viewer.frames(1)
        target = studio.session if protocol == "whip" else viewer.session
        peer = studio.pc if protocol == "whip" else viewer.pc
        assert target is not None
        server_ufrag, server_pwd = sdp_samples.ice_credentials(target.answer)
        client_ufrag, _ = sdp_samples.ice_credentials(peer.localDescription.sdp)
        client = StunClient()
        if protocol == "whip":
            candidate = host_candidate(target.answer)
            transport, _ = await loop.create_datagram_endpoint(
                lambda: client, local_addr=("0.0.0.0", 0)
            )
            stack.callback(transport.close)
        else:
            # The server's socket for a connected viewer takes datagrams from the viewer's
            # address alone (relay/rtc_internals.py MediaPath): send from the viewer's own.
            transport, candidate = borrow_ice_socket(viewer.pc, client)

        refused = await client.ask(
            transport,
            binding_request(server_ufrag, client_ufrag, server_pwd, priority=False),
            candidate,
        )
        assert refused.message_method == stun.Method.BINDING
        assert refused.message_class == stun.Class.ERROR
        code, reason = refused.attributes["ERROR-CODE"]
        assert code == 400, (code, reason)

        # The same check with PRIORITY, from the same socket: answered, so the 400 was for
        # the missing attribute and the server's socket is alive.
        accepted = await client.ask(
            transport,
            binding_request(server_ufrag, client_ufrag, server_pwd, priority=True),
            candidate,
        )
        assert accepted.message_class == stun.Class.RESPONSE
        assert accepted.check_message_integrity(server_pwd.encode("utf8"))

        # The session goes on: media still flows to the viewer, both peers stay connected.
        await asyncio.sleep(1.0)
        frames = await viewer.frames(15, within=10)
        assert close_to(mean_colour(frames[-1]), GREEN), mean_colour(frames[-1])
        assert studio.pc.connectionState == "connected"
        assert viewer.pc.connectionState == "connected"
        samples = await scrape(http, str(server.make_url("")))
        assert samples["meridian_studio_up"][(("studio", "berlin"),)] == 1.0
        assert sum(samples["meridian_viewers"].values()) == 1.0
