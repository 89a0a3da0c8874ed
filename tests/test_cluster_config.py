"""[cluster] settings, the local launcher's plan and the cluster's deploy files."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cluster import local
from config.loader import ConfigError, load_settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
TOKEN = "cluster-token-0123456789abcdef"


def test_single_is_the_default_and_needs_no_token() -> None:
    cluster = load_settings(None, {}).cluster
    assert cluster.role == "single" and cluster.token == ""


def test_a_cluster_node_from_the_environment(tmp_path: Path) -> None:
    token_file = tmp_path / "cluster.token"
    token_file.write_text(TOKEN + "\n")
    config = tmp_path / "meridian.toml"
    config.write_text('[cluster]\nrole = "edge"\ntoken_file = "cluster.token"\n')
    cluster = load_settings(
        config,
        {
            "MERIDIAN_CLUSTER__NODE_ID": "edge-fra-1",
            "MERIDIAN_CLUSTER__PUBLIC_URL": "https://edge-fra-1.example.com/",
            "MERIDIAN_CLUSTER__COUNTRIES": "de, at,ch",
            "MERIDIAN_CLUSTER__MAX_EDGE_PULLS": "20",
        },
    ).cluster
    assert (cluster.role, cluster.node_id, cluster.token) == ("edge", "edge-fra-1", TOKEN)
    assert cluster.public_url == "https://edge-fra-1.example.com"
    assert cluster.countries == ("DE", "AT", "CH")
    assert cluster.max_edge_pulls == 20


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"MERIDIAN_CLUSTER__ROLE": "edge"}, "cluster: needs exactly one of token"),
        ({"MERIDIAN_CLUSTER__ROLE": "leaf", "MERIDIAN_CLUSTER__TOKEN": TOKEN}, "cluster.role"),
        ({"MERIDIAN_CLUSTER__PUBLIC_URL": "edge1:8080"}, "cluster.public_url"),
        ({"MERIDIAN_CLUSTER__REDIS_URL": "localhost:6379"}, "cluster.redis_url"),
        ({"MERIDIAN_CLUSTER__COUNTRIES": "UK"}, "cluster.countries"),
        ({"MERIDIAN_CLUSTER__CAPACITY": "0"}, "cluster.capacity"),
        ({"MERIDIAN_CLUSTER__UPSTREAM": "nearest"}, "cluster.upstream"),
        ({"MERIDIAN_CLUSTER__NODE_TTL": "1.5"}, "cluster.node_ttl: must be at least twice"),
        (
            {"MERIDIAN_CLUSTER__ROLE": "origin", "MERIDIAN_CLUSTER__TOKEN": "short"},
            "cluster.token: must be at least 16 characters",
        ),
    ],
)
def test_bad_cluster_settings_name_the_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(None, environ)
    assert str(error.value).startswith(message), error.value


def test_the_local_cluster_plan(tmp_path: Path) -> None:
    plan = local.plan(2, ports=[9000, 9001, 9002], redis_port=9999, data_dir=tmp_path, environ={})
    assert [(n.name, n.role, n.port) for n in plan.nodes] == [
        ("origin", "origin", 9000),
        ("edge1", "edge", 9001),
        ("edge2", "edge", 9002),
    ]
    tokens = {n.env["MERIDIAN_CLUSTER__TOKEN"] for n in plan.nodes}
    assert len(tokens) == 1 and len(tokens.pop()) >= 32  # one fresh token for all
    for node in plan.nodes:
        assert node.env["MERIDIAN_CLUSTER__REDIS_URL"] == "redis://127.0.0.1:9999/0"
        assert node.env["MERIDIAN_CLUSTER__PUBLIC_URL"] == node.url
        # What run.py would make of it.
        settings = load_settings(None, node.env)
        assert (settings.cluster.role, settings.cluster.node_id) == (node.role, node.name)
    assert "9999" in plan.redis_argv and str(tmp_path) in plan.redis_argv
    with pytest.raises(ValueError):
        local.plan(2, ports=[9000], redis_port=9999, data_dir=tmp_path, environ={})


def test_the_cluster_compose_file_and_its_prometheus() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.cluster.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "origin", "edge1", "edge2", "prometheus", "grafana"}
    assert all(service["network_mode"] == "host" for service in services.values())
    roles = {
        name: services[name]["environment"]["MERIDIAN_CLUSTER__ROLE"]
        for name in services
        if name.startswith(("origin", "edge"))
    }
    assert roles == {"origin": "origin", "edge1": "edge", "edge2": "edge"}
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), volume
    config = DEPLOY / "prometheus" / "prometheus-cluster.yml"
    assert f"--config.file=/etc/prometheus/{config.name}" in services["prometheus"]["command"]
    scrape = yaml.safe_load(config.read_text())
    groups = scrape["scrape_configs"][0]["static_configs"]
    ports = [services[g["labels"]["node"]]["environment"]["MERIDIAN_SERVER__PORT"] for g in groups]
    assert [t for g in groups for t in g["targets"]] == [f"localhost:{p}" for p in ports]
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: `make system-deps` installs it (prometheus)")
    result = subprocess.run(
        [binary, "check", "config", config.name],
        cwd=config.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
