# Generated from proto/market.proto by `python -m protocols.pbgen`; do not edit.
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class QuoteRequest(_message.Message):
    __slots__ = ("size_bytes", "duration_seconds", "tier", "sla_requested", "client")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SLA_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    duration_seconds: int
    tier: str
    sla_requested: bool
    client: bytes
    def __init__(self, size_bytes: _Optional[int] = ..., duration_seconds: _Optional[int] = ..., tier: _Optional[str] = ..., sla_requested: _Optional[bool] = ..., client: _Optional[bytes] = ...) -> None: ...

class PriceLine(_message.Message):
    __slots__ = ("key", "label", "micro_tokens", "detail")
    KEY_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    MICRO_TOKENS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    key: str
    label: str
    micro_tokens: int
    detail: str
    def __init__(self, key: _Optional[str] = ..., label: _Optional[str] = ..., micro_tokens: _Optional[int] = ..., detail: _Optional[str] = ...) -> None: ...

class Quote(_message.Message):
    __slots__ = ("quote_id", "provider", "provider_public_key", "size_bytes", "duration_seconds", "tier", "sla_requested", "lines", "total_micro_tokens", "valid_until_ms", "free_capacity_bytes", "signature")
    QUOTE_ID_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SLA_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MICRO_TOKENS_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    FREE_CAPACITY_BYTES_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    quote_id: bytes
    provider: bytes
    provider_public_key: bytes
    size_bytes: int
    duration_seconds: int
    tier: str
    sla_requested: bool
    lines: _containers.RepeatedCompositeFieldContainer[PriceLine]
    total_micro_tokens: int
    valid_until_ms: int
    free_capacity_bytes: int
    signature: bytes
    def __init__(self, quote_id: _Optional[bytes] = ..., provider: _Optional[bytes] = ..., provider_public_key: _Optional[bytes] = ..., size_bytes: _Optional[int] = ..., duration_seconds: _Optional[int] = ..., tier: _Optional[str] = ..., sla_requested: _Optional[bool] = ..., lines: _Optional[_Iterable[_Union[PriceLine, _Mapping]]] = ..., total_micro_tokens: _Optional[int] = ..., valid_until_ms: _Optional[int] = ..., free_capacity_bytes: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class ContractDeploy(_message.Message):
    __slots__ = ("terms", "client_signature")
    TERMS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    terms: bytes
    client_signature: bytes
    def __init__(self, terms: _Optional[bytes] = ..., client_signature: _Optional[bytes] = ...) -> None: ...

class DeployResult(_message.Message):
    __slots__ = ("accepted", "countersign", "reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    COUNTERSIGN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    countersign: bytes
    reason: str
    def __init__(self, accepted: _Optional[bool] = ..., countersign: _Optional[bytes] = ..., reason: _Optional[str] = ...) -> None: ...

class ContractQuery(_message.Message):
    __slots__ = ("contract_id",)
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    contract_id: bytes
    def __init__(self, contract_id: _Optional[bytes] = ...) -> None: ...

class ContractRecord(_message.Message):
    __slots__ = ("terms", "client_signature", "transitions", "state", "sequence", "state_digest", "replica", "replica_signature")
    TERMS_FIELD_NUMBER: _ClassVar[int]
    CLIENT_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    TRANSITIONS_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    REPLICA_SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    terms: bytes
    client_signature: bytes
    transitions: _containers.RepeatedScalarFieldContainer[bytes]
    state: str
    sequence: int
    state_digest: bytes
    replica: bytes
    replica_signature: bytes
    def __init__(self, terms: _Optional[bytes] = ..., client_signature: _Optional[bytes] = ..., transitions: _Optional[_Iterable[bytes]] = ..., state: _Optional[str] = ..., sequence: _Optional[int] = ..., state_digest: _Optional[bytes] = ..., replica: _Optional[bytes] = ..., replica_signature: _Optional[bytes] = ...) -> None: ...

class NotFound(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ContractExecute(_message.Message):
    __slots__ = ("transition",)
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    transition: bytes
    def __init__(self, transition: _Optional[bytes] = ...) -> None: ...

class ExecuteResult(_message.Message):
    __slots__ = ("accepted", "reason", "sequence", "state_digest")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    STATE_DIGEST_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    reason: str
    sequence: int
    state_digest: bytes
    def __init__(self, accepted: _Optional[bool] = ..., reason: _Optional[str] = ..., sequence: _Optional[int] = ..., state_digest: _Optional[bytes] = ...) -> None: ...

class AuditChallenge(_message.Message):
    __slots__ = ("contract_id", "shard_address", "nonce", "leaf_indices")
    CONTRACT_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    LEAF_INDICES_FIELD_NUMBER: _ClassVar[int]
    contract_id: bytes
    shard_address: bytes
    nonce: bytes
    leaf_indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, contract_id: _Optional[bytes] = ..., shard_address: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., leaf_indices: _Optional[_Iterable[int]] = ...) -> None: ...

class ProofItem(_message.Message):
    __slots__ = ("index", "leaf", "path")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    LEAF_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    index: int
    leaf: bytes
    path: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, index: _Optional[int] = ..., leaf: _Optional[bytes] = ..., path: _Optional[_Iterable[bytes]] = ...) -> None: ...

class AuditProof(_message.Message):
    __slots__ = ("nonce", "items")
    NONCE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    nonce: bytes
    items: _containers.RepeatedCompositeFieldContainer[ProofItem]
    def __init__(self, nonce: _Optional[bytes] = ..., items: _Optional[_Iterable[_Union[ProofItem, _Mapping]]] = ...) -> None: ...

class Refused(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class MarketRequest(_message.Message):
    __slots__ = ("quote_request", "deploy", "query", "execute", "audit")
    QUOTE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_FIELD_NUMBER: _ClassVar[int]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    quote_request: QuoteRequest
    deploy: ContractDeploy
    query: ContractQuery
    execute: ContractExecute
    audit: AuditChallenge
    def __init__(self, quote_request: _Optional[_Union[QuoteRequest, _Mapping]] = ..., deploy: _Optional[_Union[ContractDeploy, _Mapping]] = ..., query: _Optional[_Union[ContractQuery, _Mapping]] = ..., execute: _Optional[_Union[ContractExecute, _Mapping]] = ..., audit: _Optional[_Union[AuditChallenge, _Mapping]] = ...) -> None: ...

class MarketResponse(_message.Message):
    __slots__ = ("quote", "deploy_result", "record", "not_found", "execute_result", "refused", "audit_proof")
    QUOTE_FIELD_NUMBER: _ClassVar[int]
    DEPLOY_RESULT_FIELD_NUMBER: _ClassVar[int]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    EXECUTE_RESULT_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    AUDIT_PROOF_FIELD_NUMBER: _ClassVar[int]
    quote: Quote
    deploy_result: DeployResult
    record: ContractRecord
    not_found: NotFound
    execute_result: ExecuteResult
    refused: Refused
    audit_proof: AuditProof
    def __init__(self, quote: _Optional[_Union[Quote, _Mapping]] = ..., deploy_result: _Optional[_Union[DeployResult, _Mapping]] = ..., record: _Optional[_Union[ContractRecord, _Mapping]] = ..., not_found: _Optional[_Union[NotFound, _Mapping]] = ..., execute_result: _Optional[_Union[ExecuteResult, _Mapping]] = ..., refused: _Optional[_Union[Refused, _Mapping]] = ..., audit_proof: _Optional[_Union[AuditProof, _Mapping]] = ...) -> None: ...
