"""``zhtp identity new|show|export-public|import-public``: the owner's identity, offline.

The private identity lives in ``<data dir>/identity.keystore`` (scrypt +
AES-GCM, mode 0600) and is opened only with its passphrase; its signed public
record sits beside it in ``identity.pub`` so showing and exporting need no
passphrase. Other people's identities, imported from the text form
``zhtp-identity:<base64url record>``, are kept verified in
``<data dir>/contacts/<identity id>.pub``; an older record never replaces a
newer one. Publishing records to the DHT and using identities for sharing
come with the rest of identity-based access control.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from node.identity import PublicIdentity

KEYSTORE_FILE = "identity.keystore"
PUBLIC_FILE = "identity.pub"
CONTACTS_DIR = "contacts"
TEXT_PREFIX = "zhtp-identity:"
MAX_TEXT = 32 << 10


class IdentityCommandError(Exception):
    """Printed as one line by the CLI."""


def _describe(record: bytes) -> dict[str, Any]:
    from node.identity import format_identity_id, verify_identity_record
    from node.records.validators import RecordInvalid

    try:
        public = verify_identity_record(record)
    except RecordInvalid as error:
        raise IdentityCommandError(f"not a valid identity record: {error.reason}") from None
    return {
        "identity": format_identity_id(public.identity_id),
        "name": public.name,
        "sequence": public.sequence,
        "post_quantum_signatures": public.mldsa_public_key is not None,
        "keys": {
            "ed25519": public.ed25519_public_key.hex(),
            "x25519": public.x25519_public_key.hex(),
            "x-wing": f"{len(public.xwing_public_key)} bytes",
        },
    }


def _passphrase(args: argparse.Namespace, *, confirm: bool) -> str:
    from node.keystore import KeystoreError, resolve_passphrase

    def prompt() -> str:
        if not sys.stdin.isatty():
            raise IdentityCommandError(
                "no passphrase: use --passphrase-file, ZHTP_PASSPHRASE, or a terminal"
            )
        first = getpass.getpass("passphrase: ")
        if confirm and getpass.getpass("again: ") != first:
            raise IdentityCommandError("the passphrases differ")
        return first

    file = Path(args.passphrase_file) if args.passphrase_file else None
    try:
        return resolve_passphrase(passphrase_file=file, environ=os.environ, prompt=prompt)
    except KeystoreError as error:
        raise IdentityCommandError(str(error)) from None


def cmd_new(args: argparse.Namespace) -> dict[str, Any]:
    from node.identity import Identity, make_identity_record
    from node.keystore import save_keystore
    from node.storage.atomic import write_file_atomically

    data_dir: Path = args.data_dir
    keystore = data_dir / KEYSTORE_FILE
    if keystore.exists() and not args.force:
        raise IdentityCommandError(
            f"{keystore} already holds an identity (--force replaces it; the old one is lost)"
        )
    passphrase = _passphrase(args, confirm=True)
    try:
        record_name = args.name
        identity = Identity.generate(with_mldsa=args.with_mldsa)
        record = make_identity_record(identity, name=record_name, sequence=1)
    except ValueError as error:
        raise IdentityCommandError(str(error)) from None
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    save_keystore(keystore, identity, passphrase)
    write_file_atomically(data_dir / PUBLIC_FILE, record, mode=0o644)
    return {**_describe(record), "keystore": str(keystore)}


def _own_record(args: argparse.Namespace) -> bytes:
    path = Path(args.data_dir) / PUBLIC_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise IdentityCommandError(
            f"no identity in {args.data_dir} (create one with `zhtp identity new`)"
        ) from None


def cmd_show(args: argparse.Namespace) -> dict[str, Any]:
    return _describe(_own_record(args))


def cmd_export(args: argparse.Namespace) -> dict[str, Any]:
    record = _own_record(args)
    info = _describe(record)
    text = TEXT_PREFIX + base64.urlsafe_b64encode(record).decode("ascii").rstrip("=")
    if args.output:
        Path(args.output).write_text(text + "\n")
        info["output"] = args.output
    else:
        info["text"] = text
    return info


def _stored_contact(path: Path) -> PublicIdentity | None:
    """The contact already stored at ``path``; None if absent or unreadable (replaced)."""
    from node.identity import verify_identity_record
    from node.records.validators import RecordInvalid

    try:
        return verify_identity_record(path.read_bytes())
    except (OSError, RecordInvalid):
        return None


def cmd_import(args: argparse.Namespace) -> dict[str, Any]:
    try:
        raw = sys.stdin.read(MAX_TEXT + 1) if args.file == "-" else Path(args.file).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise IdentityCommandError(f"cannot read {args.file}: {error}") from None
    text = raw.strip()
    if len(text) > MAX_TEXT or not text.startswith(TEXT_PREFIX):
        raise IdentityCommandError(f"not an exported identity (it starts with {TEXT_PREFIX})")
    body = text[len(TEXT_PREFIX) :]
    try:
        record = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise IdentityCommandError("the exported identity is not valid base64url") from None
    return _store_contact(args, record)


def _store_contact(args: argparse.Namespace, record: bytes) -> dict[str, Any]:
    from node.identity import format_identity_id, verify_identity_record
    from node.storage.atomic import write_file_atomically

    info = _describe(record)
    public = verify_identity_record(record)
    contacts = Path(args.data_dir) / CONTACTS_DIR
    path = contacts / f"{format_identity_id(public.identity_id)}.pub"
    known = _stored_contact(path)
    if known is not None and known.sequence > public.sequence:
        raise IdentityCommandError(
            f"already know a newer record of {info['identity']} "
            f"(sequence {known.sequence} > {public.sequence}); kept it"
        )
    contacts.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_file_atomically(path, record, mode=0o644)
    return {**info, "stored": str(path)}


def cmd_publish(args: argparse.Namespace) -> dict[str, Any]:
    """Store this identity's signed record in the DHT, where others can look it up."""
    from node.api.client import ApiClient
    from node.identity import identity_key, verify_identity_record
    from node.records.validators import format_key

    record = _own_record(args)
    info = _describe(record)
    key = format_key(identity_key(verify_identity_record(record).identity_id))
    with ApiClient(Path(args.data_dir)) as api:
        put = api.post_bytes("/api/v0/dht/put", record, key=key)
    return {**info, "accepted": put["accepted"], "target": put["target"]}


def cmd_lookup(args: argparse.Namespace) -> dict[str, Any]:
    """Find an identity by its ID in the DHT, verify it, and keep it as a contact."""
    from node.api.client import ApiClient, ApiFailed
    from node.identity import identity_key, parse_identity_id
    from node.records.validators import format_key

    try:
        wanted = parse_identity_id(args.identity)
    except ValueError as error:
        raise IdentityCommandError(str(error)) from None
    with ApiClient(Path(args.data_dir)) as api:
        try:
            record = api.get_bytes("/api/v0/dht/get", key=format_key(identity_key(wanted)))
        except ApiFailed as error:
            if error.status == 404:
                raise IdentityCommandError(f"no node has identity {args.identity}") from None
            raise
    return _store_contact(args, record)


def identity_text(info: dict[str, Any]) -> str:
    lines = [f"identity {info['identity']}", f"  name:     {info['name']}"]
    lines.append(f"  sequence: {info['sequence']}")
    pq = "ML-DSA-65 + Ed25519" if info["post_quantum_signatures"] else "Ed25519"
    lines.append(f"  signs with {pq}; receives keys over X25519 and X-Wing (ML-KEM-768)")
    if "accepted" in info:
        lines.append(f"  published: accepted by {info['accepted']} of {info['target']} nodes")
    for label in ("keystore", "stored", "output"):
        if label in info:
            lines.append(f"  {label}: {info[label]}")
    if "text" in info:
        lines.append(info["text"])
    return "\n".join(lines)


def add_identity_commands(
    commands: Any, common: argparse.ArgumentParser, make: Callable[..., Any], parser_class: Any
) -> None:
    """Register ``zhtp identity ...``; ``make(fn)`` adapts each to the CLI's conventions."""
    group = commands.add_parser("identity", help="your identity and others'", parents=[common])
    sub = group.add_subparsers(dest="identity_command", required=True, parser_class=parser_class)

    def command(name: str, fn: Callable[..., Any], help: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help, parents=[common])
        p.set_defaults(fn=make(fn))
        return p

    p = command("new", cmd_new, "create this node's owner identity (asks for a passphrase)")
    p.add_argument("--name", required=True, help="display name published with the identity")
    p.add_argument("--with-mldsa", action="store_true", help="also sign with ML-DSA-65")
    p.add_argument("--passphrase-file", help="read the passphrase from this file")
    p.add_argument("--force", action="store_true", help="replace an existing identity")
    command("show", cmd_show, "show this node's owner identity")
    p = command("export-public", cmd_export, "print the public identity for others to import")
    p.add_argument("-o", "--output", help="write it to this file")
    p = command("import-public", cmd_import, "remember someone's exported public identity")
    p.add_argument("file", help="the exported text (- for stdin)")
    command("publish", cmd_publish, "store this identity's record in the DHT (running node)")
    p = command("lookup", cmd_lookup, "find an identity by ID in the DHT and keep it as a contact")
    p.add_argument("identity", help="an identity ID (zid1...)")
