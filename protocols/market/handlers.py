"""Server side of /zhtp/market/1.0.0: the backend the node implements, and dispatch.

:func:`dispatch` turns one typed request into one typed response by asking
a :class:`MarketBackend`; it never touches a stream (protocols/market/
session.py does). What to quote, whether to countersign a contract, what a
replica holds, whether a transition applies and how to prove a shard is held
are the node's decisions (``node/market``); this layer only checks that the
backend answered a request with a response of the right kind (and a quote or
proof that answers what was asked), since sending anything else would be our
bug, not the peer's.
"""

from __future__ import annotations

from typing import Protocol

from protocols.errors import LocalProtocolError
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
    check_response,
)


class MarketBackend(Protocol):
    """What the market protocol needs of the node.

    ``peer`` is the remote PeerID (bytes) the request came from, as
    authenticated by Noise. Any method may answer :class:`Refused` with a
    reason for the client ("quote expired", "no capacity", "busy"); an
    implementation that never refuses deploys, queries or executions fits
    too. A RemoteProtocolError raised here (a request that is well-formed but
    invalid) resets the stream and is counted; any other exception is a bug
    and propagates.
    """

    async def quote(self, peer: bytes, request: QuoteRequest) -> Quote | Refused: ...

    async def deploy(self, peer: bytes, request: ContractDeploy) -> DeployResult | Refused: ...

    async def query(
        self, peer: bytes, request: ContractQuery
    ) -> ContractRecord | NotFound | Refused: ...

    async def execute(self, peer: bytes, request: ContractExecute) -> ExecuteResult | Refused: ...

    async def audit(self, peer: bytes, request: AuditChallenge) -> AuditProof | Refused: ...


def quote_answers(request: QuoteRequest, quote: Quote) -> bool:
    """True if ``quote`` prices exactly what ``request`` asked for."""
    return (
        quote.size_bytes,
        quote.duration_seconds,
        quote.tier,
        quote.sla_requested,
    ) == (request.size_bytes, request.duration_seconds, request.tier, request.sla_requested)


def proof_answers(challenge: AuditChallenge, proof: AuditProof) -> bool:
    """True if ``proof`` echoes the nonce and answers exactly the challenged leaves, in order.

    Only the shape: whether the leaves and paths reach the contract's Merkle
    root is node/market/audit.py's to check.
    """
    return proof.nonce == challenge.nonce and (
        tuple(item.index for item in proof.items) == challenge.leaf_indices
    )


def _wrong_answer(request: MarketRequest, response: object) -> LocalProtocolError:
    return LocalProtocolError(
        "wrong_response", f"{type(response).__name__} for {type(request).__name__}"
    )


async def dispatch(backend: MarketBackend, peer: bytes, request: MarketRequest) -> MarketResponse:
    """The backend's answer to ``request`` from ``peer``.

    Raises LocalProtocolError if the backend answers with the wrong kind of
    response, one that breaks a message rule, or a quote for something other
    than what was asked, or a proof for another challenge.
    """
    response: MarketResponse
    match request:
        case QuoteRequest():
            response = await backend.quote(peer, request)
            if isinstance(response, Quote) and not quote_answers(request, response):
                raise LocalProtocolError("quote_mismatch", "the quote does not echo the request")
            allowed: tuple[type, ...] = (Quote, Refused)
        case ContractDeploy():
            response = await backend.deploy(peer, request)
            allowed = (DeployResult, Refused)
        case ContractQuery():
            response = await backend.query(peer, request)
            allowed = (ContractRecord, NotFound, Refused)
        case ContractExecute():
            response = await backend.execute(peer, request)
            allowed = (ExecuteResult, Refused)
        case AuditChallenge():
            response = await backend.audit(peer, request)
            if isinstance(response, AuditProof) and not proof_answers(request, response):
                raise LocalProtocolError(
                    "proof_mismatch", "the proof does not answer the challenge"
                )
            allowed = (AuditProof, Refused)
        case _:
            raise LocalProtocolError("unknown_message", type(request).__name__)
    if not isinstance(response, allowed):
        raise _wrong_answer(request, response)
    check_response(response)  # here, so an answer we may not send is never counted
    return response


def outcome_event(request: MarketRequest, response: MarketResponse) -> str:
    """The counter name for one answered request, e.g. ``deploy_accepted``."""
    kind = {
        QuoteRequest: "quote",
        ContractDeploy: "deploy",
        ContractQuery: "query",
        ContractExecute: "execute",
        AuditChallenge: "audit",
    }[type(request)]
    match response:
        case Refused():
            outcome = "refused"
        case Quote():
            outcome = "quoted"
        case DeployResult(accepted=accepted) | ExecuteResult(accepted=accepted):
            outcome = "accepted" if accepted else "rejected"
        case ContractRecord():
            outcome = "found"
        case NotFound():
            outcome = "not_found"
        case AuditProof():
            outcome = "proved"
    return f"{kind}_{outcome}"
