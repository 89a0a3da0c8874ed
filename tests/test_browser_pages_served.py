"""How Meridian serves the pages the browser tests drive: routes, headers, static files, and
the world map's data (generated from registry packages, served locally, nothing from a CDN)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from server.pages import STATIC_DIR
from tests.conftest import url

ROOT = Path(__file__).resolve().parent.parent
CAPITAL_COUNTRIES = {"UZ", "EG", "DE", "FR", "ID", "CN", "PE", "AR"}


@pytest.mark.parametrize(
    ("path", "title"),
    [
        ("/", "Live programme"),
        ("/watch/berlin", "Watch"),
        ("/studio/cairo", "Studio"),
        ("/audience", "Audience"),
    ],
)
async def test_pages_are_served_with_a_strict_policy(
    server: TestServer, http: aiohttp.ClientSession, path: str, title: str
) -> None:
    async with http.get(url(server, path)) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        text = await response.text()
        headers = response.headers
    found = re.search(r"<title>([^<]*)</title>", text)
    assert found is not None and title in found.group(1), found
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "connect-src 'self';" in policy
    assert headers["X-Content-Type-Options"] == "nosniff"
    camera = "camera=(self)" if path.startswith("/studio/") else "camera=()"
    assert camera in headers["Permissions-Policy"]


@pytest.mark.parametrize("path", ["/watch/atlantis", "/studio/atlantis"])
async def test_an_unknown_studio_gets_a_404_page(
    server: TestServer, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(url(server, path)) as response:
        assert response.status == 404
        assert response.content_type == "text/html"
        assert "There is no such studio" in await response.text()


async def test_static_files_are_revalidated_and_typed(
    server: TestServer, http: aiohttp.ClientSession
) -> None:
    async with http.get(url(server, "/static/meridian-client.js")) as response:
        assert response.status == 200
        assert response.content_type in ("text/javascript", "application/javascript")
        assert response.headers["Cache-Control"] == "no-cache"
        etag = response.headers["ETag"]
        assert "export class WHEPClient" in await response.text()
    async with http.get(
        url(server, "/static/meridian-client.js"), headers={"If-None-Match": etag}
    ) as response:
        assert response.status == 304
    async with http.get(url(server, "/static/../pages.py")) as response:
        assert response.status in (403, 404)


def test_pages_load_nothing_from_another_origin() -> None:
    """Scripts, styles, modules and data come from Meridian itself (no CDN at run time)."""
    local = ("./", "/", "#")
    for file in sorted(STATIC_DIR.iterdir()):
        text = file.read_text() if file.suffix in (".html", ".js", ".css") else ""
        # Code only: the module's documentation shows how *other* sites import it.
        code = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith("//"))
        loads = re.findall(r'<(?:script|link|img|iframe|video)\b[^>]*?(?:src|href)="([^"]+)"', code)
        loads += re.findall(r'^\s*(?:import|export)\b[^;]*?\bfrom\s+"([^"]+)"', code, re.MULTILINE)
        loads += re.findall(r'\b(?:import|fetch|EventSource)\(\s*["`]([^"`]+)["`]', code)
        loads += re.findall(r"url\(([^)]+)\)", code)
        for target in loads:
            assert target.startswith(local), (file.name, target)


def test_the_world_map_comes_from_the_pinned_registry_packages() -> None:
    """server/static/world-110m.json is what `make world-map` builds from web/'s lock file."""
    topology = json.loads((STATIC_DIR / "world-110m.json").read_text())
    lock = json.loads((ROOT / "web" / "package-lock.json").read_text())["packages"]
    atlas = lock["node_modules/world-atlas"]["version"]
    codes = lock["node_modules/i18n-iso-countries"]["version"]
    assert topology["meridian"]["shapes"].startswith(f"world-atlas@{atlas} ")
    assert topology["meridian"]["codes"] == f"i18n-iso-countries@{codes}"
    geometries = topology["objects"]["countries"]["geometries"]
    ids = {g["id"] for g in geometries}
    assert len(ids) > 170
    assert all(re.fullmatch(r"[A-Z]{2}", i) for i in ids)
    assert ids >= CAPITAL_COUNTRIES | {"US", "BR", "IN", "GB", "XK"}
    assert "AQ" not in ids
    arcs = len(topology["arcs"])
    for geometry in geometries:
        polygons = [geometry["arcs"]] if geometry["type"] == "Polygon" else geometry["arcs"]
        for ring in (ring for polygon in polygons for ring in polygon):
            assert all(-arcs <= index < arcs for index in ring), geometry["id"]
