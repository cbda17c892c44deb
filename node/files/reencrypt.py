"""Re-encrypt a stored file under a fresh key: the data half of revocation.

A revoked reader may have kept the old content key, so a version they cannot
read needs new ciphertext, not just new capsules. The node reads the old
version (with its key) and streams it straight into a new put with a fresh
key, segment by segment, so memory stays bounded whatever the size. The old
version's shards are not touched: anyone who kept its capability or key can
still read it, and the caller must say so.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import trio

from node.content.manifest import Manifest
from node.files.failures import first_of
from node.files.get import GetFailed, read_file
from node.files.network import FileNetwork, ShardTransferError
from node.files.put import PutFailed, PutOptions, PutResult


async def reencrypt_file(
    net: FileNetwork,
    manifest: Manifest,
    key: bytes,
    options: PutOptions,
    store: Callable[[AsyncIterator[bytes], PutOptions], Awaitable[PutResult]],
) -> PutResult:
    """Store the plaintext of (`manifest`, `key`) again under a new key, through `store`."""
    send, receive = trio.open_memory_channel[bytes](1)
    read_completely = False

    async def produce() -> None:
        nonlocal read_completely
        async with send:
            await read_file(net, manifest, key, send.send)
            read_completely = True

    async def chunks() -> AsyncIterator[bytes]:
        async with receive:
            async for chunk in receive:
                yield chunk
        # The channel also closes when reading fails: never store a short copy.
        if not read_completely:
            raise PutFailed("reading the old version failed part-way")

    with first_of(GetFailed, PutFailed, ShardTransferError):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            result = await store(chunks(), options)
    if result.size != manifest.size:  # cannot happen unless read_file broke its promise
        raise PutFailed(f"re-encrypted {result.size} bytes of {manifest.size}")
    return result
