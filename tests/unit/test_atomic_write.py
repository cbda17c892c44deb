"""write_file_atomically and its steps, on a real directory."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from node.storage.atomic import (
    fsync_directory,
    make_directory,
    write_file_atomically,
    write_temp_file,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    # The requested mode must win whatever the process umask says.
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_writes_bytes_with_private_mode_by_default(tmp_path: Path) -> None:
    target = tmp_path / "key"
    write_file_atomically(target, b"secret")
    assert target.read_bytes() == b"secret"
    assert mode_of(target) == 0o600
    assert os.listdir(tmp_path) == ["key"]


def test_mode_is_exact_whatever_the_umask(tmp_path: Path, permissive_umask: None) -> None:
    target = tmp_path / "config.toml"
    write_file_atomically(target, b"x = 1\n", mode=0o644)
    assert mode_of(target) == 0o644


def test_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old contents, longer than the new")
    write_file_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["f"]


def test_accepts_a_writer_callable(tmp_path: Path) -> None:
    def writer(file: BinaryIO) -> None:
        file.write(b"part one, ")
        file.write(b"part two")

    target = tmp_path / "f"
    write_file_atomically(target, writer)
    assert target.read_bytes() == b"part one, part two"


def test_accepts_bytearray_and_memoryview(tmp_path: Path) -> None:
    write_file_atomically(tmp_path / "a", bytearray(b"abc"))
    write_file_atomically(tmp_path / "m", memoryview(b"xyz"))
    assert (tmp_path / "a").read_bytes() == b"abc"
    assert (tmp_path / "m").read_bytes() == b"xyz"


def test_writer_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def writer(file: BinaryIO) -> None:
        file.write(b"half of the new")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_file_atomically(target, writer)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_writer_failure_on_new_file_leaves_nothing(tmp_path: Path) -> None:
    def writer(file: BinaryIO) -> None:
        raise OSError("no space left")

    with pytest.raises(OSError, match="no space left"):
        write_file_atomically(tmp_path / "f", writer)
    assert os.listdir(tmp_path) == []


def test_fsync_failure_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"old")

    def failing_fsync(fd: int) -> None:
        raise OSError("I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        write_file_atomically(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_rename_failure_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # a directory cannot be replaced by a file
    with pytest.raises(IsADirectoryError):
        write_file_atomically(target, b"data")
    assert os.listdir(tmp_path) == ["taken"]
    assert os.listdir(target) == []


def test_missing_parent_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_file_atomically(tmp_path / "absent" / "f", b"data")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("mode", [-1, 0o10000, 0o7777 + 1, True])
def test_rejects_bad_mode(tmp_path: Path, mode: int) -> None:
    with pytest.raises(ValueError, match="file mode"):
        write_file_atomically(tmp_path / "f", b"data", mode=mode)
    assert os.listdir(tmp_path) == []


def test_rejects_text_data(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="data must be bytes"):
        write_file_atomically(tmp_path / "f", "text")  # type: ignore[arg-type]
    assert os.listdir(tmp_path) == []


def test_syncs_file_before_rename_and_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, Any]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(("fsync", kind))
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(("replace", Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_file_atomically(tmp_path / "f", b"data")
    assert events == [("fsync", "file"), ("replace", "f"), ("fsync", "dir")]


def test_write_temp_file_leaves_synced_file_for_caller(tmp_path: Path) -> None:
    temp = write_temp_file(tmp_path, b"payload", mode=0o640)
    assert temp.parent == tmp_path
    assert temp.read_bytes() == b"payload"
    assert mode_of(temp) == 0o640
    assert os.listdir(tmp_path) == [temp.name]


def test_write_temp_file_names_are_unique(tmp_path: Path) -> None:
    names = {write_temp_file(tmp_path, b"same").name for _ in range(20)}
    assert len(names) == 20


def test_make_directory(tmp_path: Path) -> None:
    assert make_directory(tmp_path / "d") is True
    assert (tmp_path / "d").is_dir()
    assert make_directory(tmp_path / "d") is False


def test_make_directory_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "d").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        make_directory(tmp_path / "d")


def test_fsync_directory_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_directory(tmp_path / "f")
