"""What WHIP and WHEP share over HTTP: offer bodies, 201 answers, session resources.

WHIP (RFC 9725) and WHEP differ only in who sends media and who must authenticate,
so one set of handlers serves both, parameterised by protocol.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from config.settings import Settings, StudioSettings
from relay.errors import InvalidOffer, OfferRejected, StudioOffline, UnsupportedOffer
from relay.negotiation import ice_credentials
from server.admission import draining_refusal, unavailable
from server.problems import Problem
from server.sdpfrag import SdpFragError, parse_sdpfrag
from server.sessions import Protocol_, RtcSession, SessionRegistry, SessionResource, new_session_id
from server.state import ADMISSION, METRICS, SESSIONS, SETTINGS

log = logging.getLogger("meridian.http")

SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
ENDPOINT_METHODS = "POST, OPTIONS"
SESSION_METHODS = "PATCH, DELETE, OPTIONS"


def studio_or_404(request: web.Request) -> StudioSettings:
    studio_id = request.match_info["studio"]
    studio = request.app[SETTINGS].current.studio(studio_id)
    if studio is None:
        raise Problem(
            404, "Not Found", f"there is no studio {studio_id!r}", problem="unknown-studio"
        )
    return studio


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison of a token taken from a header, whatever bytes it holds
    (aiohttp keeps bytes that are not UTF-8 as surrogates: they simply do not match)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode())


def require_bearer(request: web.Request, studio: StudioSettings) -> None:
    """RFC 6750 bearer token, compared in constant time."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(
            401,
            "Unauthorized",
            f"publishing to {studio.id!r} needs its bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="meridian"'},
        )
    if not same_token(token.strip(), studio.token):
        raise Problem(
            401,
            "Unauthorized",
            f"the token is not valid for studio {studio.id!r}",
            headers={"WWW-Authenticate": 'Bearer realm="meridian", error="invalid_token"'},
        )


async def read_body(request: web.Request, content_type: str, accept_header: str) -> str:
    settings: Settings = request.app[SETTINGS].current
    if request.content_type != content_type:
        raise Problem(
            415,
            "Unsupported Media Type",
            f"the body must be {content_type}, not {request.content_type or 'absent'}",
            headers={accept_header: content_type},
        )
    limit = settings.server.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise Problem(413, "Content Too Large", f"the body is larger than {limit} bytes")
    # read(n) returns what has arrived so far: gather until the end of the body.
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await request.content.read(limit + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    body = b"".join(chunks)
    if len(body) > limit:
        raise Problem(413, "Content Too Large", f"the body is larger than {limit} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Problem(400, "Bad Request", "the body is not UTF-8 text") from None
    if not text.strip():
        raise Problem(400, "Bad Request", "the body is empty", problem="empty-body")
    return text


def refusal(exc: OfferRejected, retry_after: int) -> Problem:
    if isinstance(exc, StudioOffline):
        return Problem(
            409,
            "Conflict",
            f"{exc}; try again later",
            problem="studio-offline",
            headers={"Retry-After": str(retry_after)},
        )
    if isinstance(exc, UnsupportedOffer):
        return Problem(422, "Unprocessable Content", str(exc), problem="unsupported-offer")
    if isinstance(exc, InvalidOffer):
        return Problem(400, "Bad Request", str(exc), problem="invalid-offer")
    return Problem(400, "Bad Request", str(exc))


async def options_endpoint(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Accept-Post": SDP, "Allow": ENDPOINT_METHODS})


async def options_session(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={"Accept-Patch": SDPFRAG, "Allow": SESSION_METHODS})


SessionAuth = Callable[[web.Request], None]


def session_handlers(
    protocol: Protocol_, authorize: SessionAuth
) -> tuple[Callable[[web.Request], Awaitable[web.Response]], ...]:
    """PATCH and DELETE on a session URL; `authorize` checks the studio's token for WHIP."""

    def find(request: web.Request) -> SessionResource:
        registry: SessionRegistry = request.app[SESSIONS]
        resource = registry.get(
            protocol, request.match_info["studio"], request.match_info["session"]
        )
        if resource is None:
            raise Problem(
                404,
                "Not Found",
                "there is no such session (it may have ended)",
                problem="unknown-session",
            )
        return resource

    async def delete(request: web.Request) -> web.Response:
        authorize(request)
        resource = find(request)
        resource.session.end("deleted")
        return web.Response(status=200)

    async def patch(request: web.Request) -> web.Response:
        authorize(request)
        resource = find(request)
        if_match = request.headers.get("If-Match")
        if if_match is None:
            raise Problem(
                428, "Precondition Required", "PATCH needs If-Match with the session's ETag"
            )
        if if_match != "*" and if_match != resource.etag:
            raise Problem(
                412, "Precondition Failed", "the ETag does not match the session's current one"
            )
        text = await read_body(request, SDPFRAG, "Accept-Patch")
        try:
            frag = parse_sdpfrag(text)
        except SdpFragError as exc:
            raise Problem(400, "Bad Request", str(exc), problem="invalid-sdpfrag") from None
        restart = (frag.ice_ufrag is not None and frag.ice_ufrag != resource.ice_ufrag) or (
            frag.ice_pwd is not None and frag.ice_pwd != resource.ice_pwd
        )
        if restart or (if_match == "*" and not frag.candidates):
            raise Problem(
                422,
                "Unprocessable Content",
                "ICE restart is not supported; end the session with DELETE and POST a new offer",
                problem="ice-restart-unsupported",
            )
        for mid, candidate in frag.candidates:
            try:
                await resource.session.add_ice_candidate(candidate, mid)
            except InvalidOffer as exc:
                raise Problem(400, "Bad Request", str(exc), problem="invalid-sdpfrag") from None
        return web.Response(status=204)

    return patch, delete


SessionFactory = Callable[[Callable[[object, str], None]], RtcSession]


async def establish(
    request: web.Request, protocol: Protocol_, studio_id: str, offer: str, create: SessionFactory
) -> web.Response:
    """Answer an offer with a new session, registered under an unguessable URL.

    Refused with 503 while the server drains or a cap is reached (server/admission.py),
    and when the server cannot open the session's sockets.
    """
    app = request.app
    admission = app[ADMISSION]
    admission.check(app[SETTINGS].current.limits, app[SESSIONS], protocol, studio_id)
    session_id = new_session_id()

    def ended(_: object, reason: str) -> None:
        admission.forget(session_id)
        if app[SESSIONS].remove(session_id):
            try:
                app[METRICS].session_ended(protocol, studio_id, reason)
            except Exception:  # counting must never stand in the way of ending
                log.exception("could not count an ended session")
            log.info(
                "session ended",
                extra={
                    "protocol": protocol,
                    "studio": studio_id,
                    "session": session_id,
                    "reason": reason,
                },
            )

    session = create(ended)
    with admission.negotiating(protocol, studio_id):
        try:
            answer = await session.answer(offer)
        except OfferRejected as exc:
            session.end("rejected")
            raise refusal(exc, app[SETTINGS].current.relay.offline_retry_after) from None
        except OSError as exc:  # no socket left for ICE (file descriptors, ports)
            session.end("failed")
            log.warning("could not open a session's sockets", extra={"error": str(exc)})
            raise unavailable(
                "the server cannot open another connection now; try again later",
                app[SETTINGS].current.limits.retry_after,
                "no-resources",
            ) from None
        except BaseException:
            session.end("failed")  # never leave a peer connection open behind an error
            raise
    # The server may have begun to drain, or the studio been removed, meanwhile.
    if admission.draining:
        session.end("shutdown")
        raise draining_refusal(app[SETTINGS].current.limits.retry_after)
    if app[SETTINGS].current.studio(studio_id) is None:
        session.end("studio_removed")
        raise Problem(
            404, "Not Found", f"there is no studio {studio_id!r}", problem="unknown-studio"
        )
    resource = SessionResource(session_id, protocol, studio_id, session)
    resource.ice_ufrag, resource.ice_pwd = ice_credentials(offer)
    app[SESSIONS].add(resource)
    admission.registered(resource)
    log.info(
        "session started", extra={"protocol": protocol, "studio": studio_id, "session": session_id}
    )
    return web.Response(
        status=201,
        text=answer,
        content_type=SDP,
        headers={"Location": resource.path, "ETag": resource.etag, "Accept-Patch": SDPFRAG},
    )


def add_routes(
    app: web.Application,
    protocol: Protocol_,
    post: Callable[[web.Request], Awaitable[web.Response]],
    authorize: SessionAuth,
) -> None:
    patch, delete = session_handlers(protocol, authorize)
    endpoint, session = f"/{protocol}/{{studio}}", f"/{protocol}/{{studio}}/{{session}}"
    app.router.add_post(endpoint, post)
    app.router.add_route("OPTIONS", endpoint, options_endpoint)
    app.router.add_patch(session, patch)
    app.router.add_delete(session, delete)
    app.router.add_route("OPTIONS", session, options_session)
