"""RecordBook in a merging namespace (tag indexes): copies unite, never overwrite."""

from __future__ import annotations

from pathlib import Path

from node.identity import Identity
from node.records.book import PutOutcome, RecordBook
from node.records.names import NAME_PREFIX, NameValidator
from node.records.store import RecordStore
from node.records.tags import (
    TAG_PREFIX,
    TagIndexValidator,
    decode_tag_index,
    encode_tag_index,
    make_tag_entry,
    tag_key,
)
from node.records.validators import NamespacedValidator

NOW = 1_700_000_000_000
DAY = 86_400_000


def person(seed: int) -> Identity:
    s = bytes([seed]) * 32
    return Identity(ed25519_seed=s, x25519_seed=s, xwing_seed=s, mldsa_seed=None)


def book(tmp_path: Path) -> RecordBook:
    validator = NamespacedValidator({TAG_PREFIX: TagIndexValidator(), NAME_PREFIX: NameValidator()})
    return RecordBook(RecordStore(tmp_path / "records.sqlite3"), validator)


def one_entry(owner: Identity, content: int) -> bytes:
    entry = make_tag_entry(owner, "notes", bytes([content]) * 32, NOW, NOW + DAY)
    return encode_tag_index([entry])


def test_two_writers_are_merged_not_replaced(tmp_path: Path) -> None:
    records = book(tmp_path)
    key = tag_key("notes")
    assert records.accept(key, one_entry(person(1), 1), NOW) is PutOutcome.STORED
    assert records.accept(key, one_entry(person(2), 2), NOW) is PutOutcome.STORED
    held = records.get_valid(key, NOW)
    assert held is not None
    assert {e.content_id[0] for e in decode_tag_index(held)} == {1, 2}
    # The same entry again changes nothing.
    assert records.accept(key, one_entry(person(1), 1), NOW) is PutOutcome.REFRESHED


def test_copies_from_several_peers_are_combined(tmp_path: Path) -> None:
    records = book(tmp_path)
    key = tag_key("notes")
    copies = [one_entry(person(1), 1), one_entry(person(2), 2), b"garbage"]
    combined = records.combine(key, copies, NOW)
    assert combined is not None
    assert {e.content_id[0] for e in decode_tag_index(combined)} == {1, 2}
    assert records.combine(key, [b"garbage"], NOW) is None
