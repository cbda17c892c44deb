"""Noise (``/noise``) with buffered reads and batched sends; same bytes on the wire.

The handshake is py-libp2p's own (:class:`libp2p.security.noise.transport.Transport`);
only the session that carries data afterwards is replaced. Stock
py-libp2p's session reads every transport message with two exact socket
reads (2-byte length, then body) and sends each message with its own socket
send. :class:`NoiseSession` reads up to 256 KiB at a time and cuts messages
out of that buffer, and :meth:`NoiseSession.write_messages` encrypts several
messages and hands them to the socket in one send. Message framing, sizes
and the cipher state are unchanged, so either end can be stock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio
from cryptography.exceptions import InvalidTag
from libp2p.abc import IRawConnection, ISecureConn
from libp2p.io.exceptions import IncompleteReadError
from libp2p.peer.id import ID
from libp2p.security.noise.io import MAX_PLAINTEXT_LENGTH, NoiseTransportReadWriter
from libp2p.security.noise.transport import Transport
from libp2p.security.secure_session import SecureSession
from noise.connection import NoiseConnection  # type: ignore[import-untyped]
from noise.exceptions import NoiseInvalidMessage  # type: ignore[import-untyped]

logger = logging.getLogger(__name__)

# One socket read. Larger reads did not help on loopback; 2 bytes at a time
# (stock) costs a system call and a trio checkpoint per message half.
READ_SIZE = 256 * 1024
# Messages per socket send when one write spans several: ~256 KiB. Sends of
# 1 MiB measured slower than 256 KiB on loopback.
MESSAGES_PER_SEND = 4
LENGTH_PREFIX = 2


class NoiseSession(SecureSession):
    """A Noise transport session over a raw connection, read and written in bulk.

    ``read(None)`` returns the rest of the current message or the next whole
    message (what a frame parser wants); ``read(n)`` keeps stock semantics
    and returns exactly ``n`` bytes. A connection that ends raises
    :class:`IncompleteReadError`, like the stock session.
    """

    def __init__(
        self, handshaken: SecureSession, raw: IRawConnection, state: NoiseConnection
    ) -> None:
        super().__init__(
            local_peer=handshaken.local_peer,
            local_private_key=handshaken.local_private_key,
            remote_peer=handshaken.remote_peer,
            remote_permanent_pubkey=handshaken.remote_permanent_pubkey,
            is_initiator=handshaken.is_initiator,
            # Kept for address look-ups and close(), which the base class delegates to it.
            conn=handshaken.conn,
        )
        self._raw = raw
        # NoiseConnection.encrypt/decrypt accept only bytes objects, which would
        # cost a copy of every message cut from the receive buffer; the cipher
        # states they call take any buffer. Same nonces, same checks on them.
        self._encrypt = state.noise_protocol.cipher_state_encrypt.encrypt_with_ad
        self._decrypt = state.noise_protocol.cipher_state_decrypt.decrypt_with_ad
        self._received = b""  # ciphertext from the socket, from _received_pos on unparsed
        self._received_pos = 0
        self._plain = b""  # the current decrypted message, from _plain_pos on unread
        self._plain_pos = 0
        self._send_lock = trio.Lock()

    @classmethod
    def replace(cls, session: ISecureConn, raw: IRawConnection) -> ISecureConn:
        """This class in place of a stock Noise session fresh from its handshake."""
        if isinstance(session, SecureSession) and isinstance(
            session.conn, NoiseTransportReadWriter
        ):
            return cls(session, raw, session.conn.noise_state)
        return session

    # -- reading -----------------------------------------------------------

    async def read(self, n: int | None = None) -> bytes:
        if n == 0:
            return b""
        if n is None:
            if self._plain_pos < len(self._plain):
                return self._take_plain(len(self._plain) - self._plain_pos)
            return await self._next_message()
        parts: list[bytes] = []
        remaining = n
        while remaining:
            if self._plain_pos >= len(self._plain):
                self._plain = await self._next_message()
                self._plain_pos = 0
            part = self._take_plain(min(remaining, len(self._plain) - self._plain_pos))
            parts.append(part)
            remaining -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _take_plain(self, n: int) -> bytes:
        start = self._plain_pos
        self._plain_pos += n
        if start == 0 and n == len(self._plain):
            return self._plain
        return self._plain[start : start + n]

    async def _next_message(self) -> bytes:
        """Decrypt the next non-empty message, reading the socket only when needed."""
        while True:
            ciphertext = self._cut_message()
            if ciphertext is None:
                await self._receive_more()
                continue
            try:
                plaintext: bytes = self._decrypt(None, ciphertext)
            except InvalidTag as error:
                raise NoiseInvalidMessage("Failed authentication of message") from error
            if plaintext:
                return plaintext

    def _cut_message(self) -> memoryview | None:
        buffer, pos = self._received, self._received_pos
        if len(buffer) - pos < LENGTH_PREFIX:
            return None
        end = pos + LENGTH_PREFIX + int.from_bytes(buffer[pos : pos + LENGTH_PREFIX], "big")
        if end > len(buffer):
            return None
        self._received_pos = end
        return memoryview(buffer)[pos + LENGTH_PREFIX : end]

    async def _receive_more(self) -> None:
        chunk = await self._raw.read(READ_SIZE)
        leftover = len(self._received) - self._received_pos
        if not chunk:
            raise IncompleteReadError(
                "connection closed by peer",
                expected_bytes=leftover + 1,
                received_bytes=leftover,
            )
        # Usually the buffer is used up and the new chunk replaces it without
        # a copy; a partial message left over is joined to the new chunk.
        if leftover:
            self._received = b"".join((memoryview(self._received)[self._received_pos :], chunk))
        else:
            self._received = chunk
        self._received_pos = 0

    # -- writing -----------------------------------------------------------

    async def write(self, data: bytes) -> None:
        if len(data) <= MAX_PLAINTEXT_LENGTH:
            await self.write_messages((data,))
            return
        view = memoryview(data)
        messages = [
            view[start : start + MAX_PLAINTEXT_LENGTH]
            for start in range(0, len(view), MAX_PLAINTEXT_LENGTH)
        ]
        for first in range(0, len(messages), MESSAGES_PER_SEND):
            await self.write_messages(messages[first : first + MESSAGES_PER_SEND])

    async def write_messages(self, messages: Sequence[bytes | memoryview]) -> None:
        """Encrypt each item as one Noise message and send them all at once.

        Each item must be at most ``MAX_PLAINTEXT_LENGTH`` bytes.
        """
        async with self._send_lock:
            # Encrypting advances the nonce: from here on these bytes must
            # reach the socket, or the peer can never decrypt another message.
            # Checking for cancellation first makes the stock raw connection's
            # own checks pass in this same step.
            await trio.lowlevel.checkpoint_if_cancelled()
            out: list[bytes] = []
            for message in messages:
                ciphertext = self._encrypt(None, message)
                out.append(len(ciphertext).to_bytes(LENGTH_PREFIX, "big"))
                out.append(ciphertext)
            try:
                await self._raw.write(b"".join(out))
            except BaseException:
                # A send cut short leaves the peer's cipher state behind ours;
                # the connection can't carry another message, so end it now.
                with trio.CancelScope(shield=True):
                    await self._close_raw_quietly()
                raise

    async def _close_raw_quietly(self) -> None:
        try:
            await self._raw.close()
        except Exception as error:  # closing a broken socket may fail in several ways
            logger.debug("closing a broken Noise connection failed: %r", error)


class NoiseTransport(Transport):
    """py-libp2p's Noise (XX) transport whose sessions are :class:`NoiseSession`."""

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        return NoiseSession.replace(await super().secure_inbound(conn), conn)

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        return NoiseSession.replace(await super().secure_outbound(conn, peer_id), conn)
