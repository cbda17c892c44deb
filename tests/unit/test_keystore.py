"""The passphrase-encrypted keystore and where its passphrase comes from.

Keystores here use scrypt n=2**4 so that hundreds of loads stay fast; the
cost parameters are read back from each file, so the code path is the same.
"""

from __future__ import annotations

import json
import os
import struct
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.identity import Identity
from node.keystore import (
    DEFAULT_SCRYPT_PARAMS,
    KeystoreError,
    ScryptParams,
    WrongPassphrase,
    keystore_identity_id,
    load_keystore,
    resolve_passphrase,
    save_keystore,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "identity" / "identities.json"

CHEAP = ScryptParams(n=2**4, r=8, p=1)
PASSPHRASE = "correct horse battery staple"
HEADER_SIZE = 94
CHECK_OFFSET, CHECK_SIZE = 78, 16
VERSION_OFFSET, LOG2_N_OFFSET, R_OFFSET = 8, 9, 10

ALICE = Identity.generate(with_mldsa=False)
CAROL_PQ = Identity.generate(with_mldsa=True)


def _saved(tmp_path: Path, identity: Identity = ALICE, name: str = "keystore") -> Path:
    path = tmp_path / name
    save_keystore(path, identity, PASSPHRASE, kdf_params=CHEAP)
    return path


def _write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def _same_identity(first: Identity, second: Identity) -> bool:
    return first.export_private_keys() == second.export_private_keys()


# -- round trips ------------------------------------------------------------------------


@pytest.mark.parametrize("identity", [ALICE, CAROL_PQ], ids=["classical", "mldsa"])
def test_keystore_round_trip(tmp_path: Path, identity: Identity) -> None:
    path = _saved(tmp_path, identity)
    assert _same_identity(load_keystore(path, PASSPHRASE), identity)
    assert keystore_identity_id(path) == identity.identity_id


@settings(max_examples=20, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_keystore_round_trip_any_passphrase(tmp_path_factory: Any, passphrase: str) -> None:
    path = tmp_path_factory.mktemp("ks") / "keystore"
    save_keystore(path, ALICE, passphrase, kdf_params=CHEAP)
    assert _same_identity(load_keystore(path, passphrase), ALICE)


def test_keystore_file_mode_is_0600(tmp_path: Path) -> None:
    assert _saved(tmp_path).stat().st_mode & 0o7777 == 0o600


def test_keystore_replaces_existing_file(tmp_path: Path) -> None:
    path = _saved(tmp_path, ALICE)
    save_keystore(path, CAROL_PQ, PASSPHRASE, kdf_params=CHEAP)
    assert _same_identity(load_keystore(path, PASSPHRASE), CAROL_PQ)


def test_default_scrypt_parameters() -> None:
    assert (DEFAULT_SCRYPT_PARAMS.n, DEFAULT_SCRYPT_PARAMS.r, DEFAULT_SCRYPT_PARAMS.p) == (
        2**17,
        8,
        1,
    )


def test_scrypt_parameters_are_stored_and_used_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    save_keystore(path, ALICE, PASSPHRASE, kdf_params=ScryptParams(n=2**5, r=4, p=2))
    data = path.read_bytes()
    assert data[LOG2_N_OFFSET] == 5
    assert struct.unpack_from(">II", data, R_OFFSET) == (4, 2)
    assert _same_identity(load_keystore(path, PASSPHRASE), ALICE)


def test_passphrase_is_normalized(tmp_path: Path) -> None:
    path = tmp_path / "keystore"
    save_keystore(path, ALICE, unicodedata.normalize("NFC", "café"), kdf_params=CHEAP)
    assert _same_identity(load_keystore(path, unicodedata.normalize("NFD", "café")), ALICE)


VECTOR_IDENTITIES: list[dict[str, Any]] = json.loads(VECTORS.read_text())["identities"]


@pytest.mark.parametrize("vector", VECTOR_IDENTITIES, ids=[v["name"] for v in VECTOR_IDENTITIES])
def test_keystore_vector_still_opens(tmp_path: Path, vector: dict[str, Any]) -> None:
    path = _write(tmp_path / "keystore", bytes.fromhex(vector["keystore"]))
    identity = load_keystore(path, vector["keystore_passphrase"])
    assert identity.identity_id.hex() == vector["identity_id"]
    seeds = vector["seeds"]
    exported = identity.export_private_keys()
    assert exported[2:34].hex() == seeds["ed25519_seed"]
    assert exported[34:66].hex() == seeds["x25519_seed"]
    assert exported[66:98].hex() == seeds["xwing_seed"]
    assert (exported[98:].hex() or None) == seeds["mldsa_seed"]


# -- refusing to save -------------------------------------------------------------------


def test_save_refuses_empty_passphrase(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="empty passphrase"):
        save_keystore(tmp_path / "keystore", ALICE, "", kdf_params=CHEAP)
    assert not (tmp_path / "keystore").exists()


@pytest.mark.parametrize(
    ("n", "r", "p"), [(0, 8, 1), (1, 8, 1), (3, 8, 1), (2**4, 0, 1), (2**4, 8, 0), (2**24, 8, 1)]
)
def test_scrypt_params_reject_bad_values(n: int, r: int, p: int) -> None:
    with pytest.raises(ValueError):
        ScryptParams(n=n, r=r, p=p)


# -- hostile or damaged files -----------------------------------------------------------


def test_wrong_passphrase(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    with pytest.raises(WrongPassphrase) as error:
        load_keystore(path, PASSPHRASE + "!")
    assert "wrong passphrase" in str(error.value)
    assert PASSPHRASE not in str(error.value)


def test_flipped_byte_anywhere_is_refused(tmp_path: Path) -> None:
    original = _saved(tmp_path).read_bytes()
    damaged = tmp_path / "damaged"
    for index in range(len(original)):
        for mask in (0x01, 0x80):
            data = bytearray(original)
            data[index] ^= mask
            _write(damaged, bytes(data))
            with pytest.raises(KeystoreError):
                load_keystore(damaged, PASSPHRASE)


def test_flipped_ciphertext_byte_is_damage_not_wrong_passphrase(tmp_path: Path) -> None:
    original = _saved(tmp_path).read_bytes()
    for index in range(HEADER_SIZE, len(original)):
        data = bytearray(original)
        data[index] ^= 0x01
        path = _write(tmp_path / "damaged", bytes(data))
        with pytest.raises(KeystoreError, match="damaged") as error:
            load_keystore(path, PASSPHRASE)
        assert not isinstance(error.value, WrongPassphrase)


def test_flipped_identity_id_in_header_is_damage(tmp_path: Path) -> None:
    data = bytearray(_saved(tmp_path).read_bytes())
    data[CHECK_OFFSET - 1] ^= 0x01  # last byte of the identity id
    path = _write(tmp_path / "damaged", bytes(data))
    with pytest.raises(KeystoreError, match="damaged") as error:
        load_keystore(path, PASSPHRASE)
    assert not isinstance(error.value, WrongPassphrase)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    original = _saved(tmp_path).read_bytes()
    for size in range(len(original)):
        path = _write(tmp_path / "truncated", original[:size])
        with pytest.raises(KeystoreError) as error:
            load_keystore(path, PASSPHRASE)
        assert not isinstance(error.value, WrongPassphrase)


def test_header_swapped_from_another_keystore_is_refused(tmp_path: Path) -> None:
    alice = _saved(tmp_path, ALICE, "alice").read_bytes()
    carol = _saved(tmp_path, CAROL_PQ, "carol").read_bytes()
    swapped = _write(tmp_path / "swapped", carol[:HEADER_SIZE] + alice[HEADER_SIZE:])
    with pytest.raises(KeystoreError, match="damaged"):
        load_keystore(swapped, PASSPHRASE)


def test_header_swapped_from_another_keystore_of_same_identity_is_refused(tmp_path: Path) -> None:
    first = _saved(tmp_path, ALICE, "first").read_bytes()
    second = _saved(tmp_path, ALICE, "second").read_bytes()
    swapped = _write(tmp_path / "swapped", second[:HEADER_SIZE] + first[HEADER_SIZE:])
    with pytest.raises(KeystoreError, match="damaged"):
        load_keystore(swapped, PASSPHRASE)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o700, 0o666])
def test_file_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = _saved(tmp_path)
    path.chmod(mode)
    with pytest.raises(KeystoreError, match=f"chmod 600 {path}") as error:
        load_keystore(path, PASSPHRASE)
    assert f"{mode:04o}" in str(error.value)


def test_owner_read_only_file_is_accepted(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    path.chmod(0o400)
    assert _same_identity(load_keystore(path, PASSPHRASE), ALICE)


def test_symlink_is_refused(tmp_path: Path) -> None:
    target = _saved(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(KeystoreError, match="cannot open"):
        load_keystore(link, PASSPHRASE)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="cannot open"):
        load_keystore(tmp_path / "absent", PASSPHRASE)


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeystoreError, match="not a regular file"):
        load_keystore(fifo, PASSPHRASE)


def test_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeystoreError):
        load_keystore(directory, PASSPHRASE)


def test_oversized_file_is_refused(tmp_path: Path) -> None:
    original = _saved(tmp_path).read_bytes()
    path = _write(tmp_path / "huge", original + bytes(64 * 1024))
    with pytest.raises(KeystoreError, match="too large"):
        load_keystore(path, PASSPHRASE)


def test_unknown_version_is_refused(tmp_path: Path) -> None:
    data = bytearray(_saved(tmp_path).read_bytes())
    data[VERSION_OFFSET] = 2
    path = _write(tmp_path / "future", bytes(data))
    with pytest.raises(KeystoreError, match="format version 2"):
        load_keystore(path, PASSPHRASE)


def test_wrong_magic_is_refused(tmp_path: Path) -> None:
    data = _saved(tmp_path).read_bytes()
    path = _write(tmp_path / "other", b"notakeys" + data[8:])
    with pytest.raises(KeystoreError, match="not a ZHTP keystore"):
        load_keystore(path, PASSPHRASE)


@pytest.mark.parametrize(
    ("log2_n", "r", "p"),
    [(40, 8, 1), (255, 8, 1), (0, 8, 1), (20, 2**31, 1), (4, 0, 1), (4, 8, 0), (4, 8, 2**31)],
)
def test_hostile_scrypt_parameters_are_refused_before_deriving(
    tmp_path: Path, log2_n: int, r: int, p: int
) -> None:
    data = bytearray(_saved(tmp_path).read_bytes())
    data[LOG2_N_OFFSET] = log2_n
    struct.pack_into(">II", data, R_OFFSET, r, p)
    path = _write(tmp_path / "hostile", bytes(data))
    with pytest.raises(KeystoreError, match="scrypt parameters"):
        load_keystore(path, PASSPHRASE)


# -- where the passphrase comes from ----------------------------------------------------


def _no_prompt() -> str:
    raise AssertionError("the prompt must not be used")


def test_passphrase_file_comes_first(tmp_path: Path) -> None:
    file = _write(tmp_path / "pass", b"from file\n")
    environ = {"ZHTP_PASSPHRASE": "from env"}
    assert resolve_passphrase(passphrase_file=file, environ=environ, prompt=_no_prompt) == (
        "from file"
    )


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"secret", "secret"), (b"secret\n", "secret"), (b"secret\r\n", "secret"), (b"a\n\n", "a\n")],
)
def test_passphrase_file_loses_one_trailing_newline(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    file = _write(tmp_path / "pass", content)
    assert resolve_passphrase(passphrase_file=file, environ={}, prompt=_no_prompt) == expected


def test_environment_comes_before_prompt() -> None:
    environ = {"ZHTP_PASSPHRASE": "from env"}
    assert resolve_passphrase(passphrase_file=None, environ=environ, prompt=_no_prompt) == (
        "from env"
    )


def test_prompt_comes_last() -> None:
    assert resolve_passphrase(passphrase_file=None, environ={}, prompt=lambda: "typed") == "typed"


def test_empty_environment_passphrase_is_refused() -> None:
    with pytest.raises(KeystoreError, match="empty passphrase from ZHTP_PASSPHRASE"):
        resolve_passphrase(passphrase_file=None, environ={"ZHTP_PASSPHRASE": ""}, prompt=_no_prompt)


def test_empty_prompt_passphrase_is_refused() -> None:
    with pytest.raises(KeystoreError, match="empty passphrase from the prompt"):
        resolve_passphrase(passphrase_file=None, environ={}, prompt=lambda: "")


def test_empty_passphrase_file_is_refused(tmp_path: Path) -> None:
    file = _write(tmp_path / "pass", b"\n")
    with pytest.raises(KeystoreError, match="empty passphrase from passphrase file"):
        resolve_passphrase(passphrase_file=file, environ={}, prompt=_no_prompt)


def test_missing_passphrase_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeystoreError, match="cannot read passphrase file"):
        resolve_passphrase(passphrase_file=tmp_path / "absent", environ={}, prompt=_no_prompt)


def test_non_utf8_passphrase_file_does_not_leak_its_bytes(tmp_path: Path) -> None:
    file = _write(tmp_path / "pass", b"s3cr\xffet")
    with pytest.raises(KeystoreError, match="not UTF-8") as error:
        resolve_passphrase(passphrase_file=file, environ={}, prompt=_no_prompt)
    message = str(error.value) + repr(error.value)
    assert "s3cr" not in message and "xff" not in message
    assert error.value.__context__ is None or error.value.__suppress_context__


def test_nothing_reads_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZHTP_PASSPHRASE", "process env")
    assert resolve_passphrase(passphrase_file=None, environ={}, prompt=lambda: "typed") == "typed"
    assert os.environ["ZHTP_PASSPHRASE"] == "process env"
