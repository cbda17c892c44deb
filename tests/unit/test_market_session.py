"""/zhtp/market/1.0.0 on in-memory streams: the session, dispatch and the client.

The server side is the real ``serve_market_stream``; the only test double is
:class:`StubBackend`, a real object implementing ``MarketBackend`` that
returns fixed, valid answers. Hostile clients are scripted frame by frame
against the real session (:func:`converse`); hostile servers are scripted
against the real client (:class:`ScriptedNetwork`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from protocols import ids
from protocols.errors import LocalProtocolError, RemoteProtocolError
from protocols.framing import (
    TRANSPORT_ERRORS,
    ByteStream,
    Counters,
    FrameReader,
    StreamGate,
    encode_frame,
    encode_uvarint,
)
from protocols.market.client import MarketClient
from protocols.market.handlers import MarketBackend
from protocols.market.messages import (
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
    sign_quote,
)
from protocols.market.session import serve_market_stream
from tests.unit.memory_stream import MemoryStream, loaded_stream, memory_stream_pair
from tests.unit.test_market_messages import request_bytes

LIMITS = ids.MARKET_LIMITS
MAX_FRAME = LIMITS.max_frame
CLIENT_PEER = b"\x00\x24\x08\x01\x12\x20" + b"\xc1" * 32
SERVER_PEER = b"\x00\x24\x08\x01\x12\x20" + b"\x5e" * 32
NOW_MS = 1_700_000_000_000
VALID_FOR_MS = 60_000
DIGEST = b"\xd1" * 32
SIG = b"\x51" * 64
KNOWN_CONTRACT = b"\xcc" * 32
# A contract whose record is about as large as node/market/contract.py allows
# (1 MiB: terms and 4096 transitions); it did not fit the old 256 KiB frames.
LARGE_CONTRACT = b"\xbb" * 32
LARGE_TRANSITION_BYTES = 230
LARGE_TERMS_BYTES = (1 << 20) - 4096 * LARGE_TRANSITION_BYTES - 1024
SHARD = b"\x5a" * 32
NONCE = b"\x0e" * 32

QUOTE_REQUEST = QuoteRequest(1 << 30, 30 * 86400, "warm", True, CLIENT_PEER)
DEPLOY = ContractDeploy(b"canonical terms", SIG)
QUERY = ContractQuery(KNOWN_CONTRACT)
EXECUTE = ContractExecute(b"a signed transition")
AUDIT = AuditChallenge(KNOWN_CONTRACT, SHARD, NONCE, (5, 0, 17))


def stub_proof_item(index: int) -> ProofItem:
    """Any bytes of a proof's shape: a 4 KiB leaf and 12 path hashes."""
    leaf = index.to_bytes(4, "big") * 1024
    return ProofItem(index, leaf, tuple(bytes([index % 256, level]) * 16 for level in range(12)))


def large_record(replica: bytes) -> ContractRecord:
    return ContractRecord(
        terms=b"T" * LARGE_TERMS_BYTES,
        client_signature=SIG,
        transitions=tuple(
            i.to_bytes(2, "big") * (LARGE_TRANSITION_BYTES // 2) for i in range(4096)
        ),
        state="monitoring",
        sequence=4096,
        state_digest=DIGEST,
        replica=replica,
        replica_signature=SIG,
    )


class StubBackend:
    """A MarketBackend with fixed answers: quotes signed by its own key.

    It refuses quotes for the "archive" tier ("no capacity"), rejects deploys
    of terms b"bad", knows two contracts (KNOWN_CONTRACT, and LARGE_CONTRACT
    with a record of about 1 MiB), accepts every transition but b"stale" and
    answers audits of KNOWN_CONTRACT with :func:`stub_proof_item` for each
    challenged leaf (refusing others). ``calls`` records (method, peer, request).
    """

    def __init__(self, provider: bytes = SERVER_PEER, clock_ms: int = NOW_MS) -> None:
        self.provider = provider
        self.key = Ed25519PrivateKey.from_private_bytes(b"\x42" * 32)
        self.public_key = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.clock_ms = clock_ms
        self.calls: list[tuple[str, bytes, MarketRequest]] = []

    async def quote(self, peer: bytes, request: QuoteRequest) -> Quote | Refused:
        self.calls.append(("quote", peer, request))
        if request.tier == "archive":
            return Refused("no capacity")
        lines = (
            PriceLine("base", "base storage", 1_000_000, "1 GiB x 30 days"),
            PriceLine("sla_premium", "SLA premium", 100_000, "+10%"),
            PriceLine("tier", "warm tier", -50_000, ""),
        )
        unsigned = Quote(
            quote_id=bytes(range(16)),
            provider=self.provider,
            provider_public_key=self.public_key,
            size_bytes=request.size_bytes,
            duration_seconds=request.duration_seconds,
            tier=request.tier,
            sla_requested=request.sla_requested,
            lines=lines,
            total_micro_tokens=1_050_000,
            valid_until_ms=self.clock_ms + VALID_FOR_MS,
            free_capacity_bytes=1 << 40,
        )
        return sign_quote(unsigned, self.key)

    async def deploy(self, peer: bytes, request: ContractDeploy) -> DeployResult:
        self.calls.append(("deploy", peer, request))
        if request.terms == b"bad":
            return DeployResult(False, reason="quote expired")
        return DeployResult(True, countersign=b"countersign:" + request.terms)

    async def query(self, peer: bytes, request: ContractQuery) -> ContractRecord | NotFound:
        self.calls.append(("query", peer, request))
        if request.contract_id == LARGE_CONTRACT:
            return large_record(self.provider)
        if request.contract_id != KNOWN_CONTRACT:
            return NotFound()
        return ContractRecord(
            terms=b"canonical terms",
            client_signature=SIG,
            transitions=(b"countersign", b"start monitoring"),
            state="monitoring",
            sequence=2,
            state_digest=DIGEST,
            replica=self.provider,
            replica_signature=SIG,
        )

    async def execute(self, peer: bytes, request: ContractExecute) -> ExecuteResult:
        self.calls.append(("execute", peer, request))
        if request.transition == b"stale":
            return ExecuteResult(False, "sequence 2 is not 3", 2, DIGEST)
        return ExecuteResult(True, "", 3, DIGEST)

    async def audit(self, peer: bytes, request: AuditChallenge) -> AuditProof | Refused:
        self.calls.append(("audit", peer, request))
        if request.contract_id != KNOWN_CONTRACT:
            return Refused("no such contract here")
        return AuditProof(request.nonce, tuple(map(stub_proof_item, request.leaf_indices)))


def _typed(backend: StubBackend) -> MarketBackend:
    return backend  # mypy checks here that the stub implements the Protocol


def frame(message: MarketRequest) -> bytes:
    return encode_frame(encode_request(message), MAX_FRAME)


# -- hostile clients: scripted against the real session ---------------------------


class RawClient:
    """The client end of one stream to a running session, driven by a test script."""

    def __init__(self, stream: MemoryStream, server_end: MemoryStream) -> None:
        self.stream = stream
        self.server_end = server_end
        self.reader = FrameReader(stream, MAX_FRAME)
        self.session_over = trio.Event()
        self.broken = False
        self.answer: MarketResponse | None = None

    async def send_raw(self, data: bytes) -> None:
        await self.stream.write(data)

    async def ask(self, request: MarketRequest) -> MarketResponse | None:
        await self.stream.write(frame(request))
        raw = await self.reader.read_frame()
        return None if raw is None else decode_response(raw)

    async def run(self, script: Callable[[RawClient], Awaitable[None]]) -> None:
        try:
            await script(self)
        except TRANSPORT_ERRORS:
            self.broken = True  # the session reset the stream under us


@dataclasses.dataclass
class Server:
    backend: Any = dataclasses.field(default_factory=StubBackend)
    counters: Counters = dataclasses.field(default_factory=Counters)


async def converse(
    server: Server,
    script: Callable[[RawClient], Awaitable[None]],
    *,
    gate: StreamGate | None = None,
) -> RawClient:
    """Serve one stream with the real session while ``script`` plays the client.

    The session runs in this task, so its own exceptions reach the test as
    they are.
    """
    client_end, server_end = memory_stream_pair()
    client = RawClient(client_end, server_end)
    escaped: Exception | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run, script)
        try:
            await serve_market_stream(
                server_end, CLIENT_PEER, server.backend, server.counters, gate
            )
        except Exception as error:  # re-raised below, outside the nursery's group
            escaped = error
        finally:
            client.session_over.set()
    if escaped is not None:
        raise escaped
    return client


def assert_reset(client: RawClient) -> None:
    assert client.server_end.was_reset
    assert not client.server_end.closed


def assert_closed(client: RawClient) -> None:
    assert client.server_end.closed
    assert not client.server_end.was_reset


def one_request(request: MarketRequest) -> Callable[[RawClient], Awaitable[None]]:
    async def script(client: RawClient) -> None:
        client.answer = await client.ask(request)
        await client.stream.close()

    return script


@pytest.mark.parametrize(
    ("request_", "expected_type", "event"),
    [
        (QUOTE_REQUEST, Quote, "quote_quoted"),
        (dataclasses.replace(QUOTE_REQUEST, tier="archive"), Refused, "quote_refused"),
        (DEPLOY, DeployResult, "deploy_accepted"),
        (ContractDeploy(b"bad", SIG), DeployResult, "deploy_rejected"),
        (QUERY, ContractRecord, "query_found"),
        (ContractQuery(bytes(32)), NotFound, "query_not_found"),
        (EXECUTE, ExecuteResult, "execute_accepted"),
        (ContractExecute(b"stale"), ExecuteResult, "execute_rejected"),
        (AUDIT, AuditProof, "audit_proved"),
        (dataclasses.replace(AUDIT, contract_id=bytes(32)), Refused, "audit_refused"),
        (ContractQuery(LARGE_CONTRACT), ContractRecord, "query_found"),
    ],
    ids=[
        "quote",
        "quote_refused",
        "deploy",
        "deploy_rejected",
        "query",
        "query_not_found",
        "execute",
        "execute_rejected",
        "audit",
        "audit_refused",
        "large_record",
    ],
)
async def test_a_request_gets_its_response_and_the_stream_closes(
    request_: MarketRequest, expected_type: type, event: str
) -> None:
    server = Server()
    client = await converse(server, one_request(request_))
    assert isinstance(client.answer, expected_type)
    assert_closed(client)
    assert server.counters.snapshot() == {event: 1, "served": 1}
    [(_, peer, seen)] = server.backend.calls
    assert (peer, seen) == (CLIENT_PEER, request_)


async def test_an_audit_gets_its_proof() -> None:
    server = Server()
    client = await converse(server, one_request(AUDIT))
    assert client.answer == AuditProof(NONCE, tuple(map(stub_proof_item, (5, 0, 17))))


async def test_a_one_mib_record_travels_in_one_frame() -> None:
    server = Server()
    client = await converse(server, one_request(ContractQuery(LARGE_CONTRACT)))
    assert client.answer == large_record(SERVER_PEER)
    assert len(encode_response(client.answer)) > 1 << 20


async def test_refusal_reaches_the_client_verbatim() -> None:
    server = Server()
    client = await converse(server, one_request(dataclasses.replace(QUOTE_REQUEST, tier="archive")))
    assert client.answer == Refused("no capacity")


async def _send_and_wait(client: RawClient, data: bytes) -> None:
    await client.send_raw(data)
    await client.session_over.wait()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (encode_uvarint(MAX_FRAME + 1) + b"x" * 64, "frame_too_large"),
        (encode_frame(b"\xff\xfe\xfd not protobuf", MAX_FRAME), "garbage"),
        (encode_frame(b"", MAX_FRAME), "unknown_message"),
        (encode_frame(b"\x32\x00", MAX_FRAME), "unknown_message"),  # oneof member 6
        (encode_uvarint(100) + b"short", "truncated_frame"),
        (b"\xff" * 10, "varint_too_long"),
        (encode_frame(request_bytes(QUOTE_REQUEST, tier="t" * 17), MAX_FRAME), "bad_tier"),
        (
            encode_frame(request_bytes(AUDIT, leaf_indices=(1, 1)), MAX_FRAME),
            "duplicate_leaf_index",
        ),
    ],
    ids=[
        "oversized",
        "garbage",
        "empty",
        "unknown",
        "truncated",
        "long_varint",
        "bad_tier",
        "duplicate_leaf_index",
    ],
)
async def test_bad_input_resets_and_reaches_no_backend(data: bytes, reason: str) -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        await client.send_raw(data)
        await client.stream.close()
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {reason: 1}
    assert server.backend.calls == []
    assert client.stream.unread == 0  # nothing was answered


async def test_oversized_frame_is_reset_before_its_payload_is_read() -> None:
    server = Server()
    client = await converse(
        server, lambda c: _send_and_wait(c, encode_uvarint(MAX_FRAME + 1) + b"x" * 1000)
    )
    assert_reset(client)
    assert server.counters.snapshot() == {"frame_too_large": 1}


async def test_second_request_on_a_stream_is_reset() -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        assert isinstance(await client.ask(QUERY), ContractRecord)
        await client.send_raw(frame(QUERY))
        await client.session_over.wait()

    client = await converse(server, script)
    assert_reset(client)
    assert server.counters.snapshot() == {"query_found": 1, "served": 1, "second_request": 1}
    assert len(server.backend.calls) == 1


async def test_empty_stream_is_closed_quietly() -> None:
    server = Server()

    async def script(client: RawClient) -> None:
        await client.stream.close()

    client = await converse(server, script)
    assert_closed(client)
    assert server.counters.snapshot() == {}


async def test_silent_client_is_closed_after_idle_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server()
    client = await converse(server, lambda c: c.session_over.wait())
    assert_closed(client)
    assert server.counters.snapshot() == {"idle_close": 1}


async def test_client_stalling_inside_a_frame_is_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server()
    client = await converse(server, lambda c: _send_and_wait(c, frame(QUOTE_REQUEST)[:10]))
    assert_reset(client)
    assert server.counters.snapshot() == {"stalled_frame": 1}


class StuckWrites:
    """A stream whose peer never reads: every write waits forever."""

    def __init__(self, inner: MemoryStream) -> None:
        self.inner = inner

    async def read(self, n: int | None = None) -> bytes:
        return await self.inner.read(n)

    async def write(self, data: bytes) -> None:
        await trio.sleep_forever()

    async def close(self) -> None:
        await self.inner.close()

    async def reset(self) -> None:
        await self.inner.reset()


async def test_client_not_reading_the_answer_is_reset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    server = Server()
    stream = loaded_stream(frame(QUERY), end=False)
    await serve_market_stream(StuckWrites(stream), CLIENT_PEER, server.backend, server.counters)
    assert stream.was_reset
    assert server.counters.snapshot() == {"query_found": 1, "write_stalled": 1}


async def test_too_many_streams_from_one_peer_are_reset() -> None:
    server = Server()
    gate = StreamGate(max_per_peer=1)
    assert gate.try_enter(CLIENT_PEER)  # one stream already open
    client = await converse(server, lambda c: c.session_over.wait(), gate=gate)
    assert_reset(client)
    assert server.counters.snapshot() == {"too_many_streams": 1}
    assert gate.open_streams(CLIENT_PEER) == 1


# -- our own bugs propagate -----------------------------------------------------------


class BrokenBackend(StubBackend):
    async def deploy(self, peer: bytes, request: ContractDeploy) -> DeployResult:
        raise ZeroDivisionError("backend bug")


class WrongKindBackend(StubBackend):
    async def query(self, peer: bytes, request: ContractQuery) -> Any:
        return DeployResult(True, b"c")


class WrongQuoteBackend(StubBackend):
    async def quote(self, peer: bytes, request: QuoteRequest) -> Quote | Refused:
        quote = await super().quote(peer, dataclasses.replace(request, size_bytes=1))
        return quote


class WrongKindAuditBackend(StubBackend):
    async def audit(self, peer: bytes, request: AuditChallenge) -> Any:
        return NotFound()


class WrongProofBackend(StubBackend):
    async def audit(self, peer: bytes, request: AuditChallenge) -> AuditProof | Refused:
        proof = await super().audit(peer, request)
        assert isinstance(proof, AuditProof)
        return dataclasses.replace(proof, items=proof.items[::-1])


class InvalidAnswerBackend(StubBackend):
    async def execute(self, peer: bytes, request: ContractExecute) -> ExecuteResult:
        return ExecuteResult(True, "", 3, b"")  # accepted without a state digest


@pytest.mark.parametrize(
    ("backend", "request_", "error", "reason"),
    [
        (BrokenBackend(), DEPLOY, ZeroDivisionError, None),
        (WrongKindBackend(), QUERY, LocalProtocolError, "wrong_response"),
        (WrongQuoteBackend(), QUOTE_REQUEST, LocalProtocolError, "quote_mismatch"),
        (InvalidAnswerBackend(), EXECUTE, LocalProtocolError, "bad_state_digest"),
        (WrongKindAuditBackend(), AUDIT, LocalProtocolError, "wrong_response"),
        (WrongProofBackend(), AUDIT, LocalProtocolError, "proof_mismatch"),
    ],
    ids=[
        "exception",
        "wrong_kind",
        "quote_mismatch",
        "invalid_answer",
        "audit_wrong_kind",
        "proof_mismatch",
    ],
)
async def test_backend_bug_propagates_and_resets(
    backend: StubBackend, request_: MarketRequest, error: type[Exception], reason: str | None
) -> None:
    server = Server(backend)

    async def script(client: RawClient) -> None:
        await client.send_raw(frame(request_))
        await client.session_over.wait()

    with pytest.raises(error) as info:
        await converse(server, script)
    if reason is not None:
        assert info.value.reason == reason  # type: ignore[attr-defined]
    assert server.counters.snapshot() == {}


class RejectingBackend(StubBackend):
    async def execute(self, peer: bytes, request: ContractExecute) -> ExecuteResult:
        raise RemoteProtocolError("bad_transition_signature", "not signed by the client")


async def test_backend_blaming_the_peer_resets_and_counts() -> None:
    server = Server(RejectingBackend())
    client = await converse(server, lambda c: _send_and_wait(c, frame(EXECUTE)))
    assert_reset(client)
    assert server.counters.snapshot() == {"bad_transition_signature": 1}


# -- the real client against the real session ------------------------------------------


class MarketNetwork:
    """A StreamOpener whose every stream is served by ``serve_market_stream``."""

    def __init__(self, nursery: trio.Nursery, server: Server) -> None:
        self.nursery = nursery
        self.server = server
        self.streams: list[tuple[MemoryStream, MemoryStream]] = []

    async def open(self, peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> ByteStream:
        assert (peer_id, protocol) == (SERVER_PEER, ids.MARKET)
        client, server_end = memory_stream_pair()
        self.streams.append((client, server_end))
        self.nursery.start_soon(
            serve_market_stream, server_end, CLIENT_PEER, self.server.backend, self.server.counters
        )
        return client

    def client(self, clock_ms: int = NOW_MS, timeout: float = 5.0) -> MarketClient:
        return MarketClient(self.open, timeout=timeout, clock_ms=lambda: clock_ms)

    def assert_all_closed_cleanly(self) -> None:
        for client, server_end in self.streams:
            assert client.closed and not client.was_reset
            assert server_end.closed and not server_end.was_reset


@asynccontextmanager
async def network(server: Server) -> AsyncIterator[MarketNetwork]:
    async with trio.open_nursery() as nursery:
        yield MarketNetwork(nursery, server)


async def test_client_round_trips() -> None:
    server = Server()
    async with network(server) as net:
        client = net.client()
        quote = await client.quote(SERVER_PEER, (), QUOTE_REQUEST)
        assert isinstance(quote, Quote)
        assert (quote.provider, quote.total_micro_tokens) == (SERVER_PEER, 1_050_000)
        refused = await client.quote(
            SERVER_PEER, (), dataclasses.replace(QUOTE_REQUEST, tier="archive")
        )
        assert refused == Refused("no capacity")
        assert await client.deploy(SERVER_PEER, (), DEPLOY) == DeployResult(
            True, b"countersign:canonical terms"
        )
        record = await client.query(SERVER_PEER, (), QUERY)
        assert isinstance(record, ContractRecord)
        assert record.state == "monitoring"
        assert await client.query(SERVER_PEER, (), ContractQuery(bytes(32))) == NotFound()
        assert await client.execute(SERVER_PEER, (), EXECUTE) == ExecuteResult(True, "", 3, DIGEST)
        proof = await client.audit(SERVER_PEER, (), AUDIT)
        assert proof == AuditProof(NONCE, tuple(map(stub_proof_item, AUDIT.leaf_indices)))
        not_ours = dataclasses.replace(AUDIT, contract_id=bytes(32))
        assert await client.audit(SERVER_PEER, (), not_ours) == Refused("no such contract here")
        assert await client.query(SERVER_PEER, (), ContractQuery(LARGE_CONTRACT)) == (
            large_record(SERVER_PEER)
        )
    net.assert_all_closed_cleanly()
    assert len(net.streams) == 9
    assert server.counters.get("served") == 9
    assert server.counters.get("audit_proved") == 1


async def test_client_refuses_to_send_an_invalid_request() -> None:
    server = Server()
    async with network(server) as net:
        with pytest.raises(LocalProtocolError):
            await net.client().query(SERVER_PEER, (), ContractQuery(b"short"))
    assert net.streams == []  # nothing was dialled


# -- hostile servers: scripted against the real client ------------------------------------

Script = Callable[[MemoryStream], Awaitable[None]]


class ScriptedNetwork:
    """A StreamOpener whose every stream is answered by ``script``."""

    def __init__(self, nursery: trio.Nursery, script: Script) -> None:
        self.nursery = nursery
        self.script = script
        self.clients: list[MemoryStream] = []

    async def _run(self, stream: MemoryStream) -> None:
        with contextlib.suppress(*TRANSPORT_ERRORS):
            await self.script(stream)

    async def open(self, peer_id: bytes, addrs: Sequence[bytes], protocol: str) -> ByteStream:
        assert protocol == ids.MARKET
        client, server = memory_stream_pair()
        self.clients.append(client)
        self.nursery.start_soon(self._run, server)
        return client


def answering(response_bytes: bytes) -> Script:
    async def script(stream: MemoryStream) -> None:
        request = await FrameReader(stream, MAX_FRAME).read_frame()
        assert request is not None
        decode_request(request)
        await stream.write(encode_uvarint(len(response_bytes)) + response_bytes)
        await trio.sleep_forever()

    return script


async def client_failure(
    script: Script,
    operation: Callable[[MarketClient], Awaitable[object]],
    clock_ms: int = NOW_MS,
) -> BaseException:
    async with trio.open_nursery() as nursery:
        net = ScriptedNetwork(nursery, script)
        client = MarketClient(net.open, timeout=5.0, clock_ms=lambda: clock_ms)
        with pytest.raises(Exception) as info:
            await operation(client)
        nursery.cancel_scope.cancel()
    [stream] = net.clients
    assert stream.was_reset, "the client must reset a stream it gives up on"
    return info.value


def _remote_reason(error: BaseException) -> str:
    assert isinstance(error, RemoteProtocolError), repr(error)
    return error.reason


async def _stub_quote(**changes: Any) -> Quote:
    quote = await StubBackend().quote(CLIENT_PEER, QUOTE_REQUEST)
    assert isinstance(quote, Quote)
    return dataclasses.replace(quote, **changes)


async def _resigned(**changes: Any) -> Quote:
    backend = StubBackend()
    quote = await _stub_quote(**changes)
    return sign_quote(dataclasses.replace(quote, signature=b""), backend.key)


def ask_quote(client: MarketClient) -> Awaitable[object]:
    return client.quote(SERVER_PEER, (), QUOTE_REQUEST)


async def test_quote_from_another_provider_is_rejected() -> None:
    quote = await _resigned(provider=b"someone else")
    error = await client_failure(answering(encode_response(quote)), ask_quote)
    assert _remote_reason(error) == "wrong_provider"


async def test_quote_for_something_else_is_rejected() -> None:
    quote = await _resigned(tier="hot")
    error = await client_failure(answering(encode_response(quote)), ask_quote)
    assert _remote_reason(error) == "quote_mismatch"


async def test_badly_signed_quote_is_rejected() -> None:
    quote = await _stub_quote(free_capacity_bytes=1)  # changed after signing
    error = await client_failure(answering(encode_response(quote)), ask_quote)
    assert _remote_reason(error) == "bad_quote_signature"


async def test_expired_quote_is_rejected() -> None:
    quote = await _stub_quote()
    late = NOW_MS + VALID_FOR_MS + 1
    error = await client_failure(answering(encode_response(quote)), ask_quote, clock_ms=late)
    assert _remote_reason(error) == "quote_expired"


@pytest.mark.parametrize(
    ("operation", "response"),
    [
        (ask_quote, DeployResult(True, b"c")),
        (lambda c: c.deploy(SERVER_PEER, (), DEPLOY), NotFound()),
        (lambda c: c.query(SERVER_PEER, (), QUERY), ExecuteResult(False)),
        (lambda c: c.execute(SERVER_PEER, (), EXECUTE), DeployResult(False)),
        (lambda c: c.audit(SERVER_PEER, (), AUDIT), NotFound()),
        (ask_quote, AuditProof(NONCE, ())),
    ],
    ids=["quote", "deploy", "query", "execute", "audit", "proof_for_a_quote"],
)
async def test_answer_of_the_wrong_kind_is_rejected(
    operation: Callable[[MarketClient], Awaitable[object]], response: MarketResponse
) -> None:
    error = await client_failure(answering(encode_response(response)), operation)
    assert _remote_reason(error) == "unexpected_message"


def ask_audit(client: MarketClient) -> Awaitable[object]:
    return client.audit(SERVER_PEER, (), AUDIT)


def _stub_proof(indices: tuple[int, ...] = AUDIT.leaf_indices, nonce: bytes = NONCE) -> AuditProof:
    return AuditProof(nonce, tuple(map(stub_proof_item, indices)))


# AUDIT challenges leaves (5, 0, 17), in that order.
WRONG_PROOFS = {
    "another_nonce": _stub_proof(nonce=b"\x0f" * 32),
    "missing_index": _stub_proof((5, 0)),
    "missing_first": _stub_proof((0, 17)),
    "extra_index": _stub_proof((5, 0, 17, 18)),
    "another_index": _stub_proof((5, 0, 16)),
    "reordered": _stub_proof((5, 17, 0)),
    "sorted": _stub_proof((0, 5, 17)),
    "repeated_index": _stub_proof((5, 0, 17, 17)),
    "no_items": _stub_proof(()),
}


@pytest.mark.parametrize("proof", WRONG_PROOFS.values(), ids=WRONG_PROOFS.keys())
async def test_proof_not_answering_the_challenge_is_rejected(proof: AuditProof) -> None:
    error = await client_failure(answering(encode_response(proof)), ask_audit)
    assert _remote_reason(error) == "proof_mismatch"


async def test_proof_is_returned_unverified_but_intact() -> None:
    # The leaves and paths are node/market/audit.py's to check: any bytes of
    # the right shape pass this layer.
    proof = _stub_proof()
    async with trio.open_nursery() as nursery:
        net = ScriptedNetwork(nursery, answering(encode_response(proof)))
        client = MarketClient(net.open, timeout=5.0, clock_ms=lambda: NOW_MS)
        assert await ask_audit(client) == proof
        nursery.cancel_scope.cancel()


async def test_garbage_answer_is_rejected() -> None:
    error = await client_failure(answering(b"\xff\xff garbage"), ask_quote)
    assert _remote_reason(error) == "garbage"


async def test_answer_breaking_a_rule_is_rejected() -> None:
    error = await client_failure(answering(b"\x32\x00"), ask_quote)  # Refused, no reason
    assert _remote_reason(error) == "bad_reason"


async def test_server_closing_without_an_answer_is_rejected() -> None:
    async def script(stream: MemoryStream) -> None:
        await FrameReader(stream, MAX_FRAME).read_frame()
        await stream.close()
        await trio.sleep_forever()

    error = await client_failure(script, ask_quote)
    assert _remote_reason(error) == "refused"


async def test_server_resetting_is_a_transport_error() -> None:
    async def script(stream: MemoryStream) -> None:
        await FrameReader(stream, MAX_FRAME).read_frame()
        await stream.reset()

    error = await client_failure(script, ask_quote)
    assert isinstance(error, TRANSPORT_ERRORS)


async def test_silent_server_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def script(stream: MemoryStream) -> None:
        await trio.sleep_forever()

    error = await client_failure(script, ask_quote)
    assert isinstance(error, trio.TooSlowError)


async def test_refusals_are_values_for_every_request() -> None:
    refusal = encode_response(Refused("busy"))
    for operation in (
        ask_quote,
        lambda c: c.deploy(SERVER_PEER, (), DEPLOY),
        lambda c: c.query(SERVER_PEER, (), QUERY),
        lambda c: c.execute(SERVER_PEER, (), EXECUTE),
        lambda c: c.audit(SERVER_PEER, (), AUDIT),
    ):
        async with trio.open_nursery() as nursery:
            net = ScriptedNetwork(nursery, answering(refusal))
            client = MarketClient(net.open, timeout=5.0, clock_ms=lambda: NOW_MS)
            assert await operation(client) == Refused("busy")
            nursery.cancel_scope.cancel()
