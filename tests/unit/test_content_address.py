"""Shard addresses, content IDs (CIDv1) and capability strings.

tests/vectors/content_address.json was made with py-cid and Python's base64
module, not with node/content/address.py; py-cid is also used here as an
independent parser of every CID we write.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import blake3
import cid  # type: ignore[import-untyped]
import multihash  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.content.address import (
    CID_CODEC_PROTOBUF,
    DIGEST_SIZE,
    KEY_SIZE,
    MAX_REFERENCE_CHARS,
    MULTIHASH_BLAKE3,
    AddressError,
    Reference,
    format_capability,
    format_cid,
    parse_cid,
    parse_reference,
    shard_address,
)

# Hypothesis with a fixed seed per test and no per-example deadline: the same
# examples every run, however loaded the machine.
CHECK = settings(derandomize=True, deadline=None)
VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "content_address.json"

DIGEST = bytes(range(32))
KEY = bytes(range(100, 132))
KEY_TEXT = base64.urlsafe_b64encode(KEY).decode("ascii").rstrip("=")
CID = format_cid(DIGEST)
PREFIX = bytes([1, CID_CODEC_PROTOBUF, MULTIHASH_BLAKE3, DIGEST_SIZE])
BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

digests = st.binary(min_size=DIGEST_SIZE, max_size=DIGEST_SIZE)
keys = st.binary(min_size=KEY_SIZE, max_size=KEY_SIZE)


def base32_cid(raw: bytes) -> str:
    """Any bytes as a multibase 'b' string, for building hostile CIDs."""
    return "b" + base64.b32encode(raw).decode("ascii").rstrip("=").lower()


def py_cid(digest: bytes, codec: str = "protobuf", hash_name: str = "blake3") -> Any:
    return cid.make_cid(1, codec, multihash.encode(digest, hash_name))


def cid_error(text: str) -> str:
    with pytest.raises(AddressError) as info:
        parse_cid(text)
    return str(info.value)


def reference_error(text: str) -> AddressError:
    with pytest.raises(AddressError) as info:
        parse_reference(text)
    return info.value


def assert_no_secret(error: BaseException, secret: str) -> None:
    # Any 8-character run of the key text in a message would leak it.
    runs = [secret[i : i + 8] for i in range(len(secret) - 7)] or [secret]
    for text in (str(error), repr(error)):
        for run in filter(None, runs):
            assert run not in text
    assert error.__cause__ is None
    assert error.__context__ is None


# -- shard addresses -----------------------------------------------------------


def test_shard_address_is_blake3_256() -> None:
    assert shard_address(b"shard") == blake3.blake3(b"shard").digest()
    assert len(shard_address(b"")) == DIGEST_SIZE
    assert shard_address(b"a") != shard_address(b"b")


# -- CIDs: round trips and agreement with py-cid ---------------------------------


@CHECK
@given(digests)
def test_cid_round_trip(digest: bytes) -> None:
    text = format_cid(digest)
    assert parse_cid(text) == digest
    assert text.startswith("b") and text == text.lower()


@CHECK
@given(digests)
def test_cid_matches_py_cid(digest: bytes) -> None:
    assert format_cid(digest) == py_cid(digest).encode("base32").decode("ascii")


@CHECK
@given(digests)
def test_py_cid_parses_our_cid(digest: bytes) -> None:
    parsed = cid.from_string(format_cid(digest))
    assert parsed.version == 1
    assert parsed.codec == "protobuf"
    decoded = multihash.decode(parsed.multihash)
    assert decoded.name == "blake3"
    assert decoded.digest == digest
    cid.from_bytes_strict(parsed.buffer)  # no trailing bytes either


@pytest.mark.parametrize("length", [0, 20, 31, 33, 64])
def test_format_cid_rejects_wrong_digest_length(length: int) -> None:
    with pytest.raises(AddressError, match="32 bytes"):
        format_cid(b"\x00" * length)


# -- CIDs: golden vectors ----------------------------------------------------------


def _vectors(kind: str) -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(VECTORS.read_text())[kind]
    return vectors


@pytest.mark.parametrize("vector", _vectors("cids"), ids=[v["name"] for v in _vectors("cids")])
def test_cid_vector(vector: dict[str, Any]) -> None:
    digest = bytes.fromhex(vector["digest"])
    assert format_cid(digest) == vector["cid"]
    assert parse_cid(vector["cid"]) == digest
    assert parse_reference(vector["cid"]) == Reference(digest)
    assert py_cid(digest).encode("base32").decode("ascii") == vector["cid"]


@pytest.mark.parametrize(
    "vector", _vectors("capabilities"), ids=[v["name"] for v in _vectors("capabilities")]
)
def test_capability_vector(vector: dict[str, Any]) -> None:
    digest, key = bytes.fromhex(vector["digest"]), bytes.fromhex(vector["key"])
    assert format_capability(digest, key) == vector["capability"]
    assert parse_reference(vector["capability"]) == Reference(digest, key)


# -- CIDs: hostile input -----------------------------------------------------------


def test_empty_cid_rejected() -> None:
    assert "empty" in cid_error("")


def test_overlong_cid_rejected_before_decoding() -> None:
    assert "limit" in cid_error("b" + "a" * 200)


def test_cidv0_rejected() -> None:
    sha256 = multihash.encode(bytes(32), "sha2-256")
    text = cid.make_cid(0, "dag-pb", sha256).encode().decode("ascii")
    assert text.startswith("Qm")
    assert "CIDv0" in cid_error(text)


def test_base58_cidv1_rejected() -> None:
    text = py_cid(DIGEST).encode("base58btc").decode("ascii")
    assert "multibase prefix is 'z'" in cid_error(text)


def test_upper_case_base32_rejected() -> None:
    text = py_cid(DIGEST).encode("base32upper").decode("ascii")
    assert text.startswith("B")
    assert "multibase prefix is 'B'" in cid_error(text)


def test_base16_cid_rejected() -> None:
    assert "multibase prefix is 'f'" in cid_error("f" + (PREFIX + DIGEST).hex())


def test_base32_padding_rejected() -> None:
    assert "padding" in cid_error(CID + "======")


@pytest.mark.parametrize("bad", ["1", "8", "0", "A", " ", "é"])
def test_character_outside_base32_rejected(bad: str) -> None:
    text = CID[:10] + bad + CID[11:]
    assert f"contains {bad!r}" in cid_error(text)


@pytest.mark.parametrize("cut", [1, 3, 6])
def test_impossible_base32_length_rejected(cut: int) -> None:
    body = CID[1:]
    text = "b" + body[: len(body) - len(body) % 8 - 8 + cut]
    assert "impossible base32 length" in cid_error(text)


def test_non_zero_padding_bits_rejected() -> None:
    zero = format_cid(bytes(32))
    assert zero.endswith("a")
    # 36 bytes use 288 of the last character's 290 bits; 'b' sets a spare bit.
    assert "padding bits" in cid_error(zero[:-1] + "b")


def test_cid_with_nothing_after_the_prefix_rejected() -> None:
    assert "ends inside the CID version" in cid_error("b")


def test_cid_version_0_bytes_rejected() -> None:
    assert "CID version is 0" in cid_error(base32_cid(b"\x00" + PREFIX[1:] + DIGEST))


def test_cid_version_2_rejected() -> None:
    assert "CID version is 2" in cid_error(base32_cid(b"\x02" + PREFIX[1:] + DIGEST))


def test_non_minimal_varint_rejected() -> None:
    assert "not a minimal varint" in cid_error(base32_cid(b"\x81\x00" + PREFIX[1:] + DIGEST))


def test_overlong_varint_rejected() -> None:
    assert "longer than" in cid_error(base32_cid(b"\x01" + b"\xff" * 10 + DIGEST))


def test_cid_ending_inside_the_codec_rejected() -> None:
    assert "ends inside the CID codec" in cid_error(base32_cid(b"\x01"))


def test_raw_codec_rejected() -> None:
    text = py_cid(DIGEST, codec="raw").encode("base32").decode("ascii")
    assert "codec is raw (0x55)" in cid_error(text)


def test_dag_pb_codec_rejected() -> None:
    text = py_cid(DIGEST, codec="dag-pb").encode("base32").decode("ascii")
    assert "codec is dag-pb (0x70)" in cid_error(text)


def test_two_byte_codec_rejected() -> None:
    text = py_cid(DIGEST, codec="dag-json").encode("base32").decode("ascii")
    assert "codec is dag-json (0x129)" in cid_error(text)


def test_sha256_multihash_rejected() -> None:
    text = py_cid(DIGEST, hash_name="sha2-256").encode("base32").decode("ascii")
    assert "multihash function is sha2-256 (0x12)" in cid_error(text)


@pytest.mark.parametrize("length", [20, 31, 33, 64])
def test_wrong_digest_length_rejected(length: int) -> None:
    raw = PREFIX[:3] + bytes([length]) + b"\x07" * length
    assert f"digest length is {length}" in cid_error(base32_cid(raw))


def test_truncated_digest_rejected() -> None:
    assert "truncated: 31 of 32" in cid_error(base32_cid(PREFIX + DIGEST[:31]))


def test_trailing_bytes_rejected() -> None:
    assert "1 trailing bytes" in cid_error(base32_cid(PREFIX + DIGEST + b"\x00"))


# -- references: accepted forms ----------------------------------------------------


@CHECK
@given(digests, keys)
def test_capability_round_trip(digest: bytes, key: bytes) -> None:
    text = format_capability(digest, key)
    assert text == f"zhtp://{format_cid(digest)}#{text.rsplit('#', 1)[1]}"
    assert parse_reference(text) == Reference(digest, key)


def test_bare_cid_is_a_public_reference() -> None:
    reference = parse_reference(CID)
    assert reference == Reference(DIGEST)
    assert not reference.is_capability


def test_zhtp_link_is_a_public_reference() -> None:
    assert parse_reference(f"zhtp://{CID}") == Reference(DIGEST, None)


def test_capability_carries_the_key() -> None:
    reference = parse_reference(f"zhtp://{CID}#{KEY_TEXT}")
    assert reference.key == KEY
    assert reference.is_capability


def test_capability_key_is_unpadded_base64url() -> None:
    text = format_capability(DIGEST, KEY)
    assert text.endswith("#" + KEY_TEXT)
    assert len(KEY_TEXT) == 43 and "=" not in text


# -- references: hostile input -----------------------------------------------------


def test_empty_reference_rejected() -> None:
    assert "empty reference" in str(reference_error(""))


def test_overlong_reference_rejected() -> None:
    text = f"zhtp://{CID}#{KEY_TEXT}" + "A" * MAX_REFERENCE_CHARS
    error = reference_error(text)
    assert "limit" in str(error)
    assert_no_secret(error, KEY_TEXT)


def test_other_scheme_rejected() -> None:
    assert "scheme is 'https'" in str(reference_error(f"https://{CID}"))


def test_upper_case_scheme_rejected() -> None:
    assert "scheme is 'ZHTP'" in str(reference_error(f"ZHTP://{CID}#{KEY_TEXT}"))


def test_scheme_that_could_hold_a_key_is_not_quoted() -> None:
    error = reference_error(f"{CID}#{KEY_TEXT}://x")
    assert "scheme" in str(error)
    assert_no_secret(error, KEY_TEXT)


def test_key_on_a_bare_cid_rejected() -> None:
    error = reference_error(f"{CID}#{KEY_TEXT}")
    assert "must start with 'zhtp://'" in str(error)
    assert_no_secret(error, KEY_TEXT)


def test_reference_with_a_path_rejected() -> None:
    assert "path or query" in str(reference_error(f"zhtp://{CID}/report.pdf"))


def test_reference_with_a_query_rejected() -> None:
    assert "path or query" in str(reference_error(f"zhtp://{CID}?download=1"))


def test_bad_cid_inside_a_capability_rejected() -> None:
    error = reference_error(f"zhtp://{CID[:-1]}#{KEY_TEXT}")
    assert "content ID" in str(error)
    assert_no_secret(error, KEY_TEXT)


def test_empty_key_rejected() -> None:
    assert "empty key" in str(reference_error(f"zhtp://{CID}#"))


def test_padded_key_rejected() -> None:
    error = reference_error(f"zhtp://{CID}#{KEY_TEXT}=")
    assert "padding" in str(error)
    assert_no_secret(error, KEY_TEXT)


def test_standard_base64_plus_rejected() -> None:
    key_text = KEY_TEXT[:10] + "+" + KEY_TEXT[11:]
    error = reference_error(f"zhtp://{CID}#{key_text}")
    assert "base64url alphabet" in str(error)
    assert_no_secret(error, key_text)


def test_standard_base64_slash_rejected() -> None:
    key_text = KEY_TEXT[:10] + "/" + KEY_TEXT[11:]
    error = reference_error(f"zhtp://{CID}#{key_text}")
    assert "base64url alphabet" in str(error)
    assert_no_secret(error, key_text)


def test_key_with_a_second_fragment_rejected() -> None:
    error = reference_error(f"zhtp://{CID}#{KEY_TEXT}#{KEY_TEXT}")
    assert "base64url alphabet" in str(error)
    assert_no_secret(error, KEY_TEXT)


def test_short_key_rejected() -> None:
    key_text = KEY_TEXT[:-1]
    error = reference_error(f"zhtp://{CID}#{key_text}")
    assert "42 characters" in str(error)
    assert_no_secret(error, key_text)


def test_long_key_rejected() -> None:
    key_text = KEY_TEXT + "A"
    error = reference_error(f"zhtp://{CID}#{key_text}")
    assert "44 characters" in str(error)
    assert_no_secret(error, key_text)


def test_key_with_non_zero_padding_bits_rejected() -> None:
    # 43 characters carry 258 bits for 256: the last character's low 2 bits are spare.
    last = BASE64URL.index(KEY_TEXT[-1])
    assert last & 3 == 0
    key_text = KEY_TEXT[:-1] + BASE64URL[last | 1]
    error = reference_error(f"zhtp://{CID}#{key_text}")
    assert "padding bits" in str(error)
    assert_no_secret(error, key_text)


# -- keys never shown ----------------------------------------------------------------


def test_reference_repr_hides_the_key() -> None:
    reference = Reference(DIGEST, KEY)
    shown = [repr(reference), str(reference), f"{reference}", repr([reference])]
    for text in shown:
        assert "<hidden>" in text
        assert CID in text
        for secret in (KEY.hex(), KEY_TEXT, repr(KEY)[2:-1]):
            assert secret[:8] not in text


def test_public_reference_repr_says_no_key() -> None:
    assert repr(Reference(DIGEST)) == f"Reference(cid={CID!r}, key=None)"


def test_reference_rejects_wrong_digest_length() -> None:
    with pytest.raises(AddressError, match="digest is 32 bytes"):
        Reference(DIGEST[:31], KEY)


def test_reference_rejects_wrong_key_length_without_showing_it() -> None:
    with pytest.raises(AddressError, match="key is 32 bytes") as info:
        Reference(DIGEST, KEY[:31])
    assert_no_secret(info.value, KEY.hex())


@pytest.mark.parametrize("length", [0, 16, 31, 33])
def test_format_capability_rejects_wrong_key_length(length: int) -> None:
    key = KEY * 2
    with pytest.raises(AddressError, match="key is 32 bytes") as info:
        format_capability(DIGEST, key[:length])
    assert_no_secret(info.value, key[:length].hex())


def test_format_capability_rejects_wrong_digest_length() -> None:
    with pytest.raises(AddressError, match="digest is 32 bytes"):
        format_capability(DIGEST[:20], KEY)
