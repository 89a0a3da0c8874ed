"""The cluster in the HTTP layer: redirects, edge pulls, absolute session URLs, /api/cluster.

`install(app, settings)` (from the app factory, for any role but `single`) adds one
middleware that sits just in front of the WHIP and WHEP handlers:

- `POST /whep/{studio}` from a viewer: `307 Temporary Redirect` to the edge that should
  serve it (cluster/routing.py) when that is another node; the redirect carries `hop=N`
  so a viewer is moved at most `MAX_HOPS` times and never bounces between two nodes with
  different views of the loads. Served here: the studio is pulled first if this node does
  not have it (the request waits for the feed, bounded).
- `POST /whep/{studio}` with the cluster token: another node pulling the feed. Served as
  a downstream node, not a viewer (`pulling_node()` tells server/whep.py), or redirected
  to a node that has the feed when this one serves `max_edge_pulls` already (a tree).
- `POST /whip/{studio}` on an edge: `307` to the origin that holds the studio (or the
  least loaded origin); studios publish to origins.
- Every `201` gets an absolute `Location` on this node's public URL: the session URL
  must lead to the node that owns the session, whatever URL the client started from.

Browsers and HTTP clients drop `Authorization` when a redirect leads to another origin,
so a viewer token (server/viewer_tokens.py) would not reach the edge. A viewer moved with
a bearer token carries it in the redirect as `access_token` (RFC 6750, section 2.3), and
a node takes `access_token` as that viewer's `Authorization: Bearer` when none came.
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator

import orjson
from aiohttp import web
from multidict import CIMultiDict, MultiDict
from yarl import URL

from cluster import routing
from cluster.node import PULL_WAIT_SECONDS, ClusterNode
from cluster.pulls import NODE_HEADER
from config.settings import Settings
from server.problems import Handler, Problem
from server.state import CERTIFICATE, GEO, SOURCES

CLUSTER = web.AppKey("cluster", ClusterNode)
PULL_KEY = web.RequestKey("meridian.cluster.pull", str)  # the node id pulling the feed
HOP_PARAMETER = "hop"
TOKEN_PARAMETER = "access_token"
MAX_HOPS = 2


def pulling_node(request: web.Request) -> str | None:
    """The node id when this WHEP request is another node's pull (not a viewer)."""
    return request.get(PULL_KEY)


def install(app: web.Application, settings: Settings) -> None:
    """Make `app` a node of the cluster `settings.cluster` describes."""
    app[CLUSTER] = ClusterNode(
        settings.cluster,
        settings.server,
        app[SOURCES],
        app[CERTIFICATE],
        settings.relay.connect_timeout,
    )
    app.middlewares.append(cluster_middleware)
    app.cleanup_ctx.append(run_node)
    app.router.add_get("/api/cluster", cluster_status)


async def run_node(app: web.Application) -> AsyncIterator[None]:
    node = app[CLUSTER]
    await node.start()
    yield
    await node.stop()


async def cluster_status(request: web.Request) -> web.Response:
    body = orjson.dumps(request.app[CLUSTER].describe())
    return web.Response(body=body, content_type="application/json")


def _with_query_token(request: web.Request) -> web.Request:
    """The request with `access_token` as its bearer token, when it came without one."""
    token = request.query.get(TOKEN_PARAMETER, "").strip()
    if not token or "Authorization" in request.headers:
        return request
    headers = CIMultiDict(request.headers)
    headers["Authorization"] = f"Bearer {token}"
    return request.clone(headers=headers)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _redirect(url: str) -> web.HTTPTemporaryRedirect:
    return web.HTTPTemporaryRedirect(url, headers={"Cache-Control": "no-store"})


@web.middleware
async def cluster_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    studio = request.match_info.get("studio")
    whip = request.path.startswith("/whip/")
    if (
        request.method != "POST"
        or studio is None
        or "session" in request.match_info
        or not (whip or request.path.startswith("/whep/"))
        or studio not in request.app[SOURCES]  # the handler answers 404
    ):
        return await handler(request)
    node = request.app[CLUSTER]
    if whip:
        _route_studio(node, studio)
    elif not await _admit_pull(request, node, studio):
        await _route_viewer(request, node, studio)
        request = _with_query_token(request)
    response = await handler(request)
    location = response.headers.get("Location", "")
    if response.status == 201 and location.startswith("/"):
        response.headers["Location"] = node.url + location
    return response


def _route_studio(node: ClusterNode, studio: str) -> None:
    if node.takes_studios:
        return
    snapshot = node.current()
    origin = routing.choose_whip_origin(snapshot, studio) if snapshot is not None else None
    if origin is None:
        raise Problem(
            503,
            "Service Unavailable",
            "this node is an edge and knows no origin now; publish to an origin",
            problem="no-origin",
            headers={"Retry-After": "5"},
        )
    raise _redirect(f"{origin.url}/whip/{studio}")


async def _admit_pull(request: web.Request, node: ClusterNode, studio: str) -> bool:
    """True for another node's pull (admitted, or an exception redirects it)."""
    token = _bearer(request)
    claims_node = NODE_HEADER in request.headers
    expected = node.settings.token
    valid = (
        token is not None
        and bool(expected)
        # Bytes: a header may hold anything, and compare_digest takes only ASCII str.
        and hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected.encode())
    )
    if not valid:
        if claims_node:
            raise Problem(
                401,
                "Unauthorized",
                "pulling a feed needs the cluster token",
                headers={"WWW-Authenticate": 'Bearer realm="meridian-cluster"'},
            )
        return False
    requester = request.headers.get(NODE_HEADER, "") or "unnamed"
    limit = node.settings.max_edge_pulls
    if limit and node.pulls_served() >= limit:
        snapshot = node.current()
        other = (
            routing.choose_pull_source(
                snapshot, studio=studio, requester=requester, exclude=frozenset({node.node_id})
            )
            if snapshot is not None
            else None
        )
        if other is None:
            raise Problem(
                503,
                "Service Unavailable",
                f"this node serves {limit} edge pulls already and no other node has a free one",
                problem="pull-limit",
                headers={"Retry-After": "1"},
            )
        raise _redirect(f"{other.url}/whep/{studio}")
    if not request.app[SOURCES][studio].live:
        await node.pulls.ensure(studio, PULL_WAIT_SECONDS)
    request[PULL_KEY] = requester
    return True


async def _route_viewer(request: web.Request, node: ClusterNode, studio: str) -> None:
    try:
        hop = int(request.query.get(HOP_PARAMETER, "0"))
    except ValueError:
        hop = MAX_HOPS
    snapshot = node.current()
    room_here = node.serves_viewers and node.load() < node.settings.capacity
    if snapshot is not None and hop < MAX_HOPS and (hop == 0 or not room_here):
        country = request.app[GEO].locate(request.remote, request.headers).country
        target = routing.choose_edge(
            snapshot,
            studio=studio,
            country=country,
            entry_region=node.settings.region,
            pending=node.pending,
        )
        if target is not None and target.node_id != node.node_id:
            node.pending[target.node_id] += 1
            query = MultiDict(request.query)
            query[HOP_PARAMETER] = str(hop + 1)
            token = _bearer(request)
            if token is not None and TOKEN_PARAMETER not in query:
                query[TOKEN_PARAMETER] = token  # a viewer token, across origins
            location = URL(target.url).with_path(f"/whep/{studio}").with_query(query)
            raise _redirect(str(location))
    # Served here: by an edge, or by any node when no edge can take the viewer.
    if not request.app[SOURCES][studio].live:
        await node.pulls.ensure(studio, PULL_WAIT_SECONDS)
