"""/zhtp/market/1.0.0 messages as typed values; the only place that sees market_pb2.

Decoding is where hostile input is first met: garbage, an empty or unknown
``oneof``, and every field outside its rule below is a RemoteProtocolError
with a short reason. Encoding refuses (with a LocalProtocolError, same
reason) anything our own decoder would reject from a peer, so we never send
what we would not accept. One rule set serves both directions.

=====================================  ===========================  ===================
field                                  rule                         reason
=====================================  ===========================  ===================
party ids (client, provider, replica)  1..64 bytes                  ``bad_party_id``
provider_public_key                    32 bytes (raw Ed25519)       ``bad_public_key``
every signature                        64 bytes (Ed25519)           ``bad_signature``
quote_id                               16 bytes                     ``bad_quote_id``
contract_id                            32 bytes                     ``bad_contract_id``
state_digest                           32 bytes (ExecuteResult:     ``bad_state_digest``
                                       empty allowed if refused)
size_bytes / duration_seconds          at least 1                   ``bad_size`` /
                                                                    ``bad_duration``
tier                                   1..16 bytes of UTF-8         ``bad_tier``
price lines                            1..16 per quote              ``bad_lines``
line key / label / detail              1..32 / ..64 / ..256 bytes   ``bad_line``
total_micro_tokens                     the exact sum of the lines   ``bad_total``
terms                                  1 byte .. the frame cap      ``bad_terms``
transition (execute, record entries)   1..4096 bytes                ``bad_transition``
transitions in a record                at most 4096                 ``too_many_transitions``
countersign                            ..4096 bytes; required       ``bad_countersign``
                                       when accepted
state                                  1..32 bytes                  ``bad_state``
reason (results)                       ..256 bytes (Refused: 1..)   ``bad_reason``
shard_address                          32 bytes                     ``bad_shard_address``
nonce (challenge and proof)            32 bytes                     ``bad_nonce``
leaf_indices                           1..64                        ``bad_leaf_indices``
leaf_indices                           distinct                     ``duplicate_leaf_index``
items in a proof                       at most 64                   ``too_many_items``
leaf                                   0..65536 bytes               ``bad_leaf``
path                                   at most 40 hashes of 32      ``bad_path``
                                       bytes each
leaves of a proof, all together        at most 1 MiB                ``proof_too_large``
=====================================  ===========================  ===================

Unparseable bytes (including strings that are not UTF-8) are ``garbage``; a
message with no (or an unknown) ``oneof`` member is ``unknown_message``.
Unknown fields inside a known message are ignored, as protobuf intends.

Audit proofs are only bounded here: whether a proof answers its challenge
(nonce echoed, exactly the challenged indices, in order) is the client's
check (protocols/market/client.py), and whether it reaches the contract's
Merkle root is node/market/audit.py's. Any leaf length up to a whole leaf is
allowed, 0 included (the single empty leaf of an empty shard). The
leaves of one proof total at most 1 MiB, so a proof fits one frame; a
challenger must ask for fewer leaves of a shard with large leaves (16 of
64 KiB, 256 of the default 4 KiB).

Quote signatures: see :func:`quote_signing_bytes`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from google.protobuf.message import DecodeError

from protocols import ids
from protocols.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from protocols.pb import market_pb2

MAX_PARTY_ID_BYTES = 64
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
QUOTE_ID_BYTES = 16
CONTRACT_ID_BYTES = 32
DIGEST_BYTES = 32
MAX_TIER_BYTES = 16
MAX_LINES = 16
MAX_LINE_KEY_BYTES = 32
MAX_LINE_LABEL_BYTES = 64
MAX_LINE_DETAIL_BYTES = 256
MAX_REASON_BYTES = 256
MAX_STATE_BYTES = 32
# Terms are opaque here; whatever fits in a frame is for the contract module to judge.
MAX_TERMS_BYTES = ids.MARKET_LIMITS.max_frame
MAX_TRANSITION_BYTES = 4096
MAX_TRANSITIONS = 4096
# Audits: the bounds of node/market/audit.py (which this layer may not import).
SHARD_ADDRESS_BYTES = 32
NONCE_BYTES = 32
MAX_CHALLENGE_LEAVES = 64
MAX_LEAF_BYTES = 1 << 16
MAX_PATH_LENGTH = 40
MAX_PROOF_LEAF_BYTES = 1 << 20
MAX_UINT32 = (1 << 32) - 1
MAX_UINT64 = (1 << 64) - 1
MIN_SINT64 = -(1 << 63)
MAX_SINT64 = (1 << 63) - 1

# The first thing a provider signs, so a quote signature can never be taken
# for a signature over anything else (a transition, a record).
QUOTE_DOMAIN = b"zhtp/market/quote/v1"


# -- requests ------------------------------------------------------------------


@dataclass(frozen=True)
class QuoteRequest:
    size_bytes: int
    duration_seconds: int
    tier: str
    sla_requested: bool
    client: bytes


@dataclass(frozen=True)
class ContractDeploy:
    terms: bytes
    client_signature: bytes


@dataclass(frozen=True)
class ContractQuery:
    contract_id: bytes


@dataclass(frozen=True)
class ContractExecute:
    transition: bytes


@dataclass(frozen=True)
class AuditChallenge:
    """Prove you hold ``shard_address`` of the contract: send these leaves, in this order."""

    contract_id: bytes
    shard_address: bytes
    nonce: bytes
    leaf_indices: tuple[int, ...]


MarketRequest = QuoteRequest | ContractDeploy | ContractQuery | ContractExecute | AuditChallenge


# -- responses -----------------------------------------------------------------


@dataclass(frozen=True)
class PriceLine:
    key: str
    label: str
    micro_tokens: int
    detail: str = ""


@dataclass(frozen=True)
class Quote:
    quote_id: bytes
    provider: bytes
    provider_public_key: bytes
    size_bytes: int
    duration_seconds: int
    tier: str
    sla_requested: bool
    lines: tuple[PriceLine, ...]
    total_micro_tokens: int
    valid_until_ms: int
    free_capacity_bytes: int
    # Empty until :func:`sign_quote`; a quote on the wire always has one.
    signature: bytes = b""


@dataclass(frozen=True)
class DeployResult:
    accepted: bool
    countersign: bytes = b""
    reason: str = ""


@dataclass(frozen=True)
class ContractRecord:
    terms: bytes
    client_signature: bytes
    transitions: tuple[bytes, ...]
    state: str
    sequence: int
    state_digest: bytes
    replica: bytes
    replica_signature: bytes


@dataclass(frozen=True)
class NotFound:
    pass


@dataclass(frozen=True)
class ExecuteResult:
    accepted: bool
    reason: str = ""
    sequence: int = 0
    state_digest: bytes = b""


@dataclass(frozen=True)
class Refused:
    reason: str


@dataclass(frozen=True)
class ProofItem:
    """One challenged leaf: its index, its bytes and its sibling hashes, leaf to root."""

    index: int
    leaf: bytes = field(repr=False)
    path: tuple[bytes, ...] = field(repr=False)


@dataclass(frozen=True)
class AuditProof:
    """The challenge's nonce echoed and one item per challenged leaf."""

    nonce: bytes
    items: tuple[ProofItem, ...]


MarketResponse = (
    Quote | DeployResult | ContractRecord | NotFound | ExecuteResult | Refused | AuditProof
)


# -- the rules (one set; the error type says whose fault a violation is) --------

ErrorType = type[ProtocolError]


def _length(value: bytes, low: int, high: int, reason: str, error: ErrorType) -> None:
    if not low <= len(value) <= high:
        want = str(low) if low == high else f"{low}..{high}"
        raise error(reason, f"{len(value)} bytes, want {want}")


def _text(value: str, low: int, high: int, reason: str, error: ErrorType) -> None:
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise error(reason, "not valid Unicode text") from None
    _length(encoded, low, high, reason, error)


def _uint64(error: ErrorType, *values: int) -> None:
    if not all(0 <= v <= MAX_UINT64 for v in values):
        raise error("uint64_range")


def _uint32(error: ErrorType, *values: int) -> None:
    if not all(0 <= v <= MAX_UINT32 for v in values):
        raise error("uint32_range")


def _at_least_one(value: int, reason: str, error: ErrorType) -> None:
    _uint64(error, value)
    if value < 1:
        raise error(reason, "must be at least 1")


def _check_quote_request(m: QuoteRequest, error: ErrorType) -> None:
    _at_least_one(m.size_bytes, "bad_size", error)
    _at_least_one(m.duration_seconds, "bad_duration", error)
    _text(m.tier, 1, MAX_TIER_BYTES, "bad_tier", error)
    _length(m.client, 1, MAX_PARTY_ID_BYTES, "bad_party_id", error)


def _check_line(line: PriceLine, error: ErrorType) -> None:
    _text(line.key, 1, MAX_LINE_KEY_BYTES, "bad_line", error)
    _text(line.label, 0, MAX_LINE_LABEL_BYTES, "bad_line", error)
    _text(line.detail, 0, MAX_LINE_DETAIL_BYTES, "bad_line", error)
    if not MIN_SINT64 <= line.micro_tokens <= MAX_SINT64:
        raise error("sint64_range")


def _check_unsigned_quote(m: Quote, error: ErrorType) -> None:
    """Every rule for a quote but the one about its signature."""
    _length(m.quote_id, QUOTE_ID_BYTES, QUOTE_ID_BYTES, "bad_quote_id", error)
    _length(m.provider, 1, MAX_PARTY_ID_BYTES, "bad_party_id", error)
    _length(m.provider_public_key, PUBLIC_KEY_BYTES, PUBLIC_KEY_BYTES, "bad_public_key", error)
    _at_least_one(m.size_bytes, "bad_size", error)
    _at_least_one(m.duration_seconds, "bad_duration", error)
    _text(m.tier, 1, MAX_TIER_BYTES, "bad_tier", error)
    if not 1 <= len(m.lines) <= MAX_LINES:
        raise error("bad_lines", f"{len(m.lines)} lines, want 1..{MAX_LINES}")
    for line in m.lines:
        _check_line(line, error)
    _uint64(error, m.total_micro_tokens, m.valid_until_ms, m.free_capacity_bytes)
    total = sum(line.micro_tokens for line in m.lines)
    if total != m.total_micro_tokens:
        raise error("bad_total", f"lines sum to {total}, total says {m.total_micro_tokens}")


def _check_quote(m: Quote, error: ErrorType) -> None:
    _check_unsigned_quote(m, error)
    _length(m.signature, SIGNATURE_BYTES, SIGNATURE_BYTES, "bad_signature", error)


def _check_deploy(m: ContractDeploy, error: ErrorType) -> None:
    _length(m.terms, 1, MAX_TERMS_BYTES, "bad_terms", error)
    _length(m.client_signature, SIGNATURE_BYTES, SIGNATURE_BYTES, "bad_signature", error)


def _check_deploy_result(m: DeployResult, error: ErrorType) -> None:
    _length(m.countersign, 1 if m.accepted else 0, MAX_TRANSITION_BYTES, "bad_countersign", error)
    _text(m.reason, 0, MAX_REASON_BYTES, "bad_reason", error)


def _check_query(m: ContractQuery, error: ErrorType) -> None:
    _length(m.contract_id, CONTRACT_ID_BYTES, CONTRACT_ID_BYTES, "bad_contract_id", error)


def _check_record(m: ContractRecord, error: ErrorType) -> None:
    _length(m.terms, 1, MAX_TERMS_BYTES, "bad_terms", error)
    _length(m.client_signature, SIGNATURE_BYTES, SIGNATURE_BYTES, "bad_signature", error)
    if len(m.transitions) > MAX_TRANSITIONS:
        raise error("too_many_transitions", str(len(m.transitions)))
    for transition in m.transitions:
        _length(transition, 1, MAX_TRANSITION_BYTES, "bad_transition", error)
    _text(m.state, 1, MAX_STATE_BYTES, "bad_state", error)
    _uint64(error, m.sequence)
    _length(m.state_digest, DIGEST_BYTES, DIGEST_BYTES, "bad_state_digest", error)
    _length(m.replica, 1, MAX_PARTY_ID_BYTES, "bad_party_id", error)
    _length(m.replica_signature, SIGNATURE_BYTES, SIGNATURE_BYTES, "bad_signature", error)


def _check_execute(m: ContractExecute, error: ErrorType) -> None:
    _length(m.transition, 1, MAX_TRANSITION_BYTES, "bad_transition", error)


def _check_execute_result(m: ExecuteResult, error: ErrorType) -> None:
    _text(m.reason, 0, MAX_REASON_BYTES, "bad_reason", error)
    _uint64(error, m.sequence)
    if not (len(m.state_digest) == DIGEST_BYTES or (not m.accepted and not m.state_digest)):
        raise error("bad_state_digest", f"{len(m.state_digest)} bytes")


def _check_refused(m: Refused, error: ErrorType) -> None:
    _text(m.reason, 1, MAX_REASON_BYTES, "bad_reason", error)


def _check_audit(m: AuditChallenge, error: ErrorType) -> None:
    _length(m.contract_id, CONTRACT_ID_BYTES, CONTRACT_ID_BYTES, "bad_contract_id", error)
    _length(m.shard_address, SHARD_ADDRESS_BYTES, SHARD_ADDRESS_BYTES, "bad_shard_address", error)
    _length(m.nonce, NONCE_BYTES, NONCE_BYTES, "bad_nonce", error)
    if not 1 <= len(m.leaf_indices) <= MAX_CHALLENGE_LEAVES:
        count = len(m.leaf_indices)
        raise error("bad_leaf_indices", f"{count} indices, want 1..{MAX_CHALLENGE_LEAVES}")
    _uint32(error, *m.leaf_indices)
    if len(set(m.leaf_indices)) != len(m.leaf_indices):
        raise error("duplicate_leaf_index")


def _check_proof_item(item: ProofItem, error: ErrorType) -> None:
    _uint32(error, item.index)
    _length(item.leaf, 0, MAX_LEAF_BYTES, "bad_leaf", error)
    if len(item.path) > MAX_PATH_LENGTH:
        raise error("bad_path", f"{len(item.path)} hashes, want at most {MAX_PATH_LENGTH}")
    for node in item.path:
        _length(node, DIGEST_BYTES, DIGEST_BYTES, "bad_path", error)


def _check_audit_proof(m: AuditProof, error: ErrorType) -> None:
    _length(m.nonce, NONCE_BYTES, NONCE_BYTES, "bad_nonce", error)
    if len(m.items) > MAX_CHALLENGE_LEAVES:
        raise error("too_many_items", f"{len(m.items)} items, want at most {MAX_CHALLENGE_LEAVES}")
    for item in m.items:
        _check_proof_item(item, error)
    total = sum(len(item.leaf) for item in m.items)
    if total > MAX_PROOF_LEAF_BYTES:
        raise error(
            "proof_too_large", f"{total} bytes of leaves, want at most {MAX_PROOF_LEAF_BYTES}"
        )


# -- decoding --------------------------------------------------------------------


def _parse(pb: market_pb2.MarketRequest | market_pb2.MarketResponse, data: bytes) -> str | None:
    try:
        pb.ParseFromString(data)
    except DecodeError as error:
        raise RemoteProtocolError("garbage", str(error)) from error
    kind: str | None = pb.WhichOneof("body")
    return kind


def decode_request(data: bytes) -> MarketRequest:
    """A MarketRequest frame from a peer as a typed, validated value."""
    pb = market_pb2.MarketRequest()
    message: MarketRequest
    match _parse(pb, data):
        case "quote_request":
            q = pb.quote_request
            message = QuoteRequest(
                q.size_bytes, q.duration_seconds, q.tier, q.sla_requested, q.client
            )
        case "deploy":
            message = ContractDeploy(pb.deploy.terms, pb.deploy.client_signature)
        case "query":
            message = ContractQuery(pb.query.contract_id)
        case "execute":
            message = ContractExecute(pb.execute.transition)
        case "audit":
            a = pb.audit
            message = AuditChallenge(a.contract_id, a.shard_address, a.nonce, tuple(a.leaf_indices))
        case _:
            # No member of the oneof set: empty, or a request type from a newer peer.
            raise RemoteProtocolError("unknown_message")
    check_request(message, RemoteProtocolError)
    return message


def decode_response(data: bytes) -> MarketResponse:
    """A MarketResponse frame from a peer as a typed, validated value."""
    pb = market_pb2.MarketResponse()
    message: MarketResponse
    match _parse(pb, data):
        case "quote":
            q = pb.quote
            message = Quote(
                quote_id=q.quote_id,
                provider=q.provider,
                provider_public_key=q.provider_public_key,
                size_bytes=q.size_bytes,
                duration_seconds=q.duration_seconds,
                tier=q.tier,
                sla_requested=q.sla_requested,
                lines=tuple(
                    PriceLine(line.key, line.label, line.micro_tokens, line.detail)
                    for line in q.lines
                ),
                total_micro_tokens=q.total_micro_tokens,
                valid_until_ms=q.valid_until_ms,
                free_capacity_bytes=q.free_capacity_bytes,
                signature=q.signature,
            )
        case "deploy_result":
            d = pb.deploy_result
            message = DeployResult(d.accepted, d.countersign, d.reason)
        case "record":
            r = pb.record
            message = ContractRecord(
                terms=r.terms,
                client_signature=r.client_signature,
                transitions=tuple(r.transitions),
                state=r.state,
                sequence=r.sequence,
                state_digest=r.state_digest,
                replica=r.replica,
                replica_signature=r.replica_signature,
            )
        case "not_found":
            message = NotFound()
        case "execute_result":
            e = pb.execute_result
            message = ExecuteResult(e.accepted, e.reason, e.sequence, e.state_digest)
        case "refused":
            message = Refused(pb.refused.reason)
        case "audit_proof":
            p = pb.audit_proof
            message = AuditProof(
                nonce=p.nonce,
                items=tuple(ProofItem(item.index, item.leaf, tuple(item.path)) for item in p.items),
            )
        case _:
            raise RemoteProtocolError("unknown_message")
    check_response(message, RemoteProtocolError)
    return message


def check_request(message: MarketRequest, error: ErrorType = LocalProtocolError) -> None:
    """Raise ``error`` (with the rule's reason) if ``message`` breaks a rule."""
    match message:
        case QuoteRequest():
            _check_quote_request(message, error)
        case ContractDeploy():
            _check_deploy(message, error)
        case ContractQuery():
            _check_query(message, error)
        case ContractExecute():
            _check_execute(message, error)
        case AuditChallenge():
            _check_audit(message, error)
        case _:
            raise error("unknown_message", type(message).__name__)


def check_response(message: MarketResponse, error: ErrorType = LocalProtocolError) -> None:
    """Raise ``error`` (with the rule's reason) if ``message`` breaks a rule."""
    match message:
        case Quote():
            _check_quote(message, error)
        case DeployResult():
            _check_deploy_result(message, error)
        case ContractRecord():
            _check_record(message, error)
        case NotFound():
            pass
        case ExecuteResult():
            _check_execute_result(message, error)
        case Refused():
            _check_refused(message, error)
        case AuditProof():
            _check_audit_proof(message, error)
        case _:
            raise error("unknown_message", type(message).__name__)


# -- encoding --------------------------------------------------------------------


def encode_request(message: MarketRequest) -> bytes:
    """The MarketRequest frame payload; LocalProtocolError if a rule is broken."""
    check_request(message)
    pb = market_pb2.MarketRequest()
    match message:
        case QuoteRequest():
            pb.quote_request.size_bytes = message.size_bytes
            pb.quote_request.duration_seconds = message.duration_seconds
            pb.quote_request.tier = message.tier
            pb.quote_request.sla_requested = message.sla_requested
            pb.quote_request.client = message.client
        case ContractDeploy():
            pb.deploy.terms = message.terms
            pb.deploy.client_signature = message.client_signature
        case ContractQuery():
            pb.query.contract_id = message.contract_id
        case ContractExecute():
            pb.execute.transition = message.transition
        case AuditChallenge():
            a = pb.audit
            a.contract_id = message.contract_id
            a.shard_address = message.shard_address
            a.nonce = message.nonce
            a.leaf_indices.extend(message.leaf_indices)
    return pb.SerializeToString(deterministic=True)


def encode_response(message: MarketResponse) -> bytes:
    """The MarketResponse frame payload; LocalProtocolError if a rule is broken."""
    check_response(message)
    pb = market_pb2.MarketResponse()
    match message:
        case Quote():
            q = pb.quote
            q.quote_id = message.quote_id
            q.provider = message.provider
            q.provider_public_key = message.provider_public_key
            q.size_bytes = message.size_bytes
            q.duration_seconds = message.duration_seconds
            q.tier = message.tier
            q.sla_requested = message.sla_requested
            for line in message.lines:
                q.lines.add(
                    key=line.key,
                    label=line.label,
                    micro_tokens=line.micro_tokens,
                    detail=line.detail,
                )
            q.total_micro_tokens = message.total_micro_tokens
            q.valid_until_ms = message.valid_until_ms
            q.free_capacity_bytes = message.free_capacity_bytes
            q.signature = message.signature
        case DeployResult():
            pb.deploy_result.SetInParent()  # a default DeployResult is still one
            pb.deploy_result.accepted = message.accepted
            pb.deploy_result.countersign = message.countersign
            pb.deploy_result.reason = message.reason
        case ContractRecord():
            r = pb.record
            r.terms = message.terms
            r.client_signature = message.client_signature
            r.transitions.extend(message.transitions)
            r.state = message.state
            r.sequence = message.sequence
            r.state_digest = message.state_digest
            r.replica = message.replica
            r.replica_signature = message.replica_signature
        case NotFound():
            pb.not_found.SetInParent()
        case ExecuteResult():
            pb.execute_result.SetInParent()
            pb.execute_result.accepted = message.accepted
            pb.execute_result.reason = message.reason
            pb.execute_result.sequence = message.sequence
            pb.execute_result.state_digest = message.state_digest
        case Refused():
            pb.refused.reason = message.reason
        case AuditProof():
            p = pb.audit_proof
            p.SetInParent()
            p.nonce = message.nonce
            for item in message.items:
                p.items.add(index=item.index, leaf=item.leaf, path=item.path)
    return pb.SerializeToString(deterministic=True)


# -- quote signatures --------------------------------------------------------------


def _blob(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def quote_signing_bytes(quote: Quote) -> bytes:
    """What the provider signs: every field of ``quote`` but the signature.

    A hand-written canonical encoding, independent of protobuf (whose
    serialisation is not canonical across implementations). Integers are
    big-endian; ``blob(x)`` is a 4-byte unsigned length followed by ``x``;
    strings are their UTF-8 bytes as a blob::

        blob("zhtp/market/quote/v1")          domain tag
        blob(quote_id)  blob(provider)  blob(provider_public_key)
        u64 size_bytes  u64 duration_seconds  blob(tier)  u8 sla_requested (0/1)
        u32 number of lines, then per line:
            blob(key)  blob(label)  i64 micro_tokens (two's complement)  blob(detail)
        u64 total_micro_tokens  u64 valid_until_ms  u64 free_capacity_bytes

    Raises LocalProtocolError if ``quote`` breaks a rule (other than having
    no signature yet), so only a well-formed quote is ever signed.
    """
    _check_unsigned_quote(quote, LocalProtocolError)
    parts = [
        _blob(QUOTE_DOMAIN),
        _blob(quote.quote_id),
        _blob(quote.provider),
        _blob(quote.provider_public_key),
        struct.pack(">QQ", quote.size_bytes, quote.duration_seconds),
        _blob(quote.tier.encode("utf-8")),
        struct.pack(">BI", int(quote.sla_requested), len(quote.lines)),
    ]
    for line in quote.lines:
        parts += [
            _blob(line.key.encode("utf-8")),
            _blob(line.label.encode("utf-8")),
            struct.pack(">q", line.micro_tokens),
            _blob(line.detail.encode("utf-8")),
        ]
    parts.append(
        struct.pack(
            ">QQQ", quote.total_micro_tokens, quote.valid_until_ms, quote.free_capacity_bytes
        )
    )
    return b"".join(parts)


def sign_quote(quote: Quote, private_key: Ed25519PrivateKey) -> Quote:
    """``quote`` with its signature by ``private_key``, whose public half it must name."""
    public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    if public != quote.provider_public_key:
        raise LocalProtocolError("wrong_key", "the quote names another provider key")
    return replace(quote, signature=private_key.sign(quote_signing_bytes(quote)))


def verify_quote_signature(quote: Quote) -> bool:
    """True if ``quote.signature`` is its provider key's signature over the quote."""
    try:
        message = quote_signing_bytes(quote)
        key = Ed25519PublicKey.from_public_bytes(quote.provider_public_key)
        key.verify(quote.signature, message)
    except (ProtocolError, ValueError, InvalidSignature):
        return False
    return True


def quote_is_valid(quote: Quote, now_ms: int) -> bool:
    """True while ``now_ms`` (Unix ms, the caller's clock) is at most ``valid_until_ms``."""
    return now_ms <= quote.valid_until_ms
