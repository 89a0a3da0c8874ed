"""The operations stack in deploy/: generated dashboard, provisioning, compose, alert rules."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import dashboard

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(dashboard.OUTPUT.read_text(encoding="utf-8"))
    return data


def panels() -> list[dict[str, Any]]:
    return [panel for panel in committed()["panels"] if panel["type"] != "row"]


def test_committed_dashboard_is_the_generator_output() -> None:
    assert dashboard.OUTPUT.read_text(encoding="utf-8") == dashboard.render(), (
        "deploy/grafana/dashboards/meridian.json is stale: run python -m deploy.dashboard"
    )
    assert dashboard.main(["--check"]) == 0


def test_generator_check_flags_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "meridian.json"
    stale.write_text("{}", encoding="utf-8")
    assert dashboard.main(["--check", "--output", str(stale)]) == 1
    assert dashboard.main(["--output", str(stale)]) == 0
    assert dashboard.main(["--check", "--output", str(stale)]) == 0


def test_dashboard_has_what_operations_asked_for() -> None:
    by_title = {panel["title"]: panel for panel in panels()}
    for title in (
        "Watching now",
        "Countries now",
        "Countries today",
        "Viewer sessions today",
        "Viewers by country, now",
        "Top countries, now",
        "Viewers per studio",
        "Studios up / down",
        "Ingest bitrate",
        "Ingest loss",
        "Keyframes",
        "Egress bandwidth",
        "Join time",
        "Packets dropped for slow viewers",
    ):
        assert title in by_title, title
    world = by_title["Viewers by country, now"]
    assert world["type"] == "geomap"
    [layer] = world["options"]["layers"]
    assert layer["location"] == {
        "mode": "lookup",
        "lookup": "country",
        "gazetteer": "public/gazetteer/countries.json",
    }
    assert world["targets"][0]["format"] == "table" and world["targets"][0]["instant"]
    join = [t["expr"] for t in by_title["Join time"]["targets"]]
    assert [expr.split(",")[0] for expr in join] == [
        "histogram_quantile(0.5",
        "histogram_quantile(0.95",
    ]
    assert committed()["time"] == {"from": "now/d", "to": "now"}


def test_every_target_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    [datasource] = provisioned["datasources"]
    assert datasource["type"] == "prometheus"
    ids = [panel["id"] for panel in committed()["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels():
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)) and all(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == datasource["uid"]
            assert target["expr"] in dashboard.QUERIES[panel["title"]]
    [variable] = committed()["templating"]["list"]
    assert variable["datasource"]["uid"] == datasource["uid"]


def test_compose_brings_up_the_stack() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"meridian", "prometheus", "grafana"}
    assert all(service["network_mode"] == "host" for service in services.values())
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), volume
    grafana_mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/meridian.yml").read_text())
    assert provider["providers"][0]["options"]["path"] in grafana_mounts
    scrape = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["localhost:8080"]
    assert (PROMETHEUS_DIR / scrape["rule_files"][0]).exists()


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail(
            "promtool is not installed: `make system-deps` installs it (Debian: prometheus)"
        )
    return subprocess.run(
        [binary, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "args",
    [
        ("check", "rules", "alerts.yml"),
        ("check", "config", "prometheus.yml"),
        ("test", "rules", "alerts_test.yml"),
    ],
)
def test_promtool_accepts_the_rules(args: tuple[str, ...]) -> None:
    result = promtool(*args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_alerts_cover_what_operations_asked_for() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "alerts.yml").read_text())["groups"][0]["rules"]
    alerts = {rule["alert"]: rule for rule in rules}
    assert {
        "MeridianStudioDown",
        "MeridianIngestLoss",
        "MeridianNoKeyframe",
        "MeridianViewersDroppedToZero",
    } <= set(alerts)
    assert "> 0.05" in alerts["MeridianIngestLoss"]["expr"]
    assert "> 5" in alerts["MeridianNoKeyframe"]["expr"]
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
