"""Identity-based access to a manifest: seal it for recipients, sign it, open it.

Theory of operation
-------------------
An encrypted file has one random content key. The node that stores the file
makes a capability-only manifest (no capsules) and hands the key to its
owner's client; the client, which alone holds the owner's private keys,
*seals* the manifest here:

1. one key capsule per recipient (node/content/capsules.py), the owner always
   among them, sorted by recipient ID. Each capsule's AEAD associated data is
   the *manifest context*: BLAKE3 of the manifest without capsules, owner and
   signature. So a capsule opens only in a manifest describing the same
   segments, metadata and level, and sharing (adding a capsule) leaves every
   existing capsule valid;
2. the owner's signed identity record goes in ``encryption.owner``;
3. the owner signs the manifest's encoding with an empty signature field:
   Ed25519 always, followed by ML-DSA-65 at ``quantum-resistant``, so that
   level stays authentic even against an adversary who can forge Ed25519.

A reader checks the signature (`verify_owner`) before trusting any capsule,
finds the capsule for its identity and opens it (`open_content_key`). The
content key never travels outside a capsule; a capability string
(``zhtp://<cid>#<key>``) still opens any encrypted manifest, as before.

Revocation cannot take back a key someone already opened: it re-encrypts the
content under a fresh key into a new version whose capsules leave the revoked
identity out (`seal` with the remaining recipients). Old versions stay
readable by whoever kept them.

Every failure is an `AccessError` whose message names what is wrong and never
holds key material.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import blake3
from Crypto.PublicKey import MLDSA
from Crypto.Signature import eddsa, mldsa

from node.content.capsules import (
    CapsuleError,
    KeyCapsule,
    find_capsule,
    unwrap_content_key,
    wrap_content_key,
)
from node.content.errors import ContentError
from node.content.manifest import (
    ED25519_SIGNATURE_SIZE,
    Encryption,
    EncryptionScheme,
    KeyWrapping,
    Manifest,
    encode_manifest,
    unsigned_encoding,
)
from node.identity import (
    Identity,
    PublicIdentity,
    format_identity_id,
    verify_identity_record,
)
from node.records.validators import RecordInvalid

__all__ = [
    "SIGNING_DOMAIN",
    "AccessError",
    "NoCapsule",
    "add_recipient",
    "manifest_context",
    "open_content_key",
    "recipient_ids",
    "seal",
    "verify_owner",
]

SIGNING_DOMAIN = b"zhtp-manifest-signature-v1\x00"
MLDSA_CONTEXT = b"zhtp-manifest-v1"
_CONTEXT_DOMAIN = b"zhtp-manifest-context-v1\x00"


class AccessError(ContentError, ValueError):
    """A manifest whose owner, signature or capsules cannot be trusted or used."""


class NoCapsule(AccessError):
    """The manifest has no capsule for the identity asking."""


def manifest_context(manifest: Manifest) -> bytes:
    """What every capsule of `manifest` is bound to (see the module doc)."""
    bare = dataclasses.replace(
        manifest,
        encryption=Encryption(
            scheme=manifest.encryption.scheme, key_wrapping=manifest.encryption.key_wrapping
        ),
    )
    return blake3.blake3(_CONTEXT_DOMAIN + unsigned_encoding(bare)).digest()


def recipient_ids(manifest: Manifest) -> tuple[bytes, ...]:
    return tuple(c.recipient_id for c in manifest.encryption.capsules)


def seal(
    manifest: Manifest,
    content_key: bytes,
    *,
    owner: Identity,
    owner_record: bytes,
    recipients: Iterable[PublicIdentity],
    key_wrapping: KeyWrapping,
) -> Manifest:
    """`manifest` with capsules for the owner and `recipients`, signed by `owner`.

    `owner_record` is the owner's published identity record; it must name
    `owner`'s keys. Quantum-resistant sealing needs an owner with ML-DSA.
    """
    if manifest.encryption.scheme is not EncryptionScheme.AES_256_GCM:
        raise AccessError("only encrypted content has a key to share")
    level = key_wrapping.capsule_level
    if level is None:
        raise AccessError("sealing needs the standard or quantum-resistant level")
    owner_public = _owner_identity(owner_record)
    if owner_public.identity_id != owner.identity_id:
        raise AccessError("the owner record belongs to another identity")
    if key_wrapping is KeyWrapping.QUANTUM_RESISTANT and not owner.has_mldsa:
        raise AccessError(
            "quantum-resistant content is signed with ML-DSA, and this identity has no "
            "ML-DSA key (zhtp identity new --with-mldsa)"
        )
    unsealed = dataclasses.replace(
        manifest,
        encryption=Encryption(scheme=EncryptionScheme.AES_256_GCM, key_wrapping=key_wrapping),
    )
    context = manifest_context(unsealed)
    by_id = {owner_public.identity_id: owner_public}
    for recipient in recipients:
        by_id[recipient.identity_id] = recipient
    capsules = tuple(_wrap(content_key, by_id[i], key_wrapping, context) for i in sorted(by_id))
    return _signed(unsealed, capsules, owner, owner_record)


def add_recipient(
    manifest: Manifest, content_key: bytes, *, owner: Identity, recipient: PublicIdentity
) -> Manifest:
    """A new version of `manifest` that `recipient` can open too (share).

    Existing capsules stay as they are: the context does not change.
    """
    owner_public = verify_owner(manifest)
    if owner_public is None or owner_public.identity_id != owner.identity_id:
        raise AccessError("only the owner of a manifest can share it")
    if recipient.identity_id in recipient_ids(manifest):
        raise AccessError(
            f"{format_identity_id(recipient.identity_id)} can already read this version"
        )
    key_wrapping = manifest.encryption.key_wrapping
    capsule = _wrap(content_key, recipient, key_wrapping, manifest_context(manifest))
    capsules = tuple(sorted((*manifest.encryption.capsules, capsule), key=lambda c: c.recipient_id))
    return _signed(manifest, capsules, owner, manifest.encryption.owner)


def verify_owner(manifest: Manifest) -> PublicIdentity | None:
    """The identity that signed `manifest`, or None for an unsigned one.

    AccessError if the owner record is bad or the signature does not verify
    with the owner's keys (at quantum-resistant, both signatures).
    """
    encryption = manifest.encryption
    if not encryption.owner:
        return None
    owner = _owner_identity(encryption.owner)
    payload = SIGNING_DOMAIN + unsigned_encoding(manifest)
    ed25519_signature = encryption.signature[:ED25519_SIGNATURE_SIZE]
    try:
        key = eddsa.import_public_key(owner.ed25519_public_key)
        eddsa.new(key, "rfc8032").verify(payload, ed25519_signature)
    except ValueError:
        raise AccessError("manifest signature does not verify with the owner's key") from None
    if encryption.key_wrapping is KeyWrapping.QUANTUM_RESISTANT:
        if owner.mldsa_public_key is None:
            raise AccessError("quantum-resistant manifest, but its owner has no ML-DSA key")
        mldsa_key = MLDSA.construct(param_set=MLDSA.ML_DSA_65, pk=owner.mldsa_public_key)
        try:
            mldsa.new(mldsa_key, MLDSA_CONTEXT).verify(
                payload, encryption.signature[ED25519_SIGNATURE_SIZE:]
            )
        except ValueError:
            raise AccessError("manifest ML-DSA signature does not verify") from None
    return owner


def open_content_key(manifest: Manifest, identity: Identity) -> bytes:
    """The content key, from `identity`'s capsule in a verified `manifest`."""
    verify_owner(manifest)
    level = manifest.encryption.key_wrapping.capsule_level
    if level is None:
        raise NoCapsule("this content has no key capsules: it opens with a capability only")
    capsule = find_capsule(manifest.encryption.capsules, identity.identity_id)
    if capsule is None:
        raise NoCapsule(
            f"no key capsule for {format_identity_id(identity.identity_id)}: "
            "the owner has not shared this version with you"
        )
    private_key = (
        identity.xwing_key
        if manifest.encryption.key_wrapping is KeyWrapping.QUANTUM_RESISTANT
        else identity.x25519_key
    )
    try:
        return unwrap_content_key(
            capsule,
            recipient_id=identity.identity_id,
            recipient_private_key=private_key,
            manifest_context=manifest_context(manifest),
        )
    except CapsuleError as error:
        raise AccessError(str(error)) from None


def _owner_identity(record: bytes) -> PublicIdentity:
    try:
        return verify_identity_record(record)
    except RecordInvalid as error:
        raise AccessError(f"manifest owner: {error.reason}") from None


def _wrap(
    content_key: bytes, recipient: PublicIdentity, key_wrapping: KeyWrapping, context: bytes
) -> KeyCapsule:
    level = key_wrapping.capsule_level
    assert level is not None  # callers pass a sealing level
    public_key = (
        recipient.xwing_public_key
        if key_wrapping is KeyWrapping.QUANTUM_RESISTANT
        else recipient.x25519_public_key
    )
    try:
        return wrap_content_key(
            content_key,
            recipient_id=recipient.identity_id,
            recipient_public_key=public_key,
            level=level,
            manifest_context=context,
        )
    except CapsuleError as error:
        raise AccessError(str(error)) from None


def _signed(
    manifest: Manifest, capsules: tuple[KeyCapsule, ...], owner: Identity, owner_record: bytes
) -> Manifest:
    encryption = manifest.encryption
    # The signed payload is the encoding with an empty signature field, so
    # the signature can be computed before it is placed.
    draft = dataclasses.replace(
        manifest,
        encryption=dataclasses.replace(
            encryption, capsules=capsules, owner=owner_record, signature=b""
        ),
    )
    payload = SIGNING_DOMAIN + unsigned_encoding(draft)
    signature = owner.sign_ed25519(payload)
    if encryption.key_wrapping is KeyWrapping.QUANTUM_RESISTANT:
        signature += owner.sign_mldsa(payload, context=MLDSA_CONTEXT)
    signed = dataclasses.replace(
        draft, encryption=dataclasses.replace(draft.encryption, signature=signature)
    )
    encode_manifest(signed)  # a manifest we could not publish is our bug: fail here
    return signed
