"""protocols/pb is exactly what `python -m protocols.pbgen` makes from proto/ (STYLE rule 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols import pbgen

PROTOS = sorted(pbgen.PROTO_DIR.glob("*.proto"))
GENERATED = sorted(pbgen.PB_DIR.glob("*_pb2.py")) + sorted(pbgen.PB_DIR.glob("*_pb2.pyi"))


def test_generated_code_is_fresh() -> None:
    stale = pbgen.stale_files()
    assert stale == [], f"protocols/pb is stale; run `python -m protocols.pbgen`: {stale}"


def test_every_proto_has_generated_modules() -> None:
    assert PROTOS, "no .proto sources found"
    names = {p.name for p in GENERATED}
    for proto in PROTOS:
        assert f"{proto.stem}_pb2.py" in names
        assert f"{proto.stem}_pb2.pyi" in names


@pytest.mark.parametrize("path", GENERATED, ids=[p.name for p in GENERATED])
def test_generated_file_starts_with_stamp(path: Path) -> None:
    source = path.name.split("_pb2")[0] + ".proto"
    assert (pbgen.PROTO_DIR / source).is_file(), f"{path.name} has no proto/{source}"
    first_line = path.read_text().splitlines(keepends=True)[0]
    assert first_line == pbgen.STAMP.format(name=source)
    assert first_line.startswith("# Generated from proto/")


def test_stale_files_detects_edits_deletions_and_strays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The freshness check itself must be able to fail.
    for path in GENERATED:
        (tmp_path / path.name).write_bytes(path.read_bytes())
    monkeypatch.setattr(pbgen, "PB_DIR", tmp_path)
    assert pbgen.stale_files() == []
    edited = tmp_path / "dht_pb2.py"
    edited.write_text(edited.read_text() + "# hand edit\n")
    (tmp_path / "ping_pb2.pyi").unlink()
    (tmp_path / "old_pb2.py").write_text("# left over from a removed proto\n")
    assert pbgen.stale_files() == ["dht_pb2.py", "old_pb2.py", "ping_pb2.pyi"]
