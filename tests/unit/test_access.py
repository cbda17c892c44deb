"""Sealing, signing and opening manifests for identities (node/access.py).

Each tampering case the sharing design must refuse has its own test.
"""

from __future__ import annotations

import dataclasses
import os
from functools import cache

import pytest

from node.access import (
    AccessError,
    NoCapsule,
    add_recipient,
    open_content_key,
    recipient_ids,
    seal,
    verify_owner,
)
from node.content.capsules import KeyCapsule
from node.content.manifest import (
    Codec,
    Encryption,
    EncryptionScheme,
    KeyWrapping,
    Manifest,
    SegmentEntry,
    Tier,
    decode_manifest,
    encode_manifest,
)
from node.identity import Identity, make_identity_record

LEVELS = [KeyWrapping.STANDARD, KeyWrapping.QUANTUM_RESISTANT]


@cache
def person(name: str) -> Identity:
    # Deterministic seeds: fast, and failures reproduce.
    seed = name.encode().ljust(32, b".")
    return Identity(
        ed25519_seed=seed,
        x25519_seed=seed[::-1],
        xwing_seed=bytes(reversed(seed[1:] + seed[:1])),
        mldsa_seed=seed,
    )


def record(name: str) -> bytes:
    return make_identity_record(person(name), name=name, sequence=1)


def capability_manifest() -> Manifest:
    return Manifest(
        size=100,
        segment_size=1 << 20,
        tier=Tier.WARM,
        codec=Codec(k=4, m=2),
        encryption=Encryption(scheme=EncryptionScheme.AES_256_GCM),
        segments=(
            SegmentEntry(
                plain_size=100,
                stored_size=116,
                compressed=False,
                shard_size=29,
                shard_addresses=tuple(bytes([i]) * 32 for i in range(6)),
            ),
        ),
        name="report.pdf",
        tags=("finance",),
        created=1_700_000_000,
    )


KEY = bytes(range(32))


def sealed(level: KeyWrapping, *recipients: str, owner: str = "alice") -> Manifest:
    return seal(
        capability_manifest(),
        KEY,
        owner=person(owner),
        owner_record=record(owner),
        recipients=[person(r).public_identity(name=r, sequence=1) for r in recipients],
        key_wrapping=level,
    )


def reencoded(manifest: Manifest) -> Manifest:
    return decode_manifest(encode_manifest(manifest))


@pytest.mark.parametrize("level", LEVELS)
def test_owner_and_recipient_open_the_key(level: KeyWrapping) -> None:
    manifest = reencoded(sealed(level, "bob"))
    assert manifest.level == level.value
    assert verify_owner(manifest) is not None
    assert open_content_key(manifest, person("alice")) == KEY
    assert open_content_key(manifest, person("bob")) == KEY


@pytest.mark.parametrize("level", LEVELS)
def test_someone_not_shared_with_has_no_capsule(level: KeyWrapping) -> None:
    with pytest.raises(NoCapsule, match="not shared"):
        open_content_key(sealed(level, "bob"), person("carol"))


@pytest.mark.parametrize("level", LEVELS)
def test_share_adds_a_capsule_and_keeps_the_others(level: KeyWrapping) -> None:
    first = sealed(level)
    second = reencoded(
        add_recipient(
            first,
            KEY,
            owner=person("alice"),
            recipient=person("bob").public_identity(name="bob", sequence=1),
        )
    )
    assert set(recipient_ids(second)) == {person("alice").identity_id, person("bob").identity_id}
    assert open_content_key(second, person("bob")) == KEY
    # Alice's capsule is the very same bytes: sharing does not rewrap.
    alice = [c for c in second.encryption.capsules if c.recipient_id == person("alice").identity_id]
    assert alice == list(first.encryption.capsules)


def test_only_the_owner_can_share() -> None:
    with pytest.raises(AccessError, match="only the owner"):
        add_recipient(
            sealed(KeyWrapping.STANDARD, "bob"),
            KEY,
            owner=person("bob"),
            recipient=person("carol").public_identity(name="carol", sequence=1),
        )


def test_sharing_twice_with_the_same_identity_is_refused() -> None:
    with pytest.raises(AccessError, match="can already read"):
        add_recipient(
            sealed(KeyWrapping.STANDARD, "bob"),
            KEY,
            owner=person("alice"),
            recipient=person("bob").public_identity(name="bob", sequence=1),
        )


def test_quantum_resistant_needs_an_mldsa_owner() -> None:
    seed = b"nomldsa".ljust(32, b".")
    plain = Identity(ed25519_seed=seed, x25519_seed=seed, xwing_seed=seed, mldsa_seed=None)
    with pytest.raises(AccessError, match="ML-DSA"):
        seal(
            capability_manifest(),
            KEY,
            owner=plain,
            owner_record=make_identity_record(plain, name="n", sequence=1),
            recipients=[],
            key_wrapping=KeyWrapping.QUANTUM_RESISTANT,
        )


def test_an_owner_record_of_someone_else_is_refused() -> None:
    with pytest.raises(AccessError, match="another identity"):
        seal(
            capability_manifest(),
            KEY,
            owner=person("mallory"),
            owner_record=record("alice"),
            recipients=[],
            key_wrapping=KeyWrapping.STANDARD,
        )


# -- tampering -------------------------------------------------------------------


def with_encryption(manifest: Manifest, **changes: object) -> Manifest:
    return dataclasses.replace(
        manifest, encryption=dataclasses.replace(manifest.encryption, **changes)
    )


@pytest.mark.parametrize("level", LEVELS)
def test_tampered_metadata_breaks_the_signature(level: KeyWrapping) -> None:
    tampered = dataclasses.replace(sealed(level, "bob"), name="invoice.pdf")
    with pytest.raises(AccessError, match="does not verify"):
        verify_owner(tampered)
    with pytest.raises(AccessError):
        open_content_key(tampered, person("bob"))


@pytest.mark.parametrize("level", LEVELS)
def test_tampered_capsule_breaks_the_signature(level: KeyWrapping) -> None:
    manifest = sealed(level, "bob")
    capsules = list(manifest.encryption.capsules)
    victim = capsules[0]
    capsules[0] = dataclasses.replace(
        victim, wrapped_key=bytes([victim.wrapped_key[0] ^ 1]) + victim.wrapped_key[1:]
    )
    with pytest.raises(AccessError, match="does not verify"):
        verify_owner(with_encryption(manifest, capsules=tuple(capsules)))


@pytest.mark.parametrize("level", LEVELS)
def test_signature_by_the_wrong_key_is_refused(level: KeyWrapping) -> None:
    # Mallory signs Alice's manifest, keeping Alice's owner record.
    by_mallory = sealed(level, "bob", owner="mallory")
    forged = with_encryption(by_mallory, owner=record("alice"))
    with pytest.raises(AccessError, match="does not verify"):
        verify_owner(forged)


def test_quantum_resistant_needs_both_signatures() -> None:
    manifest = sealed(KeyWrapping.QUANTUM_RESISTANT, "bob")
    signature = manifest.encryption.signature
    broken = signature[:64] + bytes([signature[64] ^ 1]) + signature[65:]
    with pytest.raises(AccessError, match="ML-DSA"):
        verify_owner(with_encryption(manifest, signature=broken))


@pytest.mark.parametrize("level", LEVELS)
def test_capsule_relabelled_for_another_identity_does_not_open(level: KeyWrapping) -> None:
    # Mallory re-signs as herself a manifest where Bob's capsule claims to be
    # Carol's: the signature is now valid, but HPKE binds the recipient ID.
    manifest = sealed(level, "bob", owner="mallory")
    bob_id, carol_id = person("bob").identity_id, person("carol").identity_id
    relabelled = tuple(
        sorted(
            (
                dataclasses.replace(c, recipient_id=carol_id) if c.recipient_id == bob_id else c
                for c in manifest.encryption.capsules
            ),
            key=lambda c: c.recipient_id,
        )
    )
    resigned = _resign(with_encryption(manifest, capsules=relabelled), "mallory")
    with pytest.raises(AccessError, match="does not open"):
        open_content_key(resigned, person("carol"))


@pytest.mark.parametrize("level", LEVELS)
def test_capsule_moved_into_another_manifest_does_not_open(level: KeyWrapping) -> None:
    # The same recipients and key, but other content: the context differs.
    original = sealed(level, "bob", owner="mallory")
    other = dataclasses.replace(original, description="another file")
    resigned = _resign(other, "mallory")
    with pytest.raises(AccessError, match="does not open"):
        open_content_key(resigned, person("bob"))


def test_owner_record_that_is_not_an_identity_record_is_refused() -> None:
    manifest = with_encryption(sealed(KeyWrapping.STANDARD), owner=os.urandom(200))
    with pytest.raises(AccessError, match="manifest owner"):
        verify_owner(manifest)


def test_capability_only_manifest_has_no_capsule_to_open() -> None:
    with pytest.raises(NoCapsule, match="capability"):
        open_content_key(capability_manifest(), person("alice"))


def _resign(manifest: Manifest, owner: str) -> Manifest:
    from node.access import _signed

    capsules: tuple[KeyCapsule, ...] = manifest.encryption.capsules
    return _signed(manifest, capsules, person(owner), record(owner))


def test_dht_refuses_a_manifest_whose_signature_fails() -> None:
    from node.records.validators import ManifestValidator, RecordInvalid, blob_key

    good = encode_manifest(sealed(KeyWrapping.STANDARD, "bob"))
    forged = encode_manifest(
        dataclasses.replace(decode_manifest(good), description="not what alice signed")
    )
    key = b"/zhtp/manifest/" + blob_key(good)[len(b"/zhtp/blob/") :]
    ManifestValidator().validate(key, good, 0)
    forged_key = b"/zhtp/manifest/" + blob_key(forged)[len(b"/zhtp/blob/") :]
    with pytest.raises(RecordInvalid, match="signature"):
        ManifestValidator().validate(forged_key, forged, 0)
