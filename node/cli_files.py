"""``zhtp put``, ``get``, ``ls``, ``stat`` and ``repair``: files through a running node's API.

Bytes stream in both directions, so memory stays flat whatever the file size.
A progress bar with bytes/s goes to stderr when it is a terminal (never with
``--json``). ``get -o FILE`` writes beside FILE and renames only once every
byte has arrived and been verified by the node, so a failed get never leaves
a partial or corrupt file behind.
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, BinaryIO

import httpx

from node.api.client import ApiClient, ApiFailed
from node.storage.atomic import fsync_directory

READ_CHUNK = 1 << 20


class FileCommandError(Exception):
    """Printed as one line by the CLI."""


def _progress(
    args: argparse.Namespace, total: int | None, label: str
) -> AbstractContextManager[Any]:
    if args.json or not sys.stderr.isatty():
        return nullcontext(None)
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=None,
    )
    progress.add_task(label, total=total)
    return progress


def _advance(bar: Any, amount: int) -> None:
    if bar is not None:
        bar.advance(bar.task_ids[0], amount)


def _read_chunks(handle: BinaryIO, on_read: Callable[[int], None]) -> Iterator[bytes]:
    while chunk := handle.read(READ_CHUNK):
        on_read(len(chunk))
        yield chunk


def _human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} B"


def _check_metadata(name: str, mime: str, tags: tuple[str, ...], description: str) -> None:
    """Refuse metadata the manifest cannot carry before any byte is uploaded."""
    from node.content.manifest import (
        Codec,
        Encryption,
        EncryptionScheme,
        Manifest,
        ManifestError,
        Tier,
        encode_manifest,
    )

    probe = Manifest(
        size=0,
        segment_size=1 << 20,
        tier=Tier.WARM,
        codec=Codec(k=4, m=2),
        encryption=Encryption(scheme=EncryptionScheme.NONE),
        segments=(),
        name=name,
        mime_type=mime,
        tags=tags,
        description=description,
    )
    try:
        encode_manifest(probe)
    except ManifestError as error:
        raise FileCommandError(str(error)) from None


def _put_level(args: argparse.Namespace) -> str:
    if args.public and args.encryption not in (None, "none"):
        raise FileCommandError(f"--public stores unencrypted; it cannot be {args.encryption}")
    level: str = "none" if args.public else (args.encryption or "capability")
    if args.with_identity and level not in ("standard", "quantum-resistant"):
        raise FileCommandError(
            "--with shares through key capsules: add --encryption standard or quantum-resistant"
        )
    return level


def cmd_put(args: argparse.Namespace, client: ApiClient) -> dict[str, Any]:
    from node import cli_sharing

    level = _put_level(args)
    stdin = args.file == "-"
    path = Path(args.file)
    name = args.name if args.name is not None else ("" if stdin else path.name)
    tags = tuple(args.tag or ())
    sealed = level in cli_sharing.SEALED_LEVELS
    # Names and tags are published under the owner's identity when there is
    # one; sealing needs it. Unlock it (and find recipients) before uploading
    # anything, so a wrong passphrase or unknown recipient costs nothing.
    publishes = args.name is not None or bool(tags)
    owner = None
    if sealed or (publishes and cli_sharing.has_identity(args)):
        owner, owner_record = cli_sharing.load_owner(args)
    recipients = [
        cli_sharing.find_identity(args, client, text) for text in args.with_identity or ()
    ]
    try:
        handle: BinaryIO = sys.stdin.buffer if stdin else path.open("rb")
        size = None if stdin else os.fstat(handle.fileno()).st_size
    except OSError as error:
        raise FileCommandError(f"cannot read {args.file}: {error.strerror}") from error
    mime = args.mime or (mimetypes.guess_type(name)[0] if name else None) or ""
    _check_metadata(name, mime, tuple(args.tag or ()), args.description or "")
    params: list[tuple[str, str | int | bool]] = [("name", name), ("mime", mime)]
    params += [("tag", tag) for tag in args.tag or ()]
    if args.description:
        params.append(("description", args.description))
    if args.tier:
        params.append(("tier", args.tier))
    if args.public:
        params.append(("public", "1"))
    if sealed:
        params.append(("seal", "1"))
    if size is not None:
        params.append(("size", str(size)))
    with handle, _progress(args, size, "put") as bar:
        try:
            info: dict[str, Any] = client.upload(
                "/api/v0/put", _read_chunks(handle, lambda n: _advance(bar, n)), params
            )
        except OSError as error:
            raise FileCommandError(f"cannot read {args.file}: {error.strerror}") from error
    info["level"] = level
    if sealed:
        assert owner is not None
        published = cli_sharing.seal_and_publish(
            client,
            info,
            owner=owner,
            owner_record=owner_record,
            recipients=recipients,
            level=level,
        )
        # The key now lives only in capsules: neither printed nor in --json.
        for secret in ("capability", "unpublished_manifest"):
            info.pop(secret, None)
        info.update(
            cid=published["cid"],
            manifest_holders=published["manifest_holders"],
            readers=published["readers"],
        )
    if owner is not None:
        from node.content.address import parse_cid
        from node.identity import format_identity_id

        info["owner"] = format_identity_id(owner.identity_id)
        if args.name is not None and name:
            sequence = cli_sharing.publish_name(client, owner, name, info["cid"])
            info["name_record"] = {"name": f"{name}@{info['owner']}", "sequence": sequence}
        if tags:
            info["tags_indexed"] = cli_sharing.publish_tags(
                client, owner, tags, parse_cid(info["cid"])
            )
    return info


def put_text(info: dict[str, Any]) -> str:
    lines = [info.get("capability") or info["cid"]]
    lines.append(
        f"  {_human(info['size'])} in {info['segments']} segments, {info['shard_copies']} "
        f"shard copies on {info['holders']} nodes, {info['seconds']:.2f} s"
    )
    if info.get("contracts"):
        lines.append(
            f"  stored under {info['contracts']} storage contracts, escrow locked "
            "(zhtp market deals)"
        )
    if "readers" in info:
        lines.append(
            f"  {info['level']}: readable by {info['readers']} identities "
            f"(owner {info['owner']}); `zhtp get {info['cid']}` opens it with your identity"
        )
    if "name_record" in info:
        record = info["name_record"]
        lines.append(f"  name: {record['name']} (version {record['sequence']})")
    if "tags_indexed" in info:
        lines.append(f"  indexed under {info['tags_indexed']} tags")
    if info["under_replicated_segments"]:
        lines.append(
            f"  warning: {info['under_replicated_segments']} segments have fewer shards "
            "placed than planned (readable, with less margin)"
        )
    if "capability" in info:
        lines.append("  keep this capability: it is the only way to read the file")
    return "\n".join(lines)


def _failure_reason(client: ApiClient, request_id: str) -> str:
    try:
        return str(client.get_json("/api/v0/failure", request=request_id)["error"])
    except (ApiFailed, KeyError, TypeError):
        return "the node stopped sending (see its log)"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _ref_of(args: argparse.Namespace) -> str:
    if (args.ref is None) == (args.ref_file is None):
        raise FileCommandError("give a CID or capability, or --ref-file (one of the two)")
    if args.ref is not None:
        return str(args.ref)
    try:
        text = sys.stdin.read() if args.ref_file == "-" else Path(args.ref_file).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise FileCommandError(f"cannot read {args.ref_file}: {error}") from None
    return text.strip()


def cmd_get(args: argparse.Namespace, client: ApiClient) -> dict[str, Any]:
    request_id = uuid.uuid4().hex
    out_path = Path(args.output) if args.output else None
    if out_path is None and sys.stdout.isatty():
        # As curl does: file bytes would garble the terminal.
        raise FileCommandError("not writing file bytes to a terminal: use -o FILE or redirect")
    started = time.monotonic()
    received = 0
    temp: Path | None = None
    sink: BinaryIO | None = None
    try:
        from node.cli_sharing import open_reference

        ref = open_reference(args, client, _ref_of(args))
        with client.download(
            "/api/v0/get", {"ref": ref}, headers={"x-zhtp-request": request_id}
        ) as response:
            expected = int(response.headers.get("content-length", "0"))
            if out_path is not None:
                fd, name = tempfile.mkstemp(
                    dir=out_path.parent if str(out_path.parent) else ".", prefix=".zhtp-get-"
                )
                temp = Path(name)
                sink = os.fdopen(fd, "wb")
            out = sink if sink is not None else sys.stdout.buffer
            with _progress(args, expected, "get") as bar:
                try:
                    for chunk in response.iter_bytes(READ_CHUNK):
                        out.write(chunk)
                        received += len(chunk)
                        _advance(bar, len(chunk))
                except httpx.TransportError as error:  # cut off, reset, or silent too long
                    raise FileCommandError(
                        f"transfer cut short after {received} of {expected} bytes: "
                        f"{_failure_reason(client, request_id)}"
                    ) from error
            if received != expected:
                raise FileCommandError(
                    f"transfer cut short after {received} of {expected} bytes: "
                    f"{_failure_reason(client, request_id)}"
                )
            out.flush()
            if sink is not None and temp is not None and out_path is not None:
                os.fsync(sink.fileno())
                # mkstemp made it 0600; a finished file gets the user's usual mode.
                os.fchmod(sink.fileno(), 0o666 & ~_umask())
                sink.close()
                os.replace(temp, out_path)
                temp = None
                fsync_directory(out_path.parent if str(out_path.parent) else Path("."))
    except OSError as error:
        raise FileCommandError(f"cannot write the output: {error.strerror or error}") from error
    finally:
        if sink is not None and not sink.closed:
            sink.close()
        if temp is not None:
            temp.unlink(missing_ok=True)
    seconds = time.monotonic() - started
    info: dict[str, Any] = {"size": received, "seconds": round(seconds, 3)}
    if out_path is not None:
        info["output"] = str(out_path)
    return info


def get_text(info: dict[str, Any]) -> str:
    rate = info["size"] / info["seconds"] if info["seconds"] else 0.0
    return f"wrote {_human(info['size'])} to {info['output']} ({_human(rate)}/s)"


def ls_text(info: dict[str, Any]) -> str:
    uploads = info["uploads"]
    if not uploads:
        return "nothing put from this node yet"
    rows = []
    for u in uploads:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(u["created"]))
        access = "public" if u["public"] else "private"
        rows.append(
            f"{u['cid']}  {_human(u['size']):>10}  {when}  {u['tier']:<7} {access:<7} {u['name']}"
        )
        if "capability" in u:
            rows.append(f"  {u['capability']}")
    return "\n".join(rows)


def stat_text(info: dict[str, Any]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["created"]))
    codec = info["codec"]
    lines = [
        f"cid:          {info['cid']}",
        f"name:         {info['name'] or '(none)'}",
        f"size:         {info['size']} bytes ({_human(info['size'])})",
        f"type:         {info['mime_type'] or '(unknown)'}",
        f"created:      {when}",
        f"tier:         {info['tier']}",
        f"encryption:   {info['encryption']}",
        f"segments:     {info['segments']} of {_human(info['segment_size'])}, "
        f"{info['compressed_segments']} compressed ({info['compression']})",
        f"erasure code: {codec['name']} {codec['k']}+{codec['m']}",
        f"stored:       {_human(info['stored_bytes'])} in shards",
    ]
    if info["tags"]:
        lines.append(f"tags:         {', '.join(info['tags'])}")
    if info["description"]:
        lines.append(f"description:  {info['description']}")
    if "note" in info:
        lines.append(f"note:         {info['note']}")
    return "\n".join(lines)


def repair_text(info: dict[str, Any]) -> str:
    line = (
        f"{info['cid']}: {info['shards_checked']} shards checked, "
        f"{info['shards_missing']} without a holder, {info['shards_rebuilt']} rebuilt"
    )
    if info["lost_segments"]:
        lost = ", ".join(map(str, info["lost_segments"]))
        line += f"\n  segments that cannot be rebuilt (fewer than k shards left): {lost}"
    elif info["healthy"]:
        line += "\n  healthy"
    return line


def add_file_commands(
    command: Callable[..., argparse.ArgumentParser], run: Callable[..., Any]
) -> None:
    """Register the file commands; ``run(fn, text)`` adapts each to the CLI's conventions."""
    p = command(
        "put", run(cmd_put, put_text), "store a file on the network; prints its CID or capability"
    )
    p.add_argument("file", help="file to store (- for stdin)")
    p.add_argument(
        "--public", action="store_true", help="store unencrypted: the CID alone reads it"
    )
    p.add_argument("--tier", choices=["hot", "warm", "cold", "archive"], help="storage tier")
    p.add_argument("--tag", action="append", help="a tag (repeatable)")
    p.add_argument("--name", help="name recorded in the manifest (default: the file's name)")
    p.add_argument("--mime", help="MIME type (default: guessed from the name)")
    p.add_argument("--description", help="free-text description")
    p.add_argument(
        "--encryption",
        choices=["none", "capability", "standard", "quantum-resistant"],
        help="none = public; capability (default) = a zhtp://cid#key string reads it; "
        "standard / quantum-resistant = key capsules for your identity and --with identities "
        "(HPKE over X25519 / X-Wing; quantum-resistant also signs with ML-DSA)",
    )
    p.add_argument(
        "--with",
        dest="with_identity",
        action="append",
        metavar="IDENTITY",
        help="also let this identity (zid1...) read it (repeatable)",
    )
    p.add_argument("--passphrase-file", help="read your identity's passphrase from this file")
    p = command("get", run(cmd_get, get_text), "fetch a file by CID, NAME@OWNER or capability")
    p.add_argument(
        "ref",
        nargs="?",
        help="a CID, NAME@OWNER (a name record of identity OWNER), or a zhtp://<cid>#<key> "
        "capability",
    )
    p.add_argument("--passphrase-file", help="read your identity's passphrase from this file")
    p.add_argument(
        "--ref-file",
        help="read the CID or capability from this file (- for stdin), keeping the key "
        "out of shell history and the process list",
    )
    p.add_argument("-o", "--output", help="write to this file (default: stdout)")
    p = command(
        "ls",
        run(
            lambda a, c: c.get_json("/api/v0/ls", capabilities="1" if a.capabilities else "0"),
            ls_text,
        ),
        "list what this node has put",
    )
    p.add_argument(
        "--capabilities", action="store_true", help="also print each capability (secret)"
    )
    p = command(
        "stat",
        run(lambda a, c: c.post_json("/api/v0/stat", {"ref": a.ref}), stat_text),
        "show a file's manifest",
    )
    p.add_argument("ref", help="a CID or capability")
    from node import cli_sharing

    p = command(
        "share",
        run(cli_sharing.cmd_share, cli_sharing.share_text),
        "let another identity read a file: publishes a new version with their key capsule",
    )
    p.add_argument("ref", help="the CID or NAME@OWNER of a version you own")
    p.add_argument("--with", dest="with_identity", required=True, metavar="IDENTITY")
    p.add_argument("--passphrase-file", help="read your identity's passphrase from this file")
    p = command(
        "revoke",
        run(cli_sharing.cmd_revoke, cli_sharing.revoke_text),
        "re-encrypt a file under a fresh key into a new version another identity cannot read",
    )
    p.add_argument("ref", help="the CID or NAME@OWNER of a version you own")
    p.add_argument("--from", dest="from_identity", required=True, metavar="IDENTITY")
    p.add_argument("--passphrase-file", help="read your identity's passphrase from this file")
    p = command(
        "search",
        run(cli_sharing.cmd_search, cli_sharing.search_text),
        "find content by tag that you may read (name, size, owner, date)",
    )
    p.add_argument("tag")
    p = command(
        "repair",
        run(lambda a, c: c.post_json("/api/v0/repair", {"ref": a.ref}), repair_text),
        "check a file's shards; rebuild any that lost every holder (no key needed)",
    )
    p.add_argument("ref", help="a CID or capability")
