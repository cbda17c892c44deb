"""`zhtp run` refuses to start, with one clear line, when it cannot listen."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ZHTP = [sys.executable, "-m", "node.cli"]


def zhtp(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*ZHTP, "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen()
        yield sock.getsockname()[1]


def set_config(data_dir: Path, **values: str) -> None:
    path = data_dir / "config.toml"
    text = path.read_text()
    for name, value in values.items():
        text, count = re.subn(rf"(?m)^{name} = .*$", f"{name} = {value}", text)
        assert count == 1, name
    path.write_text(text)


def assert_one_error_line(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("zhtp: error: "), lines[0]
    assert fragment in lines[0]


def test_api_port_in_use_is_one_line(tmp_path: Path, busy_port: int) -> None:
    assert zhtp(tmp_path, "init").returncode == 0
    set_config(tmp_path, api_port=str(busy_port), listen_addrs='["/ip4/127.0.0.1/tcp/0"]')
    result = zhtp(tmp_path, "run")
    assert_one_error_line(result, "address already in use")
    assert not (tmp_path / "api.port").exists()


def test_listen_port_in_use_is_one_line(tmp_path: Path, busy_port: int) -> None:
    assert zhtp(tmp_path, "init").returncode == 0
    set_config(tmp_path, listen_addrs=f'["/ip4/0.0.0.0/tcp/{busy_port}"]')
    result = zhtp(tmp_path, "run")
    assert_one_error_line(result, f"could not listen on /ip4/0.0.0.0/tcp/{busy_port}")
