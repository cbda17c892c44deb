"""The control API refuses what a web page could send it (DNS rebinding, CSRF)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

ZHTP = [sys.executable, "-m", "node.cli"]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("node")
    init = subprocess.run(
        [
            *ZHTP,
            "--data-dir",
            str(data_dir),
            "init",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-default-bootstrap",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert init.returncode == 0, init.stderr
    proc = subprocess.Popen(
        [*ZHTP, "--data-dir", str(data_dir), "run", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())["api"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_foreign_host_header_is_refused(api: str) -> None:
    response = httpx.get(f"{api}/api/v0/ls", headers={"host": "attacker.example:80"})
    assert response.status_code == 403
    assert "loopback" in response.json()["error"]


def test_a_post_without_the_client_header_is_refused(api: str) -> None:
    response = httpx.post(f"{api}/api/v0/put?name=x", content=b"data")
    assert response.status_code == 403
    assert "x-zhtp-client" in response.json()["error"]


def test_the_cli_header_and_loopback_host_are_served(api: str) -> None:
    response = httpx.get(f"{api}/api/v0/id")
    assert response.status_code == 200
    posted = httpx.post(
        f"{api}/api/v0/put?name=x&public=1", content=b"data", headers={"x-zhtp-client": "t"}
    )
    assert posted.status_code == 200, posted.text


def test_gateway_content_is_sandboxed(api: str) -> None:
    put = httpx.post(
        f"{api}/api/v0/put?name=page.html&mime=text/html&public=1",
        content=b"<script>fetch('/api/v0/ls?capabilities=1')</script>",
        headers={"x-zhtp-client": "t"},
    ).json()
    page = httpx.get(f"{api}/zhtp/{put['cid']}")
    assert page.status_code == 200
    assert page.headers["content-security-policy"].startswith("sandbox")
    assert page.headers["x-content-type-options"] == "nosniff"
