"""Identity-based access from the command line: seal, open, share, revoke, names.

The node never holds its owner's private keys. The client (this module, in
the ``zhtp`` process) opens the keystore with the passphrase, and does every
operation that needs a private key itself:

- ``put --encryption standard|quantum-resistant``: the node stores the shards
  and returns the capability-only manifest and its key; the client seals it
  (capsules for the owner and each ``--with`` recipient), signs it and hands
  the signed manifest back to be published (node/access.py);
- ``get CID`` / ``get NAME@OWNER``: the client fetches the manifest, checks
  the owner's signature, opens its own capsule and passes the key to the
  node in the request body, as a capability would be;
- ``share`` adds a capsule to a new version; ``revoke`` has the node store
  the content again under a fresh key and seals the new version without the
  revoked identity. Both move the owner's name record to the new version.

Names: ``/zhtp/name/<owner zid>/<name>`` records point at the newest version's
CID; the owner signs each with a sequence one higher than the last.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from node.api.client import ApiClient, ApiFailed
from node.cli_files import FileCommandError

if TYPE_CHECKING:
    from node.content.manifest import KeyWrapping, Manifest
    from node.identity import Identity, PublicIdentity

# A name record lives this long unless its owner publishes it again.
NAME_LIFETIME_MS = 30 * 24 * 3600 * 1000
# A tag entry lives this long; re-tagging publishes it again.
TAG_LIFETIME_MS = 7 * 24 * 3600 * 1000
SEALED_LEVELS = ("standard", "quantum-resistant")


def key_wrapping(level: str) -> KeyWrapping:
    from node.content.manifest import KeyWrapping

    return KeyWrapping(level)


def has_identity(args: argparse.Namespace) -> bool:
    from node.cli_identity import KEYSTORE_FILE

    return (Path(args.data_dir) / KEYSTORE_FILE).exists()


def load_owner(args: argparse.Namespace) -> tuple[Identity, bytes]:
    """This node's owner identity (asks for the passphrase) and its public record."""
    from node.cli_identity import KEYSTORE_FILE, IdentityCommandError, _own_record, _passphrase
    from node.identity import verify_identity_record
    from node.keystore import KeystoreError, WrongPassphrase, load_keystore

    try:
        record = _own_record(args)
        passphrase = _passphrase(args, confirm=False)
    except IdentityCommandError as error:
        raise FileCommandError(str(error)) from None
    keystore = Path(args.data_dir) / KEYSTORE_FILE
    try:
        identity = load_keystore(keystore, passphrase)
    except WrongPassphrase:
        raise FileCommandError(f"wrong passphrase for {keystore}") from None
    except KeystoreError as error:
        raise FileCommandError(str(error)) from None
    if verify_identity_record(record).identity_id != identity.identity_id:
        raise FileCommandError("identity.pub does not belong to the identity in the keystore")
    return identity, record


def own_identity_id(args: argparse.Namespace) -> bytes | None:
    """This node's owner identity ID from its public record: no passphrase needed."""
    from node.cli_identity import PUBLIC_FILE
    from node.identity import verify_identity_record
    from node.records.validators import RecordInvalid

    try:
        return verify_identity_record((Path(args.data_dir) / PUBLIC_FILE).read_bytes()).identity_id
    except (OSError, RecordInvalid):
        return None


def find_identity(args: argparse.Namespace, api: ApiClient, text: str) -> PublicIdentity:
    """A recipient's public identity: from contacts, else looked up in the DHT (and kept)."""
    from node.cli_identity import CONTACTS_DIR, IdentityCommandError, _store_contact
    from node.identity import (
        format_identity_id,
        identity_key,
        parse_identity_id,
        verify_identity_record,
    )
    from node.records.validators import RecordInvalid, format_key

    try:
        wanted = parse_identity_id(text)
    except ValueError as error:
        raise FileCommandError(str(error)) from None
    path = Path(args.data_dir) / CONTACTS_DIR / f"{format_identity_id(wanted)}.pub"
    try:
        return verify_identity_record(path.read_bytes())
    except (OSError, RecordInvalid):
        pass
    try:
        record = api.get_bytes("/api/v0/dht/get", key=format_key(identity_key(wanted)))
    except ApiFailed as error:
        if error.status == 404:
            raise FileCommandError(
                f"unknown identity {text}: not in contacts and not published in the DHT "
                "(ask them for `zhtp identity export-public`, or to run `identity publish`)"
            ) from None
        raise
    try:
        public = verify_identity_record(record)
    except RecordInvalid as error:
        raise FileCommandError(f"identity record of {text} is invalid: {error.reason}") from None
    if public.identity_id != wanted:  # the validator checks this too; never trust one layer
        raise FileCommandError(f"the DHT returned another identity for {text}")
    # Refused only when we already know a newer record: that one is theirs too.
    with contextlib.suppress(IdentityCommandError):
        _store_contact(args, record)
    return public


def fetch_manifest(api: ApiClient, cid: str) -> tuple[bytes, Manifest]:
    """(digest, manifest) of a CID, checked against the CID and the owner's signature."""
    from node.access import AccessError, verify_owner
    from node.content.address import AddressError, parse_cid
    from node.content.manifest import ManifestError, decode_manifest, manifest_id

    try:
        digest = parse_cid(cid)
    except AddressError as error:
        raise FileCommandError(str(error)) from None
    info = api.post_json("/api/v0/manifest", {"ref": cid})
    try:
        encoded = base64.b64decode(info["manifest"], validate=True)
        if manifest_id(encoded) != digest:
            raise FileCommandError(f"the node returned a manifest that is not {cid}")
        manifest = decode_manifest(encoded)
        verify_owner(manifest)
    except (KeyError, TypeError, binascii.Error) as error:
        raise FileCommandError(f"the node sent a malformed manifest reply ({error})") from None
    except (ManifestError, AccessError) as error:
        raise FileCommandError(f"{cid}: {error}") from None
    return digest, manifest


# -- names ---------------------------------------------------------------------


def parse_name_ref(text: str) -> tuple[str, bytes] | None:
    """(name, owner identity ID) of ``NAME@zid1...``; None if `text` is not one."""
    from node.identity import parse_identity_id

    name, at, owner = text.rpartition("@")
    if not at or not name or not owner.startswith("zid1"):
        return None
    try:
        return name, parse_identity_id(owner)
    except ValueError as error:
        raise FileCommandError(str(error)) from None


def _current_name_record(api: ApiClient, key: bytes) -> Any:
    from node.records.names import NameRecord
    from node.records.validators import RecordInvalid, format_key

    try:
        value = api.get_bytes("/api/v0/dht/get", key=format_key(key))
    except ApiFailed as error:
        if error.status == 404:
            return None
        raise
    try:
        return NameRecord.decode(value)
    except RecordInvalid as error:
        raise FileCommandError(f"name record is invalid: {error.reason}") from None


def resolve_name(api: ApiClient, name: str, owner_id: bytes) -> str:
    """The CID a name currently points at."""
    from node.identity import format_identity_id
    from node.records.names import name_key_for

    try:
        key = name_key_for(owner_id, name)
    except ValueError as error:
        raise FileCommandError(str(error)) from None
    record = _current_name_record(api, key)
    if record is None:
        raise FileCommandError(f"no name {name!r} published by {format_identity_id(owner_id)}")
    try:
        return str(record.value.decode("ascii"))
    except UnicodeDecodeError:
        raise FileCommandError(f"name {name!r} does not point at a CID") from None


def publish_name(api: ApiClient, owner: Identity, name: str, cid: str) -> int:
    """Point ``name`` at ``cid``; returns the new sequence number."""
    from node.records.names import make_name_record, name_key_for
    from node.records.validators import format_key

    try:
        key = name_key_for(owner.identity_id, name)
    except ValueError as error:
        raise FileCommandError(str(error)) from None
    current = _current_name_record(api, key)
    sequence = 1 if current is None else current.sequence + 1
    now_ms = int(time.time() * 1000)
    key, value = make_name_record(
        owner, name, cid.encode("ascii"), sequence, now_ms + NAME_LIFETIME_MS
    )
    reply = api.post_bytes("/api/v0/dht/put", value, key=format_key(key))
    if not reply.get("accepted"):
        raise FileCommandError(f"no node accepted the name record for {name!r}")
    return sequence


def move_name_if_current(
    api: ApiClient, owner: Identity, manifest: Manifest, old_cid: str, new_cid: str
) -> str | None:
    """Move the owner's name for this object to the new version if it pointed at the old one."""
    from node.records.names import name_key_for

    if not manifest.name:
        return None
    try:
        key = name_key_for(owner.identity_id, manifest.name)
    except ValueError:
        return None  # a manifest name that is no valid record name was never published
    current = _current_name_record(api, key)
    if current is None or current.value != old_cid.encode("ascii"):
        return None
    publish_name(api, owner, manifest.name, new_cid)
    return manifest.name


# -- tags ----------------------------------------------------------------------


def publish_tags(api: ApiClient, owner: Identity, tags: tuple[str, ...], digest: bytes) -> int:
    """Index the content under each tag; returns how many tags were accepted."""
    from node.records.tags import encode_tag_index, make_tag_entry, tag_key
    from node.records.validators import format_key

    now_ms = int(time.time() * 1000)
    indexed = 0
    for tag in tags:
        try:
            entry = make_tag_entry(owner, tag, digest, now_ms, now_ms + TAG_LIFETIME_MS)
            key = tag_key(tag)
        except ValueError:
            continue  # the manifest accepted it, the index does not: stays unindexed
        reply = api.post_bytes("/api/v0/dht/put", encode_tag_index([entry]), key=format_key(key))
        indexed += 1 if reply.get("accepted") else 0
    return indexed


# -- sealing and opening ----------------------------------------------------------


def seal_and_publish(
    api: ApiClient,
    put_info: dict[str, Any],
    *,
    owner: Identity,
    owner_record: bytes,
    recipients: list[PublicIdentity],
    level: str,
) -> dict[str, Any]:
    """Seal the unpublished manifest of a put (or re-encryption) and publish it."""
    from node.access import AccessError, seal
    from node.content.address import parse_reference
    from node.content.manifest import ManifestError, decode_manifest, encode_manifest

    try:
        unsealed = decode_manifest(base64.b64decode(put_info["unpublished_manifest"]))
        key = parse_reference(put_info["capability"]).key
    except (KeyError, TypeError, binascii.Error, ManifestError, ValueError) as error:
        raise FileCommandError(f"the node sent a malformed put reply ({error})") from None
    assert key is not None
    try:
        sealed = seal(
            unsealed,
            key,
            owner=owner,
            owner_record=owner_record,
            recipients=recipients,
            key_wrapping=key_wrapping(level),
        )
    except AccessError as error:
        raise FileCommandError(str(error)) from None
    published: dict[str, Any] = api.post_bytes("/api/v0/publish", encode_manifest(sealed))
    published["readers"] = len(sealed.encryption.capsules)
    return published


def open_reference(args: argparse.Namespace, api: ApiClient, text: str) -> str:
    """What to send the node for `get`: a CID for public content, else a capability.

    A capability passes through; ``NAME@OWNER`` resolves to a CID; an
    identity-sealed CID is opened with this node's owner identity.
    """
    from node.access import AccessError, open_content_key
    from node.content.address import format_capability, format_cid
    from node.content.manifest import EncryptionScheme, KeyWrapping

    if "#" in text:
        return text
    named = parse_name_ref(text)
    cid = resolve_name(api, *named) if named else text.removeprefix("zhtp://")
    digest, manifest = fetch_manifest(api, cid)
    if manifest.encryption.scheme is EncryptionScheme.NONE:
        return format_cid(digest)
    if manifest.encryption.key_wrapping is KeyWrapping.CAPABILITY_ONLY:
        raise FileCommandError(
            f"{cid} is encrypted and shared by capability only: "
            "reading it needs zhtp://<cid>#<key> from whoever stored it"
        )
    if own_identity_id(args) is None:
        raise FileCommandError(
            f"{cid} is shared with identities, and this node has none (zhtp identity new)"
        )
    identity, _ = load_owner(args)
    try:
        key = open_content_key(manifest, identity)
    except AccessError as error:
        raise FileCommandError(f"{cid}: {error}") from None
    return format_capability(digest, key)


# -- share and revoke ----------------------------------------------------------------


def _owned_version(
    args: argparse.Namespace, api: ApiClient, text: str
) -> tuple[str, Any, Any, bytes, bytes]:
    """(cid, manifest, owner, owner record, content key) for a version the caller owns."""
    from node.access import AccessError, open_content_key, verify_owner
    from node.content.manifest import KeyWrapping

    named = parse_name_ref(text)
    cid = resolve_name(api, *named) if named else text.removeprefix("zhtp://")
    if "#" in cid:
        raise FileCommandError("give the CID or NAME@OWNER, not a capability")
    _, manifest = fetch_manifest(api, cid)
    if manifest.encryption.key_wrapping is KeyWrapping.CAPABILITY_ONLY:
        raise FileCommandError(
            f"{cid} has no identity access list (it was stored with --encryption "
            f"{manifest.level}); share its capability instead"
        )
    owner, record = load_owner(args)
    signer = verify_owner(manifest)
    if signer is None or signer.identity_id != owner.identity_id:
        raise FileCommandError(f"{cid} belongs to another identity: only its owner can change it")
    try:
        key = open_content_key(manifest, owner)
    except AccessError as error:
        raise FileCommandError(f"{cid}: {error}") from None
    return cid, manifest, owner, record, key


def cmd_share(args: argparse.Namespace, api: ApiClient) -> dict[str, Any]:
    from node.access import AccessError, add_recipient
    from node.content.address import parse_cid
    from node.content.manifest import encode_manifest
    from node.identity import format_identity_id

    cid, manifest, owner, _record, key = _owned_version(args, api, args.ref)
    recipient = find_identity(args, api, args.with_identity)
    try:
        shared = add_recipient(manifest, key, owner=owner, recipient=recipient)
    except AccessError as error:
        raise FileCommandError(str(error)) from None
    published = api.post_bytes("/api/v0/publish", encode_manifest(shared))
    moved = move_name_if_current(api, owner, manifest, cid, published["cid"])
    publish_tags(api, owner, manifest.tags, parse_cid(published["cid"]))
    return {
        "cid": published["cid"],
        "previous": cid,
        "shared_with": format_identity_id(recipient.identity_id),
        "shared_with_name": recipient.name,
        "readers": len(shared.encryption.capsules),
        "name": moved,
    }


def share_text(info: dict[str, Any]) -> str:
    lines = [
        info["cid"],
        f"  shared with {info['shared_with_name']} ({info['shared_with']}); "
        f"{info['readers']} identities can read this version",
    ]
    if info["name"]:
        lines.append(f"  name {info['name']!r} now points here")
    return "\n".join(lines)


def cmd_revoke(args: argparse.Namespace, api: ApiClient) -> dict[str, Any]:
    from node.access import recipient_ids
    from node.content.address import format_capability, parse_cid
    from node.identity import format_identity_id, parse_identity_id

    cid, manifest, owner, record, key = _owned_version(args, api, args.ref)
    try:
        revoked = parse_identity_id(args.from_identity)
    except ValueError as error:
        raise FileCommandError(str(error)) from None
    if revoked == owner.identity_id:
        raise FileCommandError("the owner cannot revoke their own access")
    readers = recipient_ids(manifest)
    if revoked not in readers:
        raise FileCommandError(f"{args.from_identity} cannot read {cid}: nothing to revoke")
    remaining = [
        find_identity(args, api, format_identity_id(reader))
        for reader in readers
        if reader not in (revoked, owner.identity_id)
    ]
    capability = format_capability(parse_cid(cid), key)
    # Re-storing the whole file takes as long as a put of it, with no bytes
    # in between: wait for it without the usual idle timeout.
    with ApiClient(Path(args.data_dir), timeout=None) as patient:
        reencrypted = patient.post_json("/api/v0/reencrypt", {"ref": capability})
    published = seal_and_publish(
        api,
        reencrypted,
        owner=owner,
        owner_record=record,
        recipients=remaining,
        level=manifest.level,
    )
    moved = move_name_if_current(api, owner, manifest, cid, published["cid"])
    publish_tags(api, owner, manifest.tags, parse_cid(published["cid"]))
    return {
        "cid": published["cid"],
        "previous": cid,
        "revoked": format_identity_id(revoked),
        "readers": published["readers"],
        "name": moved,
        "note": (
            f"the previous version {cid} is unchanged: anyone who kept it, or its key, "
            "can still read it"
        ),
    }


def revoke_text(info: dict[str, Any]) -> str:
    lines = [
        info["cid"],
        f"  re-encrypted under a fresh key without {info['revoked']}; "
        f"{info['readers']} identities can read this version",
    ]
    if info["name"]:
        lines.append(f"  name {info['name']!r} now points here")
    lines.append(f"  note: {info['note']}")
    return "\n".join(lines)


# -- search ----------------------------------------------------------------------


def cmd_search(args: argparse.Namespace, api: ApiClient) -> dict[str, Any]:
    """Content indexed under a tag that this identity may read."""
    from node.access import recipient_ids
    from node.content.address import format_cid
    from node.content.manifest import EncryptionScheme
    from node.identity import format_identity_id, verify_identity_record
    from node.records.tags import decode_tag_index, tag_key
    from node.records.validators import RecordInvalid, format_key

    try:
        key = tag_key(args.tag)
    except ValueError as error:
        raise FileCommandError(str(error)) from None
    try:
        value = api.get_bytes("/api/v0/dht/get", key=format_key(key))
    except ApiFailed as error:
        if error.status == 404:
            return {"tag": args.tag, "results": [], "hidden": 0, "unavailable": 0}
        raise
    try:
        entries = decode_tag_index(value)
    except RecordInvalid as error:
        raise FileCommandError(f"the tag index is invalid: {error.reason}") from None
    me = own_identity_id(args)
    results: list[dict[str, Any]] = []
    hidden = unavailable = 0
    for entry in sorted(entries, key=lambda e: e.published_ms, reverse=True):
        cid = format_cid(entry.content_id)
        try:
            _, manifest = fetch_manifest(api, cid)
        except (FileCommandError, ApiFailed):
            unavailable += 1  # gone, or not valid: an index entry is only a pointer
            continue
        owner_record = manifest.encryption.owner
        owner = verify_identity_record(owner_record) if owner_record else None
        # A signed manifest is listed only by its own owner: nobody can index
        # someone else's content as theirs. Unsigned (public) content is
        # listed under whoever tagged it.
        if owner is not None and owner.identity_id != entry.owner_id:
            unavailable += 1
            continue
        public = manifest.encryption.scheme is EncryptionScheme.NONE
        if not public and (me is None or me not in recipient_ids(manifest)):
            hidden += 1
            continue
        results.append(
            {
                "cid": cid,
                "name": manifest.name,
                "size": manifest.size,
                "owner": format_identity_id(entry.owner_id),
                "owner_name": owner.name if owner is not None else "",
                "created": manifest.created,
                "level": manifest.level,
            }
        )
    return {"tag": args.tag, "results": results, "hidden": hidden, "unavailable": unavailable}


def search_text(info: dict[str, Any]) -> str:
    results = info["results"]
    lines = [f"{len(results)} results for tag {info['tag']!r}"]
    for r in results:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
        owner = f"{r['owner_name'] or '?'} ({r['owner'][:16]}…)"
        lines.append(
            f"{r['cid']}  {r['size']:>12} B  {when}  {owner}  {r['level']:<17} {r['name']}"
        )
    if info["hidden"]:
        lines.append(f"  {info['hidden']} more are not shared with you")
    if info["unavailable"]:
        lines.append(f"  {info['unavailable']} entries point at content that is gone or invalid")
    return "\n".join(lines)
