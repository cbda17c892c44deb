"""File routes of the control API: put (streamed upload), get (streamed download), ls, stat.

Bodies stream in both directions, so a file of any size passes through the
API in bounded memory: the upload is consumed only as fast as segments are
stored, and the download is produced segment by segment. A capability holds
a secret key, so it travels in request bodies and responses, never in a URL
(URLs end up in logs and shell history).
"""

from __future__ import annotations

import base64
import json
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import trio

from node.access import AccessError, verify_owner
from node.content.address import (
    AddressError,
    Reference,
    format_cid,
    parse_cid,
    parse_reference,
)
from node.content.errors import ContentError
from node.content.manifest import (
    MAX_MANIFEST_SIZE,
    EncryptionScheme,
    Manifest,
    ManifestError,
    decode_manifest,
    encode_manifest,
    manifest_id,
    manifest_record_key,
)
from node.content.segment import MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE
from node.files.deal_put import put_file_with_deals
from node.files.failures import first_of
from node.files.get import GetFailed, NotFound, read_file, resolve
from node.files.network import ShardTransferError
from node.files.put import PutFailed, PutOptions, PutResult, put_file
from node.files.reencrypt import reencrypt_file
from node.market_node import DealFailed
from node.storage.uploads import UploadEntry
from node.tiers import TIER_NAMES

if TYPE_CHECKING:
    from node.service import NodeService

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

MAX_JSON_BODY = 64 << 10
# Puts under deals encode into <data dir>/spool before any contract is made.
SPOOL_DIR = "spool"
# ASCII digits only (str.isdigit accepts "²"), and no more than fit a uint64.
_DECIMAL = re.compile(r"[0-9]{1,20}")


class FileApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def send_json(send: Send, data: object, status: int = 200) -> None:
    body = json.dumps(data).encode() + b"\n"
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _body_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise FileApiError(400, "the client went away during the upload")
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


async def _raw_body(receive: Receive, limit: int) -> bytes:
    raw = bytearray()
    async for chunk in _body_chunks(receive):
        raw += chunk
        if len(raw) > limit:
            raise FileApiError(413, "request body too large")
    return bytes(raw)


async def _json_body(receive: Receive) -> dict[str, Any]:
    raw = await _raw_body(receive, MAX_JSON_BODY)
    try:
        data = json.loads(bytes(raw) or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FileApiError(400, f"body is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise FileApiError(400, "body must be a JSON object")
    return data


def _reference(text: object) -> Reference:
    if not isinstance(text, str):
        raise FileApiError(400, "ref must be a string (a CID or a zhtp:// capability)")
    try:
        return parse_reference(text.strip())
    except AddressError as error:
        raise FileApiError(400, str(error)) from error


def manifest_json(content_id: bytes, manifest: Manifest) -> dict[str, Any]:
    return {
        "cid": format_cid(content_id),
        "name": manifest.name,
        "size": manifest.size,
        "mime_type": manifest.mime_type,
        "tags": list(manifest.tags),
        "description": manifest.description,
        "created": manifest.created,
        "tier": manifest.tier.value,
        "segment_size": manifest.segment_size,
        "segments": len(manifest.segments),
        "codec": {"name": manifest.codec.name, "k": manifest.codec.k, "m": manifest.codec.m},
        "compression": manifest.compression,
        "compressed_segments": sum(1 for s in manifest.segments if s.compressed),
        "stored_bytes": sum(s.shard_size * len(s.shard_addresses) for s in manifest.segments),
        "encryption": manifest.encryption.scheme.value,
        "level": manifest.level,
        "readers": len(manifest.encryption.capsules),
    }


def _put_options(node: NodeService, scope: Scope) -> PutOptions:
    query = parse_qs(scope.get("query_string", b"").decode("utf-8", "replace"))

    def one(name: str, default: str = "") -> str:
        values = query.get(name)
        return values[-1] if values else default

    tier = one("tier", node.config.default_tier)
    if tier not in TIER_NAMES:
        raise FileApiError(400, f"unknown tier {tier!r} (known: {', '.join(TIER_NAMES)})")
    size_text = one("size")
    if size_text and not _DECIMAL.fullmatch(size_text):
        raise FileApiError(400, "size must be a non-negative integer")
    segment_text = one("segment_size")
    segment_size = node.config.segment_size
    if segment_text:
        if not _DECIMAL.fullmatch(segment_text) or not (
            MIN_SEGMENT_SIZE <= int(segment_text) <= MAX_SEGMENT_SIZE
        ):
            raise FileApiError(
                400, f"segment_size must be {MIN_SEGMENT_SIZE}..{MAX_SEGMENT_SIZE} bytes"
            )
        segment_size = int(segment_text)
    return PutOptions(
        policy=node.config.policy(tier),
        segment_size=segment_size,
        name=one("name"),
        mime_type=one("mime"),
        tags=tuple(query.get("tag", [])),
        description=one("description"),
        public=one("public") in ("1", "true", "yes"),
        publish=one("seal") not in ("1", "true", "yes"),
        size_hint=int(size_text) if size_text else None,
        segment_size_fixed=bool(segment_text),
    )


# How many cut-short downloads keep their reason for the client to ask.
REMEMBERED_FAILURES = 64
REQUEST_ID_HEADER = b"x-zhtp-request"


class FileRoutes:
    def __init__(self, node: NodeService) -> None:
        self.node = node
        # Once a download's status line is out, an error can only cut the
        # body short; its reason waits here for the client to ask for it.
        self.failures: OrderedDict[str, str] = OrderedDict()

    def _remember_failure(self, scope: Scope, reason: str) -> None:
        request_id = dict(scope.get("headers", [])).get(REQUEST_ID_HEADER)
        if not request_id:
            return
        self.failures[request_id.decode("latin-1")[:64]] = reason
        while len(self.failures) > REMEMBERED_FAILURES:
            self.failures.popitem(last=False)

    def routes(self) -> dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]]:
        return {
            ("POST", "/api/v0/put"): self.put,
            ("POST", "/api/v0/get"): self.get,
            ("POST", "/api/v0/stat"): self.stat,
            ("GET", "/api/v0/ls"): self.ls,
            ("GET", "/api/v0/failure"): self.failure,
            ("POST", "/api/v0/repair"): self.repair,
            ("POST", "/api/v0/manifest"): self.manifest,
            ("POST", "/api/v0/publish"): self.publish,
            ("POST", "/api/v0/reencrypt"): self.reencrypt,
        }

    async def manifest(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The manifest itself, for a client that checks and opens it with its own keys."""
        ref = _reference((await _json_body(receive)).get("ref"))
        manifest = await self._resolve_any(ref)
        # Re-encoding gives back the exact bytes: decoding accepted only the
        # canonical encoding, whose hash is the CID.
        encoded = encode_manifest(manifest)
        await send_json(
            send,
            {"cid": format_cid(ref.digest), "manifest": base64.b64encode(encoded).decode()},
        )

    async def publish(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Publish a manifest the owner's client sealed and signed (raw bytes body)."""
        encoded = await _raw_body(receive, MAX_MANIFEST_SIZE)
        try:
            manifest = decode_manifest(encoded)
            verify_owner(manifest)
        except (ManifestError, AccessError) as error:
            self.node.counters["files"].inc("publish_refused")
            raise FileApiError(422, str(error)) from error
        content_id = manifest_id(encoded)
        accepted = await self.node.files.publish_record(manifest_record_key(content_id), encoded)
        if accepted == 0:
            raise FileApiError(502, "no node accepted the manifest record")
        entry = UploadEntry(
            content_id=content_id,
            name=manifest.name,
            size=manifest.size,
            created=manifest.created,
            tier=manifest.tier.value,
            public=manifest.encryption.scheme is EncryptionScheme.NONE,
            capability=None,
            tags=manifest.tags,
        )
        await trio.to_thread.run_sync(lambda: self.node.uploads.record(entry))
        await send_json(
            send,
            {"cid": format_cid(content_id), "manifest_holders": accepted, "level": manifest.level},
        )

    async def reencrypt(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Store a file again under a fresh key, unpublished, for the owner to seal (revoke)."""
        ref = _reference((await _json_body(receive)).get("ref"))
        if ref.key is None:
            raise FileApiError(400, "re-encrypting needs the current key (a capability)")
        manifest = await self._resolve(ref)
        options = PutOptions(
            policy=self.node.config.policy(manifest.tier.value),
            segment_size=manifest.segment_size,
            segment_size_fixed=True,
            name=manifest.name,
            mime_type=manifest.mime_type,
            tags=manifest.tags,
            description=manifest.description,
            size_hint=manifest.size,
            publish=False,
        )
        try:
            result = await reencrypt_file(self.node.files, manifest, ref.key, options, self._store)
        except (PutFailed, GetFailed, ShardTransferError) as error:
            raise FileApiError(502, str(error)) from error
        await send_json(send, put_json(result))

    async def repair(self, scope: Scope, receive: Receive, send: Send) -> None:
        ref = _reference((await _json_body(receive)).get("ref"))
        try:
            report = await self.node.repair(ref.digest)
        except NotFound as error:
            raise FileApiError(404, str(error)) from error
        except ContentError as error:  # includes ManifestError
            raise FileApiError(422, str(error)) from error
        await send_json(
            send,
            {
                "cid": format_cid(ref.digest),
                "segments": report.segments,
                "shards_checked": report.shards_checked,
                "shards_missing": report.shards_missing,
                "shards_rebuilt": report.shards_rebuilt,
                "failed_stores": report.failed_stores,
                "lost_segments": report.lost_segments,
                "healthy": report.healthy,
            },
        )

    async def failure(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("utf-8", "replace"))
        request_id = query.get("request", [""])[-1]
        reason = self.failures.pop(request_id, None)
        if reason is None:
            raise FileApiError(404, "no failure recorded for that request")
        await send_json(send, {"error": reason})

    async def put(self, scope: Scope, receive: Receive, send: Send) -> None:
        node = self.node
        options = _put_options(node, scope)
        try:
            # The body is read inside put_file's task group: a client that
            # goes away surfaces there, wrapped; unwrap it to one error.
            with first_of(FileApiError):
                result = await self._store(_body_chunks(receive), options)
        except (PutFailed, ShardTransferError) as error:
            node.counters["files"].inc("put_failed")
            raise FileApiError(502, str(error)) from error
        except ManifestError as error:
            # Name, tags, MIME type or description the manifest cannot carry.
            raise FileApiError(400, str(error)) from error
        node.counters["files"].inc("puts")
        if options.publish:  # else the sealed manifest is recorded when published
            await trio.to_thread.run_sync(lambda: node.uploads.record(_entry(result, options)))
        await send_json(send, put_json(result))

    async def _store(self, chunks: AsyncIterator[bytes], options: PutOptions) -> PutResult:
        """Store a file: as storage deals where holders require contracts, else directly."""
        node = self.node
        if not node.config.require_contracts:
            return await put_file(node.files, chunks, options)
        return await put_file_with_deals(
            node.files,
            node.market,
            chunks,
            options,
            node.config.data_dir / SPOOL_DIR,
            local_peer_id=node.peer_id.to_bytes(),
            deal_errors=(DealFailed,),
        )

    async def _resolve_any(self, ref: Reference) -> Manifest:
        """The manifest, whether or not ``ref`` carries the key it would need."""
        return await self._resolve(ref, need_key=False)

    async def _resolve(self, ref: Reference, *, need_key: bool = True) -> Manifest:
        try:
            return await resolve(self.node.files, ref, need_key=need_key)
        except NotFound as error:
            raise FileApiError(404, str(error)) from error
        except GetFailed as error:
            raise FileApiError(422, str(error)) from error

    async def get(self, scope: Scope, receive: Receive, send: Send) -> None:
        ref = _reference((await _json_body(receive)).get("ref"))
        manifest = await self._resolve(ref)
        try:
            await self._stream(manifest, ref.key, send, "application/octet-stream")
        except GetFailed as error:
            self.node.counters["files"].inc("get_failed")
            self._remember_failure(scope, str(error))
            raise

    async def _stream(
        self, manifest: Manifest, key: bytes | None, send: Send, content_type: str
    ) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode("latin-1", "replace")),
                    (b"content-length", str(manifest.size).encode()),
                    # Hex keeps any file name safe inside a header.
                    (b"x-zhtp-name", manifest.name.encode("utf-8").hex().encode()),
                    # Content comes from anyone and shares the API's origin: a
                    # browser must never run it as a page of that origin.
                    (b"content-security-policy", b"sandbox; default-src 'none'"),
                    (b"x-content-type-options", b"nosniff"),
                ],
            }
        )

        async def write(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        # Past this point the status line is sent: a failure can only cut the
        # body short, which the client detects from Content-Length.
        await read_file(self.node.files, manifest, key, write)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self.node.counters["files"].inc("gets")

    async def gateway(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``GET /zhtp/<cid>``: public content only; a capability never goes in a URL."""
        text = scope["path"].rsplit("/", 1)[-1]
        try:
            ref = Reference(parse_cid(text))
        except AddressError as error:
            raise FileApiError(400, str(error)) from error
        manifest = await self._resolve_any(ref)
        if manifest.encryption.scheme is not EncryptionScheme.NONE:
            raise FileApiError(
                403, "this content is encrypted; read it with `zhtp get <capability>`"
            )
        await self._stream(manifest, None, send, manifest.mime_type or "application/octet-stream")

    async def stat(self, scope: Scope, receive: Receive, send: Send) -> None:
        ref = _reference((await _json_body(receive)).get("ref"))
        manifest = await self._resolve_any(ref)
        info = manifest_json(ref.digest, manifest)
        if manifest.encryption.scheme is not EncryptionScheme.NONE and ref.key is None:
            info["note"] = "encrypted: reading it needs the capability"
        await send_json(send, info)

    async def ls(self, scope: Scope, receive: Receive, send: Send) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("utf-8", "replace"))
        show_caps = query.get("capabilities", ["0"])[-1] in ("1", "true")
        entries = await trio.to_thread.run_sync(self.node.uploads.list)
        await send_json(send, {"uploads": [entry_json(e, show_caps) for e in entries]})


def _entry(result: PutResult, options: PutOptions) -> UploadEntry:
    return UploadEntry(
        content_id=result.content_id,
        name=options.name,
        size=result.size,
        created=result.created,
        tier=options.policy.name,
        public=options.public,
        capability=result.capability,
        tags=options.tags,
    )


def put_json(result: PutResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cid": result.cid,
        "size": result.size,
        "segments": result.segments,
        "shards": result.shards,
        "shard_copies": result.shard_copies,
        "holders": result.distinct_holders,
        "under_replicated_segments": result.under_replicated_segments,
        "manifest_holders": result.manifest_holders,
        "seconds": round(result.seconds, 3),
        "contracts": result.contracts,
    }
    if result.capability is not None:
        out["capability"] = result.capability
    if result.unpublished_manifest is not None:
        out["unpublished_manifest"] = base64.b64encode(result.unpublished_manifest).decode()
    return out


def entry_json(entry: UploadEntry, show_capability: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "cid": format_cid(entry.content_id),
        "name": entry.name,
        "size": entry.size,
        "created": entry.created,
        "tier": entry.tier,
        "public": entry.public,
        "tags": list(entry.tags),
    }
    if show_capability and entry.capability is not None:
        out["capability"] = entry.capability
    return out
