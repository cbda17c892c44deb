"""UploadLog on a real SQLite file."""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.records.store import RecordStore
from node.storage.shards import ShardStore
from node.storage.uploads import SCHEMA_VERSION, UploadEntry, UploadLog

SECRET = "zhtp-cap:v1:9f8e7d6c5b4a39281706f5e4d3c2b1a0"


def entry(n: int = 1, **changes: Any) -> UploadEntry:
    base = UploadEntry(
        content_id=bytes([n]) * 32,
        name=f"file-{n}.txt",
        size=1000 * n,
        created=1_700_000_000 + n,
        tier="warm",
        public=False,
        capability=SECRET,
        tags=("photos", "2024"),
    )
    return dataclasses.replace(base, **changes)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "node.sqlite3"


@pytest.fixture
def log(db_path: Path) -> Iterator[UploadLog]:
    with UploadLog(db_path) as upload_log:
        yield upload_log


def count_rows(db_path: Path) -> int:
    conn = sqlite3.connect(db_path)
    try:
        (n,) = conn.execute("SELECT COUNT(*) FROM upload_entries").fetchone()
        return int(n)
    finally:
        conn.close()


def test_record_and_get(log: UploadLog) -> None:
    assert log.get(entry().content_id) is None
    log.record(entry())
    assert log.get(entry().content_id) == entry()


def test_public_entry_without_capability_and_tags(log: UploadLog) -> None:
    public = entry(capability=None, public=True, tags=())
    log.record(public)
    assert log.get(public.content_id) == public


def test_list_is_newest_first(log: UploadLog) -> None:
    log.record(entry(1, created=200))
    log.record(entry(2, created=300))
    log.record(entry(3, created=100))
    assert [e.content_id[0] for e in log.list()] == [2, 1, 3]


def test_list_breaks_ties_by_recording_order(log: UploadLog) -> None:
    for n in (5, 3, 9):
        log.record(entry(n, created=100))
    assert [e.content_id[0] for e in log.list()] == [9, 3, 5]


def test_list_empty(log: UploadLog) -> None:
    assert log.list() == []


def test_record_again_replaces(log: UploadLog) -> None:
    log.record(entry())
    log.record(entry(name="renamed", tags=("other",)))
    assert log.list() == [entry(name="renamed", tags=("other",))]


def test_forget(log: UploadLog) -> None:
    log.record(entry(1))
    log.record(entry(2))
    assert log.forget(entry(1).content_id) is True
    assert log.forget(entry(1).content_id) is False
    assert log.list() == [entry(2)]


def test_persists_across_reopen(db_path: Path) -> None:
    with UploadLog(db_path) as first:
        first.record(entry())
    with UploadLog(db_path) as second:
        assert second.list() == [entry()]


def test_shares_the_node_database(db_path: Path, tmp_path: Path) -> None:
    with (
        RecordStore(db_path) as records,
        ShardStore(tmp_path / "shards", db_path, max_bytes=1000) as store,
        UploadLog(db_path) as log,
    ):
        log.record(entry())
        records.put(b"k", b"v", now_ms=1, expires_at_ms=None)
        assert store.stats().count == 0
        versions = dict(log._conn.execute("SELECT component, version FROM schema_versions"))
        assert versions == {"shards": 1, "uploads": SCHEMA_VERSION}


def test_refuses_newer_schema(db_path: Path) -> None:
    UploadLog(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("UPDATE schema_versions SET version = 7 WHERE component = 'uploads'")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        UploadLog(db_path)


# -- the capability is secret ------------------------------------------------------


def test_repr_hides_the_capability() -> None:
    text = repr(entry())
    assert SECRET not in text
    assert "capability" not in text
    assert "file-1.txt" in text


def test_str_and_format_hide_the_capability() -> None:
    assert SECRET not in str(entry())
    assert SECRET not in f"{entry()}"
    assert SECRET not in repr([entry()])


def test_validation_errors_do_not_echo_the_capability(log: UploadLog) -> None:
    bad = SECRET + "\x00"
    with pytest.raises(ValueError, match="capability") as failure:
        log.record(entry(capability=bad))
    assert SECRET not in str(failure.value)


# -- hostile input: each is refused and changes nothing ----------------------------


def refused(log: UploadLog, db_path: Path, bad: Any, error: type[Exception], match: str) -> None:
    log.record(entry(9))
    with pytest.raises(error, match=match):
        log.record(bad)
    assert log.list() == [entry(9)]
    assert count_rows(db_path) == 1


@pytest.mark.parametrize("length", [0, 31, 33])
def test_rejects_bad_content_id_length(log: UploadLog, db_path: Path, length: int) -> None:
    refused(log, db_path, entry(content_id=b"\x01" * length), ValueError, "32 bytes")


def test_rejects_text_content_id(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, entry(content_id="ab" * 16), TypeError, "content ID must be bytes")


def test_rejects_non_entry(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, dataclasses.asdict(entry()), TypeError, "UploadEntry")


def test_rejects_overlong_name(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, entry(name="é" * 2049), ValueError, "name is 4098 bytes")


def test_rejects_name_with_lone_surrogate(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, entry(name="photo\udcff.jpg"), ValueError, "not valid Unicode")


def test_rejects_name_with_nul(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, entry(name="a\x00b"), ValueError, "NUL")


def test_rejects_non_text_name(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, entry(name=b"file"), TypeError, "name must be a str")


@pytest.mark.parametrize("size", [-1, 2**63])
def test_rejects_out_of_range_size(log: UploadLog, db_path: Path, size: int) -> None:
    refused(log, db_path, entry(size=size), ValueError, "size must be between")


@pytest.mark.parametrize("size", [True, 1.5, "10"])
def test_rejects_non_int_size(log: UploadLog, db_path: Path, size: Any) -> None:
    refused(log, db_path, entry(size=size), TypeError, "size must be an int")


@pytest.mark.parametrize("created", [-1, 2**63])
def test_rejects_out_of_range_created(log: UploadLog, db_path: Path, created: int) -> None:
    refused(log, db_path, entry(created=created), ValueError, "created must be between")


@pytest.mark.parametrize("tier", ["", "x" * 33, "wärm", "warm\n"])
def test_rejects_bad_tier(log: UploadLog, db_path: Path, tier: str) -> None:
    refused(log, db_path, entry(tier=tier), ValueError, "tier")


def test_rejects_non_bool_public(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, entry(public=1), TypeError, "public must be a bool")


def test_rejects_empty_capability(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, entry(capability=""), ValueError, "capability must not be empty")


def test_rejects_overlong_capability(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, entry(capability="c" * 16385), ValueError, "capability is")


def test_rejects_tags_as_list(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, entry(tags=["a"]), TypeError, "tags must be a tuple")


def test_rejects_too_many_tags(log: UploadLog, db_path: Path) -> None:
    tags = tuple(f"t{i}" for i in range(65))
    refused(log, db_path, entry(tags=tags), ValueError, "65 tags")


def test_rejects_empty_tag(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, entry(tags=("ok", "")), ValueError, "tag must not be empty")


def test_rejects_non_text_tag(log: UploadLog, db_path: Path) -> None:
    refused(log, db_path, entry(tags=("ok", 5)), TypeError, "tag must be a str")


def test_get_rejects_bad_content_id(log: UploadLog) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        log.get(b"short")


def test_forget_rejects_bad_content_id(log: UploadLog) -> None:
    log.record(entry())
    with pytest.raises(ValueError, match="32 bytes"):
        log.forget(b"")
    assert log.list() == [entry()]


_text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"))


@given(
    name=_text.filter(lambda s: len(s.encode()) <= 4096),
    size=st.integers(0, 2**63 - 1),
    tags=st.lists(_text.filter(lambda s: 0 < len(s.encode()) <= 256), max_size=5).map(tuple),
    capability=st.none() | _text.filter(lambda s: s != ""),
    public=st.booleans(),
)
def test_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    size: int,
    tags: tuple[str, ...],
    capability: str | None,
    public: bool,
) -> None:
    original = entry(name=name, size=size, tags=tags, capability=capability, public=public)
    with UploadLog(tmp_path_factory.mktemp("log") / "db") as log:
        log.record(original)
        assert log.get(original.content_id) == original
