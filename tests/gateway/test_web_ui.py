"""The web UI's static serving: the page, its assets, their headers, nothing else."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_index_and_assets_are_served_with_a_strict_policy(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in page.text
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for name, media in [
        ("app.js", "text/javascript"),
        ("api.js", "text/javascript"),
        ("chart.js", "text/javascript"),
        ("live.js", "text/javascript"),
        ("style.css", "text/css"),
    ]:
        asset = client.get(f"/ui/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].startswith(media), name


def test_only_the_listed_files_can_be_fetched(client: TestClient) -> None:
    for path in ("/ui/router.py", "/ui/..%2Frouter.py", "/ui/%2e%2e/__init__.py", "/ui/missing.js"):
        assert client.get(path).status_code == 404, path


def test_every_module_the_page_imports_is_served(client: TestClient) -> None:
    import re

    for name in ("app.js", "api.js", "chart.js", "live.js"):
        source = client.get(f"/ui/{name}").text
        for imported in re.findall(r'from "\./([\w.-]+)"', source):
            assert client.get(f"/ui/{imported}").status_code == 200, (name, imported)


def test_the_ui_is_not_part_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert "/" not in paths
    assert not any(p.startswith("/ui/") for p in paths)
    assert "/api/v1/people/{person_id}/reports/agp.pdf" in paths
