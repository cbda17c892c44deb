"""Client side of /zhtp/market/1.0.0: one fresh stream and one deadline per request.

A refusal is an outcome, not an error: every method returns the peer's
:class:`Refused` as a value (its ``reason`` is for people and logs), so the
caller's type checker makes it handle one, and a caller asking several
providers for quotes simply moves on. Failures a caller sees, as with
StoreClient: ``trio.TooSlowError`` when the request outlasts ``timeout``;
RemoteProtocolError for a malformed answer or one of the wrong kind (and,
for quotes, one that is badly signed, expired, or not what was asked; for
audits, a proof that does not answer the challenge); and
framing's transport errors when the peer cannot be reached or resets. All
are in ``framing.PEER_FAILURES``.

What the client checks of an answer beyond the message rules: a Quote must
name the dialled peer as its provider, echo the request's size, duration,
tier and SLA flag, carry a valid signature by ``provider_public_key``, and
not have expired by the client's clock. An AuditProof must echo the
challenge's nonce and answer exactly the challenged leaf indices, in the
challenge's order (``proof_mismatch`` otherwise); its leaves and Merkle paths
are returned unverified, for node/market/audit.py to check against the
contract's root. Records and results are returned as received: terms and
transitions are the contract module's to verify.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

import trio

from protocols import ids
from protocols.errors import RemoteProtocolError
from protocols.framing import (
    FrameReader,
    StreamOpener,
    close_quietly,
    encode_frame,
    reset_quietly,
)
from protocols.market.handlers import proof_answers, quote_answers
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
    Quote,
    QuoteRequest,
    Refused,
    decode_response,
    encode_request,
    quote_is_valid,
    verify_quote_signature,
)

DEFAULT_TIMEOUT = 30.0

AnswerT = TypeVar("AnswerT")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _unexpected(response: MarketResponse, request: MarketRequest) -> RemoteProtocolError:
    return RemoteProtocolError(
        "unexpected_message", f"{type(response).__name__} for {type(request).__name__}"
    )


class MarketClient:
    """Asks other nodes for quotes and deploys, queries, executes and audits contracts.

    ``open_stream`` is the node's StreamOpener (as for StoreClient);
    ``timeout`` bounds each whole request, dial included; ``clock_ms`` is the
    clock quotes are checked against (Unix ms).
    """

    def __init__(
        self,
        open_stream: StreamOpener,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self._open = open_stream
        self._timeout = timeout
        self._clock_ms = clock_ms

    async def _request(
        self,
        peer_id: bytes,
        addrs: Sequence[bytes],
        request: MarketRequest,
        accept: Callable[[MarketResponse], AnswerT],
    ) -> AnswerT:
        """Send ``request`` on a fresh stream; ``accept`` judges the answer.

        The stream is closed once the answer is accepted and reset on any
        failure (a bad answer, a timeout, a transport error).
        """
        payload = encode_request(request)
        max_frame = ids.MARKET_LIMITS.max_frame
        with trio.fail_after(self._timeout):
            stream = await self._open(peer_id, addrs, ids.MARKET)
            try:
                await stream.write(encode_frame(payload, max_frame))
                raw = await FrameReader(stream, max_frame).read_frame()
                if raw is None:
                    raise RemoteProtocolError("refused", "stream ended without a response")
                answer = accept(decode_response(raw))
            except BaseException:
                with trio.CancelScope(shield=True):
                    await reset_quietly(stream)
                raise
            await close_quietly(stream)
        return answer

    async def quote(
        self, peer_id: bytes, addrs: Sequence[bytes], request: QuoteRequest
    ) -> Quote | Refused:
        """The peer's signed quote for ``request``, or its refusal."""

        def accept(response: MarketResponse) -> Quote | Refused:
            match response:
                case Refused():
                    return response
                case Quote():
                    return self._checked_quote(peer_id, request, response)
            raise _unexpected(response, request)

        return await self._request(peer_id, addrs, request, accept)

    def _checked_quote(self, peer_id: bytes, request: QuoteRequest, quote: Quote) -> Quote:
        if quote.provider != peer_id:
            raise RemoteProtocolError("wrong_provider", quote.provider.hex())
        if not quote_answers(request, quote):
            raise RemoteProtocolError("quote_mismatch", "the quote does not echo the request")
        if not verify_quote_signature(quote):
            raise RemoteProtocolError("bad_quote_signature")
        if not quote_is_valid(quote, self._clock_ms()):
            raise RemoteProtocolError("quote_expired", f"valid until {quote.valid_until_ms}")
        return quote

    async def deploy(
        self, peer_id: bytes, addrs: Sequence[bytes], request: ContractDeploy
    ) -> DeployResult | Refused:
        """Propose signed terms; the result carries the countersignature if accepted."""

        def accept(response: MarketResponse) -> DeployResult | Refused:
            if isinstance(response, DeployResult | Refused):
                return response
            raise _unexpected(response, request)

        return await self._request(peer_id, addrs, request, accept)

    async def query(
        self, peer_id: bytes, addrs: Sequence[bytes], request: ContractQuery
    ) -> ContractRecord | NotFound | Refused:
        """A replica's record of a contract, NotFound, or its refusal."""

        def accept(response: MarketResponse) -> ContractRecord | NotFound | Refused:
            if isinstance(response, ContractRecord | NotFound | Refused):
                return response
            raise _unexpected(response, request)

        return await self._request(peer_id, addrs, request, accept)

    async def execute(
        self, peer_id: bytes, addrs: Sequence[bytes], request: ContractExecute
    ) -> ExecuteResult | Refused:
        """Submit a signed transition; the result says whether it applied."""

        def accept(response: MarketResponse) -> ExecuteResult | Refused:
            if isinstance(response, ExecuteResult | Refused):
                return response
            raise _unexpected(response, request)

        return await self._request(peer_id, addrs, request, accept)

    async def audit(
        self, peer_id: bytes, addrs: Sequence[bytes], challenge: AuditChallenge
    ) -> AuditProof | Refused:
        """The holder's proof for ``challenge``, checked for shape only, or its refusal."""

        def accept(response: MarketResponse) -> AuditProof | Refused:
            match response:
                case Refused():
                    return response
                case AuditProof():
                    if not proof_answers(challenge, response):
                        raise RemoteProtocolError(
                            "proof_mismatch", "the proof does not answer the challenge"
                        )
                    return response
            raise _unexpected(response, challenge)

        return await self._request(peer_id, addrs, challenge, accept)
