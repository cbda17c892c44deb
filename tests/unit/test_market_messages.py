"""/zhtp/market/1.0.0 messages: round-trips, golden vectors, quote signatures, hostile input.

The golden bytes in tests/vectors/market/ were generated once from fixed
inputs and checked in. They are also checked against :func:`pb_message`, a
small protobuf writer that follows proto/market.proto's field numbers by
hand (proto3: default scalars omitted, the oneof member always present), so
the vectors do not rest on our encoder alone; the same writer builds the
hostile inputs, which our encoder refuses to produce.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import struct
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import ids
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.framing import encode_frame
from protocols.market import messages as m
from protocols.market.messages import (
    CONTRACT_ID_BYTES,
    DIGEST_BYTES,
    MAX_CHALLENGE_LEAVES,
    MAX_LEAF_BYTES,
    MAX_LINE_DETAIL_BYTES,
    MAX_LINE_KEY_BYTES,
    MAX_LINE_LABEL_BYTES,
    MAX_LINES,
    MAX_PARTY_ID_BYTES,
    MAX_PATH_LENGTH,
    MAX_PROOF_LEAF_BYTES,
    MAX_REASON_BYTES,
    MAX_SINT64,
    MAX_STATE_BYTES,
    MAX_TIER_BYTES,
    MAX_TRANSITION_BYTES,
    MAX_TRANSITIONS,
    MAX_UINT32,
    MAX_UINT64,
    MIN_SINT64,
    NONCE_BYTES,
    PUBLIC_KEY_BYTES,
    QUOTE_DOMAIN,
    QUOTE_ID_BYTES,
    SHARD_ADDRESS_BYTES,
    SIGNATURE_BYTES,
    AuditChallenge,
    AuditProof,
    ContractDeploy,
    ContractExecute,
    ContractQuery,
    ContractRecord,
    DeployResult,
    ExecuteResult,
    MarketRequest,
    MarketResponse,
    NotFound,
    PriceLine,
    ProofItem,
    Quote,
    QuoteRequest,
    Refused,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    quote_is_valid,
    quote_signing_bytes,
    sign_quote,
    verify_quote_signature,
)

# Hypothesis with a fixed seed per test: the same examples every run.
CHECK = settings(derandomize=True, deadline=None)
VECTOR_DIR = Path(__file__).resolve().parent.parent / "vectors" / "market"
MESSAGES = VECTOR_DIR / "messages.json"
SIGNATURE = VECTOR_DIR / "quote_signature.json"

# -- a tiny protobuf writer, by field number (proto/market.proto) ---------------

# message -> field -> (number, wire form); "message:X" nests X, "repeated:" repeats,
# "packed" is a repeated varint field written packed (proto3's default).
SCHEMA: dict[str, dict[str, tuple[int, str]]] = {
    "QuoteRequest": {
        "size_bytes": (1, "varint"),
        "duration_seconds": (2, "varint"),
        "tier": (3, "bytes"),
        "sla_requested": (4, "varint"),
        "client": (5, "bytes"),
    },
    "PriceLine": {
        "key": (1, "bytes"),
        "label": (2, "bytes"),
        "micro_tokens": (3, "zigzag"),
        "detail": (4, "bytes"),
    },
    "Quote": {
        "quote_id": (1, "bytes"),
        "provider": (2, "bytes"),
        "provider_public_key": (3, "bytes"),
        "size_bytes": (4, "varint"),
        "duration_seconds": (5, "varint"),
        "tier": (6, "bytes"),
        "sla_requested": (7, "varint"),
        "lines": (8, "repeated:message:PriceLine"),
        "total_micro_tokens": (9, "varint"),
        "valid_until_ms": (10, "varint"),
        "free_capacity_bytes": (11, "varint"),
        "signature": (12, "bytes"),
    },
    "ContractDeploy": {"terms": (1, "bytes"), "client_signature": (2, "bytes")},
    "DeployResult": {
        "accepted": (1, "varint"),
        "countersign": (2, "bytes"),
        "reason": (3, "bytes"),
    },
    "ContractQuery": {"contract_id": (1, "bytes")},
    "ContractRecord": {
        "terms": (1, "bytes"),
        "client_signature": (2, "bytes"),
        "transitions": (3, "repeated:bytes"),
        "state": (4, "bytes"),
        "sequence": (5, "varint"),
        "state_digest": (6, "bytes"),
        "replica": (7, "bytes"),
        "replica_signature": (8, "bytes"),
    },
    "NotFound": {},
    "ContractExecute": {"transition": (1, "bytes")},
    "ExecuteResult": {
        "accepted": (1, "varint"),
        "reason": (2, "bytes"),
        "sequence": (3, "varint"),
        "state_digest": (4, "bytes"),
    },
    "Refused": {"reason": (1, "bytes")},
    "AuditChallenge": {
        "contract_id": (1, "bytes"),
        "shard_address": (2, "bytes"),
        "nonce": (3, "bytes"),
        "leaf_indices": (4, "packed"),
    },
    "ProofItem": {"index": (1, "varint"), "leaf": (2, "bytes"), "path": (3, "repeated:bytes")},
    "AuditProof": {"nonce": (1, "bytes"), "items": (2, "repeated:message:ProofItem")},
}
# oneof field numbers of MarketRequest.body and MarketResponse.body
REQUEST_NUMBERS = {
    "QuoteRequest": 1,
    "ContractDeploy": 2,
    "ContractQuery": 3,
    "ContractExecute": 4,
    "AuditChallenge": 5,
}
RESPONSE_NUMBERS = {
    "Quote": 1,
    "DeployResult": 2,
    "ContractRecord": 3,
    "NotFound": 4,
    "ExecuteResult": 5,
    "Refused": 6,
    "AuditProof": 7,
}


def varint(value: int) -> bytes:
    """Protobuf's varint, all 64 bits (framing's lengths stop at 63)."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_varint(number: int, value: int) -> bytes:
    return varint(number << 3) + varint(value)


def field_bytes(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


def _scalar(number: int, form: str, value: Any) -> bytes:
    if form.startswith("message:"):
        return field_bytes(number, pb_message(form.removeprefix("message:"), value))
    if form == "bytes":
        data = value.encode() if isinstance(value, str) else value
        return field_bytes(number, data) if data else b""
    if form == "zigzag":
        value = value << 1 if value >= 0 else (-value << 1) - 1
    value = int(value)
    return field_varint(number, value) if value else b""


def pb_message(kind: str, fields: dict[str, Any]) -> bytes:
    """``fields`` (names of proto/market.proto) as protobuf, in field-number order."""
    out = b""
    for name, (number, form) in sorted(SCHEMA[kind].items(), key=lambda item: item[1][0]):
        if name not in fields:
            continue
        if form == "packed":
            if fields[name]:  # an empty packed list is omitted
                out += field_bytes(number, b"".join(varint(v) for v in fields[name]))
        elif form.startswith("repeated:"):
            inner = form.removeprefix("repeated:")
            for item in fields[name]:
                # Repeated elements are written even when empty.
                if inner == "bytes":
                    out += field_bytes(number, item)
                else:
                    out += _scalar(number, inner, item)
        else:
            out += _scalar(number, form, fields[name])
    return out


def fields_of(message: Any) -> dict[str, Any]:
    """A message's fields as a dict (nested messages as dicts too)."""
    return {
        f.name: (
            tuple(fields_of(x) for x in getattr(message, f.name))
            if f.name in ("lines", "items")
            else getattr(message, f.name)
        )
        for f in dataclasses.fields(message)
    }


def request_bytes(message: MarketRequest, **overrides: Any) -> bytes:
    kind = type(message).__name__
    inner = pb_message(kind, {**fields_of(message), **overrides})
    return field_bytes(REQUEST_NUMBERS[kind], inner)


def response_bytes(message: MarketResponse, **overrides: Any) -> bytes:
    kind = type(message).__name__
    inner = pb_message(kind, {**fields_of(message), **overrides})
    return field_bytes(RESPONSE_NUMBERS[kind], inner)


def remote_reason(decode: Callable[[bytes], object], data: bytes) -> str:
    with pytest.raises(RemoteProtocolError) as info:
        decode(data)
    reason: str = info.value.reason
    return reason


def local_reason(encode: Callable[[Any], bytes], message: Any) -> str:
    with pytest.raises(LocalProtocolError) as info:
        encode(message)
    reason: str = info.value.reason
    return reason


# -- fixed, valid messages ----------------------------------------------------------

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
PROVIDER = b"\x00\x24\x08\x01\x12\x20" + PUBLIC
CLIENT = b"\x00\x24\x08\x01\x12\x20" + b"\xc1" * 32
DIGEST = b"\x5d" * DIGEST_BYTES
SIG = b"\xa5" * SIGNATURE_BYTES

QUOTE_REQUEST = QuoteRequest(1 << 30, 86400, "warm", False, CLIENT)
DEPLOY = ContractDeploy(b"terms", SIG)
QUERY = ContractQuery(bytes(range(CONTRACT_ID_BYTES)))
EXECUTE = ContractExecute(b"transition")
UNSIGNED = Quote(
    quote_id=bytes(range(QUOTE_ID_BYTES)),
    provider=PROVIDER,
    provider_public_key=PUBLIC,
    size_bytes=1 << 30,
    duration_seconds=86400,
    tier="warm",
    sla_requested=False,
    lines=(PriceLine("base", "base storage", 100, "1 GiB, 1 day"), PriceLine("tier", "", -10)),
    total_micro_tokens=90,
    valid_until_ms=1_000_000,
    free_capacity_bytes=1 << 40,
)
QUOTE = sign_quote(UNSIGNED, KEY)
DEPLOY_RESULT = DeployResult(True, b"countersign")
RECORD = ContractRecord(b"terms", SIG, (b"t1", b"t2"), "active", 1, DIGEST, PROVIDER, SIG)
EXECUTE_RESULT = ExecuteResult(True, "", 2, DIGEST)
REFUSED = Refused("no capacity")
NONCE = bytes(range(0x40, 0x40 + NONCE_BYTES))
HASH = b"\x7e" * DIGEST_BYTES
AUDIT = AuditChallenge(bytes(range(CONTRACT_ID_BYTES)), b"\x5a" * 32, NONCE, (3, 0, 9))
PROOF = AuditProof(
    NONCE,
    (
        ProofItem(3, b"leaf 3", (HASH, HASH)),
        ProofItem(0, b"leaf 0", (HASH,)),
        ProofItem(9, b"", ()),
    ),
)

# -- round trips --------------------------------------------------------------------

UINT64 = st.integers(min_value=0, max_value=MAX_UINT64)
POSITIVE = st.integers(min_value=1, max_value=MAX_UINT64)


def text(low: int, high: int) -> st.SearchStrategy[str]:
    """Text of ``low``..``high`` UTF-8 bytes (a character is at most 4 bytes)."""
    return st.text(min_size=low, max_size=high // 4)


def blob(low: int, high: int | None = None) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=low, max_size=low if high is None else high)


party_ids = blob(1, MAX_PARTY_ID_BYTES)
signatures = blob(SIGNATURE_BYTES)
tiers = text(1, MAX_TIER_BYTES)

quote_requests = st.builds(
    QuoteRequest,
    size_bytes=POSITIVE,
    duration_seconds=POSITIVE,
    tier=tiers,
    sla_requested=st.booleans(),
    client=party_ids,
)


def _line(micro_tokens: int) -> st.SearchStrategy[PriceLine]:
    return st.builds(
        PriceLine,
        key=text(1, MAX_LINE_KEY_BYTES),
        label=text(0, MAX_LINE_LABEL_BYTES),
        micro_tokens=st.just(micro_tokens),
        detail=text(0, MAX_LINE_DETAIL_BYTES),
    )


@st.composite
def price_lines(draw: st.DrawFn) -> tuple[PriceLine, ...]:
    """1..16 lines, some negative, whose sum is a valid (non-negative) total."""
    others = draw(st.lists(st.integers(-(2**58), 2**58), max_size=MAX_LINES - 1))
    base = draw(st.integers(0, 2**58)) + sum(abs(v) for v in others)
    return tuple(draw(_line(v)) for v in [base, *others])


@st.composite
def quotes(draw: st.DrawFn) -> Quote:
    lines = draw(price_lines())
    return Quote(
        quote_id=draw(blob(QUOTE_ID_BYTES)),
        provider=draw(party_ids),
        provider_public_key=draw(blob(PUBLIC_KEY_BYTES)),
        size_bytes=draw(POSITIVE),
        duration_seconds=draw(POSITIVE),
        tier=draw(tiers),
        sla_requested=draw(st.booleans()),
        lines=lines,
        total_micro_tokens=sum(line.micro_tokens for line in lines),
        valid_until_ms=draw(UINT64),
        free_capacity_bytes=draw(UINT64),
        signature=draw(signatures),
    )


UINT32 = st.integers(min_value=0, max_value=MAX_UINT32)
audit_challenges = st.builds(
    AuditChallenge,
    contract_id=blob(CONTRACT_ID_BYTES),
    shard_address=blob(SHARD_ADDRESS_BYTES),
    nonce=blob(NONCE_BYTES),
    leaf_indices=st.lists(UINT32, min_size=1, max_size=MAX_CHALLENGE_LEAVES, unique=True).map(
        tuple
    ),
)
proof_items = st.builds(
    ProofItem,
    index=UINT32,
    # Leaves of any length (0 included) up to a whole leaf; small here, at the
    # limit in test_messages_at_every_limit_round_trip.
    leaf=blob(0, 600),
    path=st.lists(blob(DIGEST_BYTES), max_size=MAX_PATH_LENGTH).map(tuple),
)
audit_proofs = st.builds(
    AuditProof,
    nonce=blob(NONCE_BYTES),
    items=st.lists(proof_items, max_size=MAX_CHALLENGE_LEAVES).map(tuple),
)

requests: st.SearchStrategy[MarketRequest] = st.one_of(
    quote_requests,
    st.builds(ContractDeploy, terms=blob(1, 2048), client_signature=signatures),
    st.builds(ContractQuery, contract_id=blob(CONTRACT_ID_BYTES)),
    st.builds(ContractExecute, transition=blob(1, MAX_TRANSITION_BYTES)),
    audit_challenges,
)
deploy_results = st.booleans().flatmap(
    lambda accepted: st.builds(
        DeployResult,
        accepted=st.just(accepted),
        countersign=blob(1 if accepted else 0, MAX_TRANSITION_BYTES),
        reason=text(0, MAX_REASON_BYTES),
    )
)
records = st.builds(
    ContractRecord,
    terms=blob(1, 2048),
    client_signature=signatures,
    transitions=st.lists(blob(1, 300), max_size=20).map(tuple),
    state=text(1, MAX_STATE_BYTES),
    sequence=UINT64,
    state_digest=blob(DIGEST_BYTES),
    replica=party_ids,
    replica_signature=signatures,
)
execute_results = st.booleans().flatmap(
    lambda accepted: st.builds(
        ExecuteResult,
        accepted=st.just(accepted),
        reason=text(0, MAX_REASON_BYTES),
        sequence=UINT64,
        state_digest=blob(DIGEST_BYTES) if accepted else st.sampled_from([b"", DIGEST]),
    )
)
responses: st.SearchStrategy[MarketResponse] = st.one_of(
    quotes(),
    deploy_results,
    records,
    st.just(NotFound()),
    execute_results,
    st.builds(Refused, reason=text(1, MAX_REASON_BYTES)),
    audit_proofs,
)


@CHECK
@given(requests)
def test_request_round_trip(message: MarketRequest) -> None:
    encoded = encode_request(message)
    decoded = decode_request(encoded)
    assert decoded == message
    assert encode_request(decoded) == encoded  # one encoding per message


@CHECK
@given(responses)
def test_response_round_trip(message: MarketResponse) -> None:
    encoded = encode_response(message)
    decoded = decode_response(encoded)
    assert decoded == message
    assert encode_response(decoded) == encoded


@CHECK
@given(requests)
def test_request_encoding_matches_the_hand_writer(message: MarketRequest) -> None:
    assert encode_request(message) == request_bytes(message)


@CHECK
@given(responses)
def test_response_encoding_matches_the_hand_writer(message: MarketResponse) -> None:
    assert encode_response(message) == response_bytes(message)


def test_messages_at_every_limit_round_trip() -> None:
    widest = PriceLine("k" * MAX_LINE_KEY_BYTES, "é" * 32, MAX_SINT64, "d" * 256)
    extreme_lines = (widest, PriceLine("max", "", MAX_SINT64), PriceLine("one", "", 1))
    for request in (
        QuoteRequest(MAX_UINT64, MAX_UINT64, "t" * MAX_TIER_BYTES, True, b"c"),
        QuoteRequest(1, 1, "€", False, b"c" * MAX_PARTY_ID_BYTES),
        ContractDeploy(b"t" * (200 * 1024), SIG),
        ContractExecute(b"x" * MAX_TRANSITION_BYTES),
        dataclasses.replace(AUDIT, leaf_indices=tuple(range(MAX_CHALLENGE_LEAVES))),
        dataclasses.replace(AUDIT, leaf_indices=(MAX_UINT32,)),
    ):
        assert decode_request(encode_request(request)) == request
    for response in (
        dataclasses.replace(
            QUOTE,
            lines=extreme_lines,
            total_micro_tokens=MAX_UINT64,
            valid_until_ms=MAX_UINT64,
            free_capacity_bytes=MAX_UINT64,
        ),
        dataclasses.replace(
            QUOTE,
            lines=(PriceLine("a", "", MAX_SINT64),) * 2 + (PriceLine("b", "", MIN_SINT64),),
            total_micro_tokens=MAX_SINT64 - 1,
        ),
        dataclasses.replace(
            QUOTE, lines=(PriceLine("a", "", 0),) * MAX_LINES, total_micro_tokens=0
        ),
        DeployResult(True, b"c" * MAX_TRANSITION_BYTES, "r" * MAX_REASON_BYTES),
        DeployResult(False),
        dataclasses.replace(RECORD, transitions=(b"t",) * MAX_TRANSITIONS, sequence=MAX_UINT64),
        dataclasses.replace(RECORD, transitions=(b"t" * MAX_TRANSITION_BYTES,) * 4),
        dataclasses.replace(RECORD, state="s" * MAX_STATE_BYTES, replica=b"r" * 64),
        ExecuteResult(False),
        Refused("é" * (MAX_REASON_BYTES // 2)),  # bytes, not characters
        AuditProof(NONCE, ()),
        AuditProof(NONCE, (ProofItem(MAX_UINT32, b"", ()),)),  # an empty shard's one leaf
        *LARGEST_PROOFS,
    ):
        assert decode_response(encode_response(response)) == response


def _full_path(index: int) -> tuple[bytes, ...]:
    return tuple(bytes([index % 256, level]) * 16 for level in range(MAX_PATH_LENGTH))


# The largest proofs: 1 MiB of leaves as 16 whole 64 KiB leaves, and as 64 leaves
# of 16 KiB, every one with the longest path.
LARGEST_PROOFS = (
    AuditProof(
        NONCE,
        tuple(ProofItem(i, bytes([i]) * MAX_LEAF_BYTES, _full_path(i)) for i in range(16)),
    ),
    AuditProof(
        NONCE,
        tuple(
            ProofItem(MAX_UINT32 - i, bytes([i]) * (MAX_PROOF_LEAF_BYTES // 64), _full_path(i))
            for i in range(MAX_CHALLENGE_LEAVES)
        ),
    ),
)


@pytest.mark.parametrize("proof", LARGEST_PROOFS, ids=["16_whole_leaves", "64_leaves"])
def test_the_largest_proof_fits_one_frame(proof: AuditProof) -> None:
    assert sum(len(item.leaf) for item in proof.items) == MAX_PROOF_LEAF_BYTES
    payload = encode_response(proof)
    assert len(payload) < ids.MARKET_LIMITS.max_frame
    encode_frame(payload, ids.MARKET_LIMITS.max_frame)  # no frame_too_large


def test_a_one_mib_record_fits_one_frame() -> None:
    # terms and 4096 transitions as large as node/market/contract.py lets a
    # whole record be (1 MiB), which 256 KiB frames could not carry.
    transitions = (b"t" * 200,) * MAX_TRANSITIONS
    terms = b"T" * ((1 << 20) - 200 * MAX_TRANSITIONS - 1024)
    record = dataclasses.replace(RECORD, terms=terms, transitions=transitions)
    payload = encode_response(record)
    assert len(payload) > 1 << 20
    encode_frame(payload, ids.MARKET_LIMITS.max_frame)
    assert decode_response(payload) == record


# -- golden vectors -----------------------------------------------------------------


def _from_json(cls: type[Any], data: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls, vars(m))
    values: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if hint is bytes:
            values[name] = bytes.fromhex(value)
        elif hint == tuple[bytes, ...]:
            values[name] = tuple(bytes.fromhex(v) for v in value)
        elif hint == tuple[PriceLine, ...]:
            values[name] = tuple(_from_json(PriceLine, v) for v in value)
        elif hint == tuple[ProofItem, ...]:
            values[name] = tuple(_from_json(ProofItem, v) for v in value)
        elif hint == tuple[int, ...]:
            values[name] = tuple(value)
        else:
            values[name] = value
    return cls(**values)


def _load_vectors() -> list[dict[str, Any]]:
    vectors: list[dict[str, Any]] = json.loads(MESSAGES.read_text())["vectors"]
    return vectors


def message_of(vector: dict[str, Any]) -> Any:
    return _from_json(getattr(m, vector["kind"]), vector["message"])


VECTORS = _load_vectors()
VECTOR_NAMES = [v["name"] for v in VECTORS]


def test_vector_file_covers_every_message() -> None:
    kinds = {(v["direction"], v["kind"]) for v in VECTORS}
    assert kinds == {("request", k) for k in REQUEST_NUMBERS} | {
        ("response", k) for k in RESPONSE_NUMBERS
    }
    assert len(set(VECTOR_NAMES)) == len(VECTOR_NAMES)


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_NAMES)
def test_golden_vector_encode(vector: dict[str, Any]) -> None:
    encode = encode_request if vector["direction"] == "request" else encode_response
    assert encode(message_of(vector)).hex() == vector["encoded"]


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_NAMES)
def test_golden_vector_decode(vector: dict[str, Any]) -> None:
    decode = decode_request if vector["direction"] == "request" else decode_response
    assert decode(bytes.fromhex(vector["encoded"])) == message_of(vector)


@pytest.mark.parametrize("vector", VECTORS, ids=VECTOR_NAMES)
def test_golden_vector_matches_the_hand_writer(vector: dict[str, Any]) -> None:
    message = message_of(vector)
    writer = request_bytes if vector["direction"] == "request" else response_bytes
    assert writer(message).hex() == vector["encoded"]


def _vector(name: str) -> bytes:
    return bytes.fromhex(next(v for v in VECTORS if v["name"] == name)["encoded"])


def test_vectors_spelled_out_byte_by_byte() -> None:
    # size 1, duration 1, tier "hot", no SLA (omitted), client 01.
    assert _vector("quote_request_minimal") == (
        b"\x0a\x0c" + b"\x08\x01" + b"\x10\x01" + b"\x1a\x03hot" + b"\x2a\x01\x01"
    )
    assert _vector("query") == b"\x1a\x22\x0a\x20" + bytes(range(32))
    assert _vector("not_found") == b"\x22\x00"
    assert _vector("refused") == b"\x32\x0d\x0a\x0bno capacity"
    # accepted false, no countersign (both omitted), reason "quote expired".
    assert _vector("deploy_result_rejected") == b"\x12\x0f\x1a\x0dquote expired"
    # nonce, then one item with index 0, no leaf and no path: all omitted, the
    # item itself still present (a repeated message is always written).
    assert _vector("audit_proof_empty_leaf") == (
        b"\x3a\x24" + b"\x0a\x20" + bytes(range(0x40, 0x60)) + b"\x12\x00"
    )


def test_leaf_indices_are_packed_varints() -> None:
    # 7, 0, 300, 65536 as one length-delimited field 4: 07 00 ac02 808004.
    assert bytes.fromhex("22070700ac02808004") in _vector("audit_challenge")


def test_unpacked_leaf_indices_decode_too() -> None:
    # A protobuf parser must accept a repeated scalar written either way.
    inner = b"".join(
        field_bytes(n, v) for n, v in ((1, AUDIT.contract_id), (2, AUDIT.shard_address))
    ) + field_bytes(3, AUDIT.nonce)
    inner += b"".join(field_varint(4, i) for i in AUDIT.leaf_indices)
    assert decode_request(field_bytes(5, inner)) == AUDIT


def test_negative_price_line_is_zigzag() -> None:
    # -4,800,000 is sint64: zigzag 9,599,999 = varint ff f7 c9 04.
    assert bytes.fromhex("18fff7c904") in _vector("quote")
    assert varint(9_599_999) == bytes.fromhex("fff7c904")


# -- quote signatures ------------------------------------------------------------------


def test_signature_vector() -> None:
    vector = json.loads(SIGNATURE.read_text())
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["private_key_seed"]))
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert public.hex() == vector["public_key"]
    unsigned = _from_json(Quote, vector["quote"])
    assert quote_signing_bytes(unsigned).hex() == vector["signing_bytes"]
    signed = sign_quote(unsigned, key)
    assert signed.signature.hex() == vector["signature"]
    assert verify_quote_signature(signed)
    # The signed quote in the message vectors is this one.
    assert message_of(next(v for v in VECTORS if v["name"] == "quote")) == signed


def _blob(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def test_signing_bytes_layout() -> None:
    expected = (
        _blob(b"zhtp/market/quote/v1")
        + _blob(UNSIGNED.quote_id)
        + _blob(PROVIDER)
        + _blob(PUBLIC)
        + struct.pack(">QQ", 1 << 30, 86400)
        + _blob(b"warm")
        + b"\x00"
        + struct.pack(">I", 2)
        + _blob(b"base")
        + _blob(b"base storage")
        + struct.pack(">q", 100)
        + _blob(b"1 GiB, 1 day")
        + _blob(b"tier")
        + _blob(b"")
        + struct.pack(">q", -10)
        + _blob(b"")
        + struct.pack(">QQQ", 90, 1_000_000, 1 << 40)
    )
    assert QUOTE_DOMAIN == b"zhtp/market/quote/v1"
    assert quote_signing_bytes(UNSIGNED) == expected
    # The signature itself is not signed: a signed quote signs the same bytes.
    assert quote_signing_bytes(QUOTE) == expected


@CHECK
@given(quotes())
def test_sign_then_verify(quote: Quote) -> None:
    key = Ed25519PrivateKey.from_private_bytes(quote.quote_id * 2)
    public = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    signed = sign_quote(dataclasses.replace(quote, provider_public_key=public), key)
    assert verify_quote_signature(signed)
    # What crosses the wire verifies on the other side.
    assert verify_quote_signature(decode_response(encode_response(signed)))  # type: ignore[arg-type]


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


TAMPERINGS: dict[str, Callable[[Quote], Quote]] = {
    "quote_id": lambda q: dataclasses.replace(q, quote_id=_flip(q.quote_id)),
    "provider": lambda q: dataclasses.replace(q, provider=q.provider + b"x"),
    "size_bytes": lambda q: dataclasses.replace(q, size_bytes=q.size_bytes + 1),
    "duration_seconds": lambda q: dataclasses.replace(q, duration_seconds=q.duration_seconds + 1),
    "tier": lambda q: dataclasses.replace(q, tier="cold"),
    "sla_requested": lambda q: dataclasses.replace(q, sla_requested=not q.sla_requested),
    "line_key": lambda q: dataclasses.replace(
        q, lines=(dataclasses.replace(q.lines[0], key="base2"), *q.lines[1:])
    ),
    "line_label": lambda q: dataclasses.replace(
        q, lines=(dataclasses.replace(q.lines[0], label="other"), *q.lines[1:])
    ),
    "line_detail": lambda q: dataclasses.replace(
        q, lines=(dataclasses.replace(q.lines[0], detail="other"), *q.lines[1:])
    ),
    "line_amounts": lambda q: dataclasses.replace(
        q,
        lines=(
            dataclasses.replace(q.lines[0], micro_tokens=101),
            dataclasses.replace(q.lines[1], micro_tokens=-11),
        ),
    ),
    "line_order": lambda q: dataclasses.replace(q, lines=q.lines[::-1]),
    "lines_moved_between_fields": lambda q: dataclasses.replace(
        q,
        lines=(
            dataclasses.replace(q.lines[0], label="", detail="base storage1 GiB, 1 day"),
            *q.lines[1:],
        ),
    ),
    "total_and_line": lambda q: dataclasses.replace(
        q,
        lines=(dataclasses.replace(q.lines[0], micro_tokens=200), q.lines[1]),
        total_micro_tokens=190,
    ),
    "valid_until_ms": lambda q: dataclasses.replace(q, valid_until_ms=q.valid_until_ms + 1),
    "free_capacity_bytes": lambda q: dataclasses.replace(
        q, free_capacity_bytes=q.free_capacity_bytes - 1
    ),
    "signature": lambda q: dataclasses.replace(q, signature=_flip(q.signature)),
    "signature_length": lambda q: dataclasses.replace(q, signature=q.signature[:-1]),
    "public_key": lambda q: dataclasses.replace(
        q,
        provider_public_key=Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.Raw, PublicFormat.Raw),
    ),
    "public_key_not_a_key": lambda q: dataclasses.replace(q, provider_public_key=b"\x00" * 31),
}


@pytest.mark.parametrize("tamper", TAMPERINGS.values(), ids=TAMPERINGS.keys())
def test_tampered_quote_fails_verification(tamper: Callable[[Quote], Quote]) -> None:
    assert verify_quote_signature(QUOTE)
    assert not verify_quote_signature(tamper(QUOTE))


def test_quote_signed_by_another_key_fails() -> None:
    other = Ed25519PrivateKey.generate()
    forged = dataclasses.replace(QUOTE, signature=other.sign(quote_signing_bytes(UNSIGNED)))
    assert not verify_quote_signature(forged)


def test_signing_with_a_key_the_quote_does_not_name_is_refused() -> None:
    with pytest.raises(LocalProtocolError) as info:
        sign_quote(UNSIGNED, Ed25519PrivateKey.generate())
    assert info.value.reason == "wrong_key"


def test_signing_bytes_refuse_a_malformed_quote() -> None:
    with pytest.raises(LocalProtocolError) as info:
        quote_signing_bytes(dataclasses.replace(UNSIGNED, total_micro_tokens=91))
    assert info.value.reason == "bad_total"


def test_quote_expiry() -> None:
    assert quote_is_valid(QUOTE, 0)
    assert quote_is_valid(QUOTE, QUOTE.valid_until_ms)
    assert not quote_is_valid(QUOTE, QUOTE.valid_until_ms + 1)
    # Expiry is the client's judgement: an expired quote still decodes and verifies.
    assert verify_quote_signature(decode_response(encode_response(QUOTE)))  # type: ignore[arg-type]


# -- hostile input: framing of the oneof ---------------------------------------------


DECODERS = pytest.mark.parametrize(
    "decode", [decode_request, decode_response], ids=["request", "response"]
)


@DECODERS
@pytest.mark.parametrize(
    "data",
    [b"\xff", b"\x0a", b"\x0a\x10abc", b"\x1a\x05\x0a\x09ab", b"garbage!garbage!"],
)
def test_garbage(decode: Callable[[bytes], object], data: bytes) -> None:
    assert remote_reason(decode, data) == "garbage"


def test_strings_that_are_not_utf8_are_garbage() -> None:
    assert remote_reason(decode_request, request_bytes(QUOTE_REQUEST, tier=b"\xff")) == "garbage"
    assert remote_reason(decode_response, response_bytes(REFUSED, reason=b"\xc3")) == "garbage"


@DECODERS
def test_empty_message_is_unknown(decode: Callable[[bytes], object]) -> None:
    assert remote_reason(decode, b"") == "unknown_message"


def test_unknown_oneof_member_is_unknown() -> None:
    assert remote_reason(decode_request, field_bytes(6, b"")) == "unknown_message"
    assert remote_reason(decode_response, field_bytes(8, b"")) == "unknown_message"


def test_unknown_fields_inside_a_message_are_ignored() -> None:
    inner = pb_message("ContractQuery", fields_of(QUERY)) + field_bytes(15, b"future")
    assert decode_request(field_bytes(3, inner)) == QUERY


def test_last_oneof_member_wins() -> None:
    data = request_bytes(DEPLOY) + request_bytes(QUERY)
    assert decode_request(data) == QUERY


@CHECK
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_remote_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        decode_request(data)
    with contextlib.suppress(RemoteProtocolError):
        decode_response(data)


# -- hostile input: one case per rule -------------------------------------------------


def _line_fields(**overrides: Any) -> dict[str, Any]:
    return {"key": "base", "label": "", "micro_tokens": 90, "detail": "", **overrides}


def _item_fields(**overrides: Any) -> dict[str, Any]:
    return {"index": 0, "leaf": b"leaf", "path": (HASH,), **overrides}


# 16 whole 64 KiB leaves: exactly the 1 MiB a proof may carry.
ONE_MIB_OF_ITEMS = tuple(_item_fields(index=i, leaf=bytes(MAX_LEAF_BYTES)) for i in range(16))


REQUEST_RULES: list[tuple[str, MarketRequest, dict[str, Any], str]] = [
    ("size_zero", QUOTE_REQUEST, {"size_bytes": 0}, "bad_size"),
    ("duration_zero", QUOTE_REQUEST, {"duration_seconds": 0}, "bad_duration"),
    ("tier_empty", QUOTE_REQUEST, {"tier": ""}, "bad_tier"),
    ("tier_too_long", QUOTE_REQUEST, {"tier": "t" * (MAX_TIER_BYTES + 1)}, "bad_tier"),
    ("tier_too_many_bytes", QUOTE_REQUEST, {"tier": "é" * 9}, "bad_tier"),
    ("client_empty", QUOTE_REQUEST, {"client": b""}, "bad_party_id"),
    ("client_too_long", QUOTE_REQUEST, {"client": b"c" * 65}, "bad_party_id"),
    ("terms_empty", DEPLOY, {"terms": b""}, "bad_terms"),
    ("client_signature_short", DEPLOY, {"client_signature": SIG[:63]}, "bad_signature"),
    ("client_signature_long", DEPLOY, {"client_signature": SIG + b"x"}, "bad_signature"),
    ("client_signature_missing", DEPLOY, {"client_signature": b""}, "bad_signature"),
    ("contract_id_short", QUERY, {"contract_id": bytes(31)}, "bad_contract_id"),
    ("contract_id_long", QUERY, {"contract_id": bytes(33)}, "bad_contract_id"),
    ("contract_id_missing", QUERY, {"contract_id": b""}, "bad_contract_id"),
    ("transition_empty", EXECUTE, {"transition": b""}, "bad_transition"),
    ("transition_too_long", EXECUTE, {"transition": bytes(4097)}, "bad_transition"),
    ("audit_contract_id_short", AUDIT, {"contract_id": bytes(31)}, "bad_contract_id"),
    ("audit_contract_id_missing", AUDIT, {"contract_id": b""}, "bad_contract_id"),
    ("shard_address_short", AUDIT, {"shard_address": bytes(31)}, "bad_shard_address"),
    ("shard_address_long", AUDIT, {"shard_address": bytes(33)}, "bad_shard_address"),
    ("shard_address_missing", AUDIT, {"shard_address": b""}, "bad_shard_address"),
    ("challenge_nonce_short", AUDIT, {"nonce": NONCE[:31]}, "bad_nonce"),
    ("challenge_nonce_long", AUDIT, {"nonce": NONCE + b"n"}, "bad_nonce"),
    ("challenge_nonce_missing", AUDIT, {"nonce": b""}, "bad_nonce"),
    ("no_leaf_indices", AUDIT, {"leaf_indices": ()}, "bad_leaf_indices"),
    (
        "too_many_leaf_indices",
        AUDIT,
        {"leaf_indices": tuple(range(MAX_CHALLENGE_LEAVES + 1))},
        "bad_leaf_indices",
    ),
    ("duplicate_leaf_index", AUDIT, {"leaf_indices": (3, 0, 3)}, "duplicate_leaf_index"),
    ("duplicate_leaf_zero", AUDIT, {"leaf_indices": (0, 0)}, "duplicate_leaf_index"),
]


@pytest.mark.parametrize(
    ("message", "overrides", "reason"),
    [r[1:] for r in REQUEST_RULES],
    ids=[r[0] for r in REQUEST_RULES],
)
def test_request_rule(message: MarketRequest, overrides: dict[str, Any], reason: str) -> None:
    assert remote_reason(decode_request, request_bytes(message, **overrides)) == reason
    # Our encoder refuses to send the same message, for the same reason.
    local = dataclasses.replace(message, **overrides)
    assert local_reason(encode_request, local) == reason


RESPONSE_RULES: list[tuple[str, MarketResponse, dict[str, Any], str]] = [
    ("quote_id_short", QUOTE, {"quote_id": bytes(15)}, "bad_quote_id"),
    ("quote_id_long", QUOTE, {"quote_id": bytes(17)}, "bad_quote_id"),
    ("provider_empty", QUOTE, {"provider": b""}, "bad_party_id"),
    ("provider_too_long", QUOTE, {"provider": b"p" * 65}, "bad_party_id"),
    ("public_key_short", QUOTE, {"provider_public_key": PUBLIC[:31]}, "bad_public_key"),
    ("public_key_long", QUOTE, {"provider_public_key": PUBLIC + b"k"}, "bad_public_key"),
    ("quote_size_zero", QUOTE, {"size_bytes": 0}, "bad_size"),
    ("quote_duration_zero", QUOTE, {"duration_seconds": 0}, "bad_duration"),
    ("quote_tier_empty", QUOTE, {"tier": ""}, "bad_tier"),
    ("quote_tier_too_long", QUOTE, {"tier": "t" * 17}, "bad_tier"),
    ("no_lines", QUOTE, {"lines": (), "total_micro_tokens": 0}, "bad_lines"),
    (
        "too_many_lines",
        QUOTE,
        {"lines": (_line_fields(micro_tokens=0),) * 17, "total_micro_tokens": 0},
        "bad_lines",
    ),
    ("line_key_empty", QUOTE, {"lines": (_line_fields(key=""),)}, "bad_line"),
    ("line_key_too_long", QUOTE, {"lines": (_line_fields(key="k" * 33),)}, "bad_line"),
    ("line_label_too_long", QUOTE, {"lines": (_line_fields(label="l" * 65),)}, "bad_line"),
    ("line_detail_too_long", QUOTE, {"lines": (_line_fields(detail="d" * 257),)}, "bad_line"),
    ("total_not_the_sum", QUOTE, {"total_micro_tokens": 91}, "bad_total"),
    (
        "lines_sum_negative",
        QUOTE,
        {"lines": (_line_fields(micro_tokens=-5),), "total_micro_tokens": 0},
        "bad_total",
    ),
    ("quote_unsigned", QUOTE, {"signature": b""}, "bad_signature"),
    ("quote_signature_short", QUOTE, {"signature": SIG[:63]}, "bad_signature"),
    ("accepted_without_countersign", DEPLOY_RESULT, {"countersign": b""}, "bad_countersign"),
    ("countersign_too_long", DEPLOY_RESULT, {"countersign": bytes(4097)}, "bad_countersign"),
    ("deploy_reason_too_long", DEPLOY_RESULT, {"reason": "r" * 257}, "bad_reason"),
    ("record_terms_empty", RECORD, {"terms": b""}, "bad_terms"),
    ("record_client_signature", RECORD, {"client_signature": SIG[:10]}, "bad_signature"),
    (
        "too_many_transitions",
        RECORD,
        {"transitions": (b"t",) * (MAX_TRANSITIONS + 1)},
        "too_many_transitions",
    ),
    ("transition_entry_empty", RECORD, {"transitions": (b"t", b"")}, "bad_transition"),
    ("transition_entry_too_long", RECORD, {"transitions": (bytes(4097),)}, "bad_transition"),
    ("state_empty", RECORD, {"state": ""}, "bad_state"),
    ("state_too_long", RECORD, {"state": "s" * 33}, "bad_state"),
    ("record_digest_short", RECORD, {"state_digest": DIGEST[:31]}, "bad_state_digest"),
    ("record_digest_missing", RECORD, {"state_digest": b""}, "bad_state_digest"),
    ("replica_empty", RECORD, {"replica": b""}, "bad_party_id"),
    ("replica_too_long", RECORD, {"replica": b"r" * 65}, "bad_party_id"),
    ("replica_unsigned", RECORD, {"replica_signature": b""}, "bad_signature"),
    ("accepted_without_digest", EXECUTE_RESULT, {"state_digest": b""}, "bad_state_digest"),
    ("execute_digest_short", EXECUTE_RESULT, {"state_digest": DIGEST[:31]}, "bad_state_digest"),
    (
        "rejected_digest_short",
        ExecuteResult(False, "no"),
        {"state_digest": DIGEST[:1]},
        "bad_state_digest",
    ),
    ("execute_reason_too_long", EXECUTE_RESULT, {"reason": "r" * 257}, "bad_reason"),
    ("refused_without_reason", REFUSED, {"reason": ""}, "bad_reason"),
    ("refused_reason_too_long", REFUSED, {"reason": "r" * 257}, "bad_reason"),
    ("refused_reason_too_many_bytes", REFUSED, {"reason": "é" * 129}, "bad_reason"),
    ("proof_nonce_short", PROOF, {"nonce": NONCE[:31]}, "bad_nonce"),
    ("proof_nonce_missing", PROOF, {"nonce": b""}, "bad_nonce"),
    (
        "too_many_items",
        PROOF,
        {"items": (_item_fields(),) * (MAX_CHALLENGE_LEAVES + 1)},
        "too_many_items",
    ),
    ("leaf_too_long", PROOF, {"items": (_item_fields(leaf=bytes(65537)),)}, "bad_leaf"),
    (
        "path_too_long",
        PROOF,
        {"items": (_item_fields(path=(HASH,) * (MAX_PATH_LENGTH + 1)),)},
        "bad_path",
    ),
    ("path_hash_short", PROOF, {"items": (_item_fields(path=(HASH, HASH[:31])),)}, "bad_path"),
    ("path_hash_long", PROOF, {"items": (_item_fields(path=(HASH + b"h",)),)}, "bad_path"),
    ("path_hash_empty", PROOF, {"items": (_item_fields(path=(b"",)),)}, "bad_path"),
    (
        "leaves_over_one_mib",
        PROOF,
        {"items": (*ONE_MIB_OF_ITEMS, _item_fields(index=16, leaf=bytes(MAX_LEAF_BYTES)))},
        "proof_too_large",
    ),
    (
        "leaves_one_byte_over_one_mib",
        PROOF,
        {"items": (*ONE_MIB_OF_ITEMS, _item_fields(index=16, leaf=b"x"))},
        "proof_too_large",
    ),
]


@pytest.mark.parametrize(
    ("message", "overrides", "reason"),
    [r[1:] for r in RESPONSE_RULES],
    ids=[r[0] for r in RESPONSE_RULES],
)
def test_response_rule(message: MarketResponse, overrides: dict[str, Any], reason: str) -> None:
    assert remote_reason(decode_response, response_bytes(message, **overrides)) == reason
    if "lines" in overrides:
        overrides = {
            **overrides,
            "lines": tuple(PriceLine(**line) for line in overrides["lines"]),
        }
    if "items" in overrides:
        overrides = {**overrides, "items": tuple(ProofItem(**i) for i in overrides["items"])}
    local = dataclasses.replace(message, **overrides)
    assert local_reason(encode_response, local) == reason


# -- encoding refuses what no decoder could see ----------------------------------------


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (QuoteRequest(-1, 1, "hot", False, b"c"), "uint64_range"),
        (QuoteRequest(1, MAX_UINT64 + 1, "hot", False, b"c"), "uint64_range"),
        (QuoteRequest(1, 1, "\ud800", False, b"c"), "bad_tier"),  # a lone surrogate
        (dataclasses.replace(AUDIT, leaf_indices=(-1,)), "uint32_range"),
        (dataclasses.replace(AUDIT, leaf_indices=(0, MAX_UINT32 + 1)), "uint32_range"),
        ("not a message", "unknown_message"),
    ],
)
def test_encode_request_refuses(message: Any, reason: str) -> None:
    assert local_reason(encode_request, message) == reason


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (dataclasses.replace(QUOTE, valid_until_ms=-1), "uint64_range"),
        (dataclasses.replace(QUOTE, free_capacity_bytes=MAX_UINT64 + 1), "uint64_range"),
        (
            dataclasses.replace(
                QUOTE,
                lines=(PriceLine("a", "", MAX_SINT64 + 1),),
                total_micro_tokens=MAX_SINT64 + 1,
            ),
            "sint64_range",
        ),
        (dataclasses.replace(RECORD, sequence=-1), "uint64_range"),
        (ExecuteResult(False, "", MAX_UINT64 + 1), "uint64_range"),
        (AuditProof(NONCE, (ProofItem(MAX_UINT32 + 1, b"", ()),)), "uint32_range"),
        (AuditProof(NONCE, (ProofItem(-1, b"", ()),)), "uint32_range"),
        (QUOTE_REQUEST, "unknown_message"),
    ],
)
def test_encode_response_refuses(message: Any, reason: str) -> None:
    assert local_reason(encode_response, message) == reason
