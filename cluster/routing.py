"""Which node serves a viewer, which node an edge pulls from: pure functions of a snapshot.

Viewers: the edges (and nodes that are both) with room, in the viewer's region first,
then the least loaded. A viewer's region is any node whose `countries` list its country;
failing that, the region of the node it reached (geo-DNS or anycast sent it there).
Loads in the snapshot are up to one heartbeat old, so the node that redirects adds the
viewers it sent since (`pending`): a burst of viewers spreads instead of piling onto the
edge that looked emptiest a second ago.

Pulls: an edge pulls from the studio's origin; when the origin already serves as many
edge pulls as it may, it sends the edge to a node that has the feed and a free pull slot
(a tree), never to one that pulls from the requester itself (no loops) and never deeper
than `MAX_DEPTH` hops from the origin.
"""

from __future__ import annotations

from collections.abc import Mapping

from cluster.directory import NodeInfo, Snapshot

MAX_DEPTH = 4  # hops from the origin: with 20 pulls per node, 20**4 edges


def viewer_tier(node: NodeInfo, country: str, entry_region: str) -> int:
    """0: the node serves the viewer's country; 1: the region the viewer reached; 2: other."""
    if country in node.countries:
        return 0
    if node.region == entry_region:
        return 1
    return 2


def choose_edge(
    snapshot: Snapshot,
    *,
    studio: str,
    country: str,
    entry_region: str,
    pending: Mapping[str, int] | None = None,
) -> NodeInfo | None:
    """The node a viewer of `studio` from `country` should watch on; None: no node has room."""
    pending = pending or {}
    best: tuple[int, float, int, str] | None = None
    chosen: NodeInfo | None = None
    for node in snapshot.nodes.values():
        if not node.serves_viewers or node.capacity <= 0:
            continue
        load = node.load + pending.get(node.node_id, 0)
        if load >= node.capacity:
            continue
        rank = (
            viewer_tier(node, country, entry_region),
            load / node.capacity,
            0 if studio in node.feeds else 1,  # on a tie, one that needs no new pull
            node.node_id,
        )
        if best is None or rank < best:
            best, chosen = rank, node
    return chosen


def choose_pull_source(
    snapshot: Snapshot,
    *,
    studio: str,
    requester: str,
    exclude: frozenset[str] = frozenset(),
) -> NodeInfo | None:
    """A node with the feed and a free pull slot for `requester` (None: there is none)."""
    requesting = snapshot.nodes.get(requester)
    region = requesting.region if requesting is not None else ""
    best: tuple[int, int, float, int, str] | None = None
    chosen: NodeInfo | None = None
    for node in snapshot.nodes.values():
        feed = node.feeds.get(studio)
        if (
            feed is None
            or node.node_id == requester
            or node.node_id in exclude
            or feed.upstream == requester  # it pulls from the requester: a loop
            or feed.depth >= MAX_DEPTH
            or not node.has_pull_slot()
        ):
            continue
        rank = (
            0 if node.region == region else 1,
            feed.depth,
            node.pulls / node.max_pulls if node.max_pulls > 0 else 0.0,
            node.pulls,
            node.node_id,
        )
        if best is None or rank < best:
            best, chosen = rank, node
    return chosen


def choose_whip_origin(snapshot: Snapshot, studio: str) -> NodeInfo | None:
    """Where a studio should publish: the origin that holds it, else the least loaded one."""
    holder = snapshot.origin_of(studio)
    if holder is not None:
        return holder
    origins = [node for node in snapshot.nodes.values() if node.takes_studios]
    return min(origins, key=lambda n: (len(n.feeds), n.pulls, n.node_id), default=None)
