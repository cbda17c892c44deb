"""The keystore: a user identity's private keys in a passphrase-encrypted file.

Theory of operation
-------------------
The passphrase (UTF-8 of its NFC form, so the same words typed on another
system still open the file) goes through scrypt with a random salt; of the
48 bytes out, the first 32 are an AES-256-GCM key, the last 16 a *check*
value stored in the header. The GCM key encrypts `Identity.export_private_keys`
and authenticates the whole header as associated data.

The check value tells a wrong passphrase (check differs: `WrongPassphrase`)
from a damaged file (check matches but GCM refuses: `KeystoreError`). It
gives an attacker nothing GCM's tag would not: either costs one scrypt per
guess.

File format, version 1 (integers unsigned big-endian)::

    magic        8 bytes   b"zhtpkeys"
    version      1 byte    = 1
    log2(n)      1 byte    scrypt cost n = 2**log2(n)
    r            4 bytes   scrypt block size
    p            4 bytes   scrypt parallelism
    salt         16 bytes
    nonce        12 bytes  AES-GCM nonce
    identity id  32 bytes  of the identity inside (readable without the passphrase)
    check        16 bytes  scrypt output bytes 32..47
    --- end of header (94 bytes, all of it associated data) ---
    ciphertext   the private key export, then the 16-byte GCM tag

The scrypt parameters live in the file so they can be raised later without
breaking old files. Loading refuses parameters that would take more than
1 GiB of memory: a tampered header must not be able to exhaust the machine.

scrypt takes about a second at the default cost: async callers run these
functions in `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import hmac
import os
import stat
import struct
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from Crypto.Protocol.KDF import scrypt
from Crypto.Random import get_random_bytes
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from node.identity import Identity, format_identity_id
from node.storage.atomic import write_file_atomically

__all__ = [
    "DEFAULT_SCRYPT_PARAMS",
    "KEYSTORE_VERSION",
    "PASSPHRASE_ENV",
    "KeystoreError",
    "ScryptParams",
    "WrongPassphrase",
    "keystore_identity_id",
    "load_keystore",
    "resolve_passphrase",
    "save_keystore",
]

MAGIC = b"zhtpkeys"
KEYSTORE_VERSION = 1
PASSPHRASE_ENV = "ZHTP_PASSPHRASE"

_HEADER = struct.Struct(">8sBBII16s12s32s16s")
_SALT_SIZE = 16
_NONCE_SIZE = 12
_KEY_SIZE = 32
_CHECK_SIZE = 16
_TAG_SIZE = 16
# Far above any real keystore (~250 bytes); refuse to read a huge file.
_MAX_FILE_SIZE = 64 * 1024
# scrypt needs 128 * r * n bytes (times p when run in parallel, which we do
# not); cap it so a hostile header cannot make us allocate without bound.
_MAX_SCRYPT_MEMORY = 1 << 30
_MAX_SCRYPT_P = 16
# Owner read/write only; anything else is looser than 0600.
_PRIVATE_MODE = 0o600


class KeystoreError(Exception):
    """A keystore that cannot be used: damaged, unknown, unreadable or unsafe."""


class WrongPassphrase(KeystoreError):
    """The passphrase does not open this keystore."""

    def __init__(self) -> None:
        # Deliberately fixed: nothing about the passphrase or the key material.
        super().__init__("wrong passphrase for this keystore (or its header is damaged)")


@dataclass(frozen=True)
class ScryptParams:
    """scrypt cost parameters; `n` must be a power of two greater than 1."""

    n: int = 2**17
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if self.n < 2 or self.n & (self.n - 1):
            raise ValueError(f"scrypt n must be a power of two greater than 1, got {self.n}")
        if not 1 <= self.r < 2**32 or not 1 <= self.p <= _MAX_SCRYPT_P:
            raise ValueError(f"scrypt needs 1 <= r and 1 <= p <= {_MAX_SCRYPT_P}")
        if 128 * self.r * self.n > _MAX_SCRYPT_MEMORY:
            raise ValueError("scrypt parameters need more than 1 GiB of memory")

    @property
    def log2_n(self) -> int:
        return self.n.bit_length() - 1


DEFAULT_SCRYPT_PARAMS = ScryptParams()


def _passphrase_bytes(passphrase: str) -> bytes:
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _derive(passphrase: str, salt: bytes, params: ScryptParams) -> tuple[bytes, bytes]:
    """(AES key, check value) for `passphrase` under `salt` and `params`."""
    derived = scrypt(
        _passphrase_bytes(passphrase), salt, _KEY_SIZE + _CHECK_SIZE, params.n, params.r, params.p
    )
    return derived[:_KEY_SIZE], derived[_KEY_SIZE:]


def save_keystore(
    path: Path,
    identity: Identity,
    passphrase: str,
    *,
    kdf_params: ScryptParams = DEFAULT_SCRYPT_PARAMS,
) -> None:
    """Write `identity` to `path` (mode 0600, atomically), encrypted under `passphrase`."""
    if not passphrase:
        raise ValueError("refusing to encrypt a keystore with an empty passphrase")
    salt = get_random_bytes(_SALT_SIZE)
    nonce = get_random_bytes(_NONCE_SIZE)
    key, check = _derive(passphrase, salt, kdf_params)
    header = _HEADER.pack(
        MAGIC,
        KEYSTORE_VERSION,
        kdf_params.log2_n,
        kdf_params.r,
        kdf_params.p,
        salt,
        nonce,
        identity.identity_id,
        check,
    )
    ciphertext = AESGCM(key).encrypt(nonce, identity.export_private_keys(), header)
    write_file_atomically(path, header + ciphertext, mode=_PRIVATE_MODE)


def _read_private_file(path: Path) -> bytes:
    """The bytes of `path`, if only its owner may read or write it."""
    try:
        # O_NOFOLLOW: the mode we check is the file's own, not a symlink's target
        # swapped in between; fstat on the open file closes the check-then-read
        # gap. O_NONBLOCK: a FIFO planted under the name must not hang us.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        raise KeystoreError(f"cannot open keystore {path}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise KeystoreError(f"keystore {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & ~_PRIVATE_MODE:
            raise KeystoreError(
                f"keystore {path} has permissions {mode:04o}, looser than 0600; "
                f"refusing to use it. Run: chmod 600 {path}"
            )
        chunks = []
        size = 0
        while size <= _MAX_FILE_SIZE:
            chunk = os.read(fd, _MAX_FILE_SIZE + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > _MAX_FILE_SIZE:
        raise KeystoreError(f"keystore {path} is too large to be a keystore")
    return data


def _parse_header(path: Path, data: bytes) -> tuple[ScryptParams, bytes, bytes, bytes, bytes]:
    """(params, salt, nonce, identity id, check) from the header of `data`."""
    if len(data) < _HEADER.size:
        raise KeystoreError(f"keystore {path} is truncated")
    magic, version, log2_n, r, p, salt, nonce, identity_id, check = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise KeystoreError(f"{path} is not a ZHTP keystore")
    if version != KEYSTORE_VERSION:
        raise KeystoreError(
            f"keystore {path} has format version {version}; this program reads "
            f"version {KEYSTORE_VERSION}"
        )
    # Bound log2_n before computing 2**log2_n: 255 would still be cheap to
    # compute, but be explicit that nothing huge is ever built.
    if log2_n >= 32:
        raise KeystoreError(f"keystore {path} has invalid scrypt parameters")
    try:
        params = ScryptParams(n=1 << log2_n, r=r, p=p)
    except ValueError:
        raise KeystoreError(f"keystore {path} has invalid scrypt parameters") from None
    return params, salt, nonce, identity_id, check


def keystore_identity_id(path: Path) -> bytes:
    """The identity ID a keystore claims to hold, read without the passphrase.

    Unauthenticated until `load_keystore` succeeds: fit for display only.
    """
    data = _read_private_file(path)
    return _parse_header(path, data)[3]


def load_keystore(path: Path, passphrase: str) -> Identity:
    """The identity in the keystore at `path`.

    Raises WrongPassphrase if `passphrase` does not open it, KeystoreError if
    the file is missing, damaged, of an unknown version, or readable by others.
    """
    data = _read_private_file(path)
    params, salt, nonce, identity_id, check = _parse_header(path, data)
    if len(data) < _HEADER.size + _TAG_SIZE:
        raise KeystoreError(f"keystore {path} is truncated")
    key, expected_check = _derive(passphrase, salt, params)
    if not hmac.compare_digest(check, expected_check):
        raise WrongPassphrase()
    header, ciphertext = data[: _HEADER.size], data[_HEADER.size :]
    try:
        plaintext = AESGCM(key).decrypt(nonce, ciphertext, header)
    except InvalidTag:
        raise KeystoreError(f"keystore {path} is damaged (authentication failed)") from None
    try:
        identity = Identity.import_private_keys(plaintext)
    except ValueError:
        # Authenticated yet unreadable: written by something else; say no more.
        raise KeystoreError(f"keystore {path} holds keys in an unknown layout") from None
    if identity.identity_id != identity_id:
        raise KeystoreError(
            f"keystore {path} header names {format_identity_id(identity_id)} "
            "but holds another identity"
        )
    return identity


def resolve_passphrase(
    *,
    passphrase_file: Path | None,
    environ: Mapping[str, str],
    prompt: Callable[[], str],
) -> str:
    """The passphrase from, in order: `passphrase_file`, ZHTP_PASSPHRASE, `prompt()`.

    A passphrase file holds the passphrase; one trailing newline (``\n`` or
    ``\r\n``, as editors add) is not part of it. An empty passphrase from any source is refused.
    """
    if passphrase_file is not None:
        try:
            raw = passphrase_file.read_bytes()
        except OSError as error:
            raise KeystoreError(
                f"cannot read passphrase file {passphrase_file}: {error.strerror}"
            ) from None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            # The exception text would quote the secret's bytes: drop it.
            raise KeystoreError(f"passphrase file {passphrase_file} is not UTF-8") from None
        passphrase = text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
        source = f"passphrase file {passphrase_file}"
    elif PASSPHRASE_ENV in environ:
        passphrase = environ[PASSPHRASE_ENV]
        source = PASSPHRASE_ENV
    else:
        passphrase = prompt()
        source = "the prompt"
    if not passphrase:
        raise KeystoreError(f"empty passphrase from {source}")
    return passphrase
