"""Alice shares with Bob, Carol cannot read, revoke locks Bob out of the new version.

Real `zhtp run` processes (a 6-node testnet on 127.0.0.1), driven through the
CLI exactly as people use it; each person's identity lives in their own
node's data directory, opened with their own passphrase.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_testnet_cli import Net, net, ok_json, one_error_line, zhtp

__all__ = ["net"]  # the module-scoped testnet fixture, shared by this module's tests

pytestmark = pytest.mark.slow


@dataclass
class Person:
    name: str
    data_dir: Path
    identity: str
    env: dict[str, str]

    def run(self, *args: str | Path) -> Any:
        return zhtp("--data-dir", self.data_dir, *args, env=self.env)

    def ok(self, *args: str | Path) -> Any:
        return ok_json(self.run(*args, "--json"))


@pytest.fixture(scope="module")
def people(net: Net) -> Iterator[dict[str, Person]]:
    people = {}
    for index, name in ((1, "alice"), (2, "bob"), (3, "carol")):
        env = {**os.environ, "ZHTP_PASSPHRASE": f"{name}'s long passphrase"}
        created = ok_json(
            zhtp(
                "--data-dir", net.data_dir(index), "identity", "new", "--name", name,
                "--with-mldsa", "--force", "--json", env=env,
            )
        )  # fmt: skip
        person = Person(name, net.data_dir(index), created["identity"], env)
        assert person.ok("identity", "publish")["accepted"] >= 1
        people[name] = person
    yield people


def read(person: Person, ref: str, out: Path) -> Any:
    return person.run("get", ref, "-o", out)


@pytest.mark.parametrize("level", ["standard", "quantum-resistant"])
def test_share_then_revoke(people: dict[str, Person], tmp_path: Path, level: str) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    payload = os.urandom((1 << 20) + 4321)
    source = tmp_path / "plan.pdf"
    source.write_bytes(payload)
    name = f"plan-{level}"
    put = alice.ok(
        "put", source, "--encryption", level, "--with", bob.identity,
        "--name", name, "--tag", f"plans-{level}",
    )  # fmt: skip
    # The key went into capsules only: never into the output.
    assert "capability" not in put and "unpublished_manifest" not in put
    assert put["readers"] == 2 and put["level"] == level and put["owner"] == alice.identity
    assert put["name_record"] == {"name": f"{name}@{alice.identity}", "sequence": 1}
    assert put["tags_indexed"] == 1
    first = put["cid"]

    # Bob reads by CID and by name; Carol has no capsule.
    out = tmp_path / "bob.pdf"
    assert read(bob, first, out).returncode == 0
    assert out.read_bytes() == payload
    by_name = tmp_path / "bob-by-name.pdf"
    assert read(bob, f"{name}@{alice.identity}", by_name).returncode == 0
    assert by_name.read_bytes() == payload
    denied = read(carol, first, tmp_path / "carol.pdf")
    assert denied.returncode == 1
    assert "not shared this version with you" in one_error_line(denied)
    assert not (tmp_path / "carol.pdf").exists()
    stat = bob.ok("stat", first)
    assert stat["level"] == level and stat["readers"] == 2

    # Search shows Bob what he may read, and hides it from Carol.
    found = bob.ok("search", f"plans-{level}")["results"]
    assert [(r["cid"], r["owner"], r["owner_name"]) for r in found] == [
        (first, alice.identity, "alice")
    ]
    carol_search = carol.ok("search", f"plans-{level}")
    assert carol_search["results"] == [] and carol_search["hidden"] == 1

    # Share with Carol: a new version; the name moves to it.
    shared = alice.ok("share", first, "--with", carol.identity)
    second = shared["cid"]
    assert second != first and shared["readers"] == 3 and shared["name"] == name
    out = tmp_path / "carol.pdf"
    assert read(carol, f"{name}@{alice.identity}", out).returncode == 0
    assert out.read_bytes() == payload

    # Revoke Bob: re-encrypted under a fresh key; the name moves again.
    revoked = alice.ok("revoke", second, "--from", bob.identity)
    third = revoked["cid"]
    assert third not in (first, second) and revoked["readers"] == 2
    assert "can still read it" in revoked["note"]
    locked = read(bob, third, tmp_path / "bob-after.pdf")
    assert "not shared this version with you" in one_error_line(locked)
    locked = read(bob, f"{name}@{alice.identity}", tmp_path / "bob-after.pdf")
    assert "not shared this version with you" in one_error_line(locked)
    out = tmp_path / "carol-after.pdf"
    assert read(carol, third, out).returncode == 0
    assert out.read_bytes() == payload
    # What Bob could read before stays readable: revocation cannot unsend a key.
    assert read(bob, second, tmp_path / "bob-old.pdf").returncode == 0
    # Different ciphertext: none of the new version's shards is an old one.
    old_stat, new_stat = alice.ok("stat", second), alice.ok("stat", third)
    assert old_stat["stored_bytes"] > 0 and new_stat["level"] == level


def test_only_the_owner_can_share_or_revoke(people: dict[str, Person], tmp_path: Path) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    source = tmp_path / "memo.txt"
    source.write_bytes(b"for bob only\n" * 1000)
    cid = alice.ok("put", source, "--encryption", "standard", "--with", bob.identity)["cid"]
    refused = bob.run("share", cid, "--with", carol.identity)
    assert "only its owner can change it" in one_error_line(refused)
    refused = bob.run("revoke", cid, "--from", alice.identity)
    assert "only its owner can change it" in one_error_line(refused)
    nothing = alice.run("revoke", cid, "--from", carol.identity)
    assert "nothing to revoke" in one_error_line(nothing)


def test_wrong_passphrase_stores_nothing(people: dict[str, Person], tmp_path: Path) -> None:
    alice = people["alice"]
    before = alice.ok("ls")["uploads"]
    source = tmp_path / "secret.txt"
    source.write_bytes(b"x" * 5000)
    wrong = {**alice.env, "ZHTP_PASSPHRASE": "not it"}
    result = zhtp(
        "--data-dir", alice.data_dir, "put", source, "--encryption", "standard", env=wrong
    )
    assert result.returncode == 1
    line = one_error_line(result)
    assert "wrong passphrase" in line and "not it" not in line
    assert alice.ok("ls")["uploads"] == before


def test_unknown_recipient_is_refused_before_upload(
    people: dict[str, Person], tmp_path: Path
) -> None:
    alice = people["alice"]
    source = tmp_path / "x.txt"
    source.write_bytes(b"x")
    stranger = "zid1" + "a" * 52  # well-formed, but nobody published it
    result = alice.run("put", source, "--encryption", "standard", "--with", stranger)
    assert "unknown identity" in one_error_line(result)


def test_capability_only_content_is_not_opened_by_identity(
    people: dict[str, Person], tmp_path: Path
) -> None:
    alice, bob = people["alice"], people["bob"]
    source = tmp_path / "cap.txt"
    source.write_bytes(b"capability only\n")
    put = alice.ok("put", source)
    assert put["capability"].startswith("zhtp://")
    refused = read(bob, put["cid"], tmp_path / "out.txt")
    assert "shared by capability only" in one_error_line(refused)
    assert read(bob, put["capability"], tmp_path / "out.txt").returncode == 0


def test_two_owners_tagging_alike_are_both_found(people: dict[str, Person], tmp_path: Path) -> None:
    # One tag record, two writers on different nodes: holders merge the
    # entries instead of keeping whichever arrived last.
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    cids = set()
    for person in (alice, carol):
        source = tmp_path / f"{person.name}.txt"
        source.write_bytes(f"{person.name}'s public notes\n".encode() * 100)
        put = person.ok("put", source, "--public", "--tag", "Field-Notes")
        assert put["tags_indexed"] == 1
        cids.add(put["cid"])
    found = bob.ok("search", "field-notes")["results"]
    assert {r["cid"] for r in found} == cids
    assert {r["owner"] for r in found} == {alice.identity, carol.identity}
    assert all(r["level"] == "none" for r in found)


def test_node_refuses_to_publish_a_tampered_signed_manifest(
    people: dict[str, Person], tmp_path: Path
) -> None:
    import base64
    import dataclasses

    from node.api.client import ApiClient, ApiFailed
    from node.content.manifest import decode_manifest, encode_manifest

    alice, bob = people["alice"], people["bob"]
    source = tmp_path / "signed.txt"
    source.write_bytes(b"signed words\n" * 100)
    cid = alice.ok("put", source, "--encryption", "quantum-resistant")["cid"]
    with ApiClient(bob.data_dir) as api:
        reply = api.post_json("/api/v0/manifest", {"ref": cid})
        manifest = decode_manifest(base64.b64decode(reply["manifest"]))
        forged = dataclasses.replace(manifest, description="alice never wrote this")
        with pytest.raises(ApiFailed) as refused:
            api.post_bytes("/api/v0/publish", encode_manifest(forged))
        assert refused.value.status == 422
        assert "does not verify" in str(refused.value)
        before = len(api.get_json("/api/v0/ls")["uploads"])
        with pytest.raises(ApiFailed):
            api.post_bytes("/api/v0/publish", b"\x00not a manifest")
        assert len(api.get_json("/api/v0/ls")["uploads"]) == before
