"""Routing decisions from a directory snapshot: no Redis, no sockets."""

from __future__ import annotations

from cluster import routing
from cluster.directory import Feed, NodeInfo, Snapshot


def node(node_id: str, role: str = "edge", **fields: object) -> NodeInfo:
    values: dict[str, object] = {
        "url": f"http://{node_id}.test:8080",
        "region": "eu",
        "capacity": 100,
    }
    values.update(fields)
    return NodeInfo(node_id=node_id, role=role, **values)  # type: ignore[arg-type]


def snapshot(*nodes: NodeInfo, studios: dict[str, str] | None = None) -> Snapshot:
    return Snapshot({n.node_id: n for n in nodes}, studios or {})


def test_viewers_go_to_the_least_loaded_edge_never_to_an_origin() -> None:
    snap = snapshot(
        node("origin", role="origin", load=0),
        node("e1", load=40),
        node("e2", load=10),
    )
    chosen = routing.choose_edge(snap, studio="berlin", country="DE", entry_region="eu")
    assert chosen is not None and chosen.node_id == "e2"


def test_the_viewers_region_comes_before_load() -> None:
    snap = snapshot(
        node("eu1", load=90, countries=("DE", "FR")),
        node("asia1", region="asia", load=0, countries=("JP", "ID")),
    )
    assert (
        routing.choose_edge(snap, studio="s", country="DE", entry_region="asia")
        == snap.nodes["eu1"]
    )
    # A country no node lists: the region of the node the viewer reached.
    chosen = routing.choose_edge(snap, studio="s", country="BR", entry_region="asia")
    assert chosen is not None and chosen.node_id == "asia1"


def test_full_edges_are_left_out_and_pending_redirects_count() -> None:
    snap = snapshot(node("e1", load=100), node("e2", load=5, capacity=10))
    chosen = routing.choose_edge(snap, studio="s", country="DE", entry_region="eu")
    assert chosen is not None and chosen.node_id == "e2"
    assert (
        routing.choose_edge(snap, studio="s", country="DE", entry_region="eu", pending={"e2": 5})
        is None
    )


def test_a_burst_spreads_over_edges_through_pending_counts() -> None:
    snap = snapshot(node("e1"), node("e2"), node("e3"))
    pending: dict[str, int] = {}
    for _ in range(9):
        chosen = routing.choose_edge(
            snap, studio="s", country="DE", entry_region="eu", pending=pending
        )
        assert chosen is not None
        pending[chosen.node_id] = pending.get(chosen.node_id, 0) + 1
    assert pending == {"e1": 3, "e2": 3, "e3": 3}


def test_on_equal_load_an_edge_that_has_the_feed_wins() -> None:
    snap = snapshot(node("e1"), node("e2", feeds={"s": Feed("origin", 1)}))
    chosen = routing.choose_edge(snap, studio="s", country="DE", entry_region="eu")
    assert chosen is not None and chosen.node_id == "e2"


def test_pulls_are_redirected_down_a_tree_without_loops() -> None:
    snap = snapshot(
        node("origin", role="origin", feeds={"s": Feed("", 0)}, pulls=2, max_pulls=2),
        node("e1", feeds={"s": Feed("origin", 1)}, pulls=0, max_pulls=2),
        node("e2", feeds={"s": Feed("e3", 2)}, pulls=0, max_pulls=2),
        node("e3", feeds={"s": Feed("origin", 1)}, pulls=2, max_pulls=2),
        node("e4"),
    )
    chosen = routing.choose_pull_source(snap, studio="s", requester="e4")
    assert chosen is not None and chosen.node_id == "e1"  # origin and e3 are full
    chosen = routing.choose_pull_source(snap, studio="s", requester="e4", exclude=frozenset({"e1"}))
    assert chosen is not None and chosen.node_id == "e2"  # one level deeper
    # e2 pulls from e3: e3 (re-pulling) must never be sent to pull from e2.
    assert (
        routing.choose_pull_source(snap, studio="s", requester="e3", exclude=frozenset({"e1"}))
        is None
    )


def test_pulls_stay_within_the_depth_bound() -> None:
    deep = node("deep", feeds={"s": Feed("x", routing.MAX_DEPTH)})
    assert routing.choose_pull_source(snapshot(deep), studio="s", requester="e9") is None


def test_studios_publish_to_the_origin_that_holds_them() -> None:
    snap = snapshot(
        node("o1", role="origin"),
        node("o2", role="both", feeds={"s": Feed("", 0)}),
        node("e1"),
        studios={"s": "o2"},
    )
    assert routing.choose_whip_origin(snap, "s") == snap.nodes["o2"]
    other = routing.choose_whip_origin(snap, "t")
    assert other is not None and other.node_id == "o1"  # the one holding fewer feeds
    assert routing.choose_whip_origin(snapshot(node("e1")), "s") is None


def test_node_entries_round_trip_through_a_redis_hash() -> None:
    original = node(
        "e1",
        countries=("DE", "FR"),
        load=7,
        pulls=1,
        max_pulls=4,
        feeds={"s": Feed("origin", 1), "t": Feed("", 0)},
    )
    assert NodeInfo.from_hash("e1", original.to_hash()) == original
    assert snapshot(original).node_at("http://e1.test:8080/whep/s/abc") == original
    assert snapshot(original).node_at("http://e1.test:80801/whep/s") is None
