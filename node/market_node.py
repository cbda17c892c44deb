"""The node's market: serves /zhtp/market/1.0.0 and asks other nodes for quotes.

Wires the pure market modules (node/market/) to the node: the desk prices
from this node's measured capacity, the ledger and reputation book live in
the node database, and the node's libp2p Ed25519 key signs quotes and
receipts (the node, not its owner's identity, is the party to storage deals:
it must sign audits and payments while its owner is away).

Contracts (deploy, query, execute) are answered with a refusal until the
deal flow is wired: the wire protocol carries them already.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from node.market.desk import MarketDesk, ProviderState
from node.market.ledger import Ledger, LedgerError
from node.market.pricing import PricingPolicy
from node.market.reputation import ReputationBook, rank_providers
from protocols.errors import ProtocolError
from protocols.framing import PEER_FAILURES, Counters
from protocols.kad.messages import PeerInfo
from protocols.market.client import MarketClient
from protocols.market.messages import (
    ContractDeploy,
    ContractExecute,
    ContractQuery,
    ContractRecord,
    DeployResult,
    ExecuteResult,
    NotFound,
    Quote,
    QuoteRequest,
    Refused,
)

log = logging.getLogger(__name__)

MICRO_PER_TOKEN = 1_000_000
FAUCET_KEY = b"faucet:genesis"
# Quotes asked in parallel for one `market quote`.
QUOTE_FAN_OUT = 8
# A peer that cannot answer, or answers with a bad quote, is one failed row.
_QUOTE_FAILURES: tuple[type[BaseException], ...] = (*PEER_FAILURES, ProtocolError)


def node_signing_key(private_seed: bytes) -> Ed25519PrivateKey:
    """The node's libp2p Ed25519 key (its 32-byte seed) as a `cryptography` key."""
    return Ed25519PrivateKey.from_private_bytes(private_seed[:32])


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class QuoteOutcome:
    """One provider's answer to a quote request, ranked among the others."""

    peer: bytes
    quote: Quote | None
    refusal: str | None
    score: int


class NodeMarket:
    def __init__(
        self,
        *,
        db_path: Path,
        party_id: bytes,
        key: Ed25519PrivateKey,
        pricing: PricingPolicy,
        tier_percent: dict[str, int],
        quote_validity_ms: int,
        provider_state: Callable[[], ProviderState],
        client: MarketClient,
        counters: Counters,
    ) -> None:
        self.party_id = party_id
        self.public_key = raw_public_key(key)
        self.desk = MarketDesk(
            party_id=party_id,
            key=key,
            public_key=self.public_key,
            pricing=pricing,
            tier_percent=tier_percent,
            quote_validity_ms=quote_validity_ms,
            state=provider_state,
        )
        self.ledger = Ledger(db_path, signer=key.sign, signer_public_key=self.public_key)
        self.reputation = ReputationBook(db_path)
        self.client = client
        self.counters = counters

    def close(self) -> None:
        self.reputation.close()
        self.ledger.close()

    def fund_from_faucet(self, tokens: int, now_ms: int) -> None:
        """Testnets start every node with a balance; once per node (idempotent)."""
        if tokens <= 0:
            return
        try:
            self.ledger.mint(self.party_id, tokens * MICRO_PER_TOKEN, FAUCET_KEY, now_ms=now_ms)
        except LedgerError as error:
            # Same key, other amount: the config changed after the first grant.
            log.warning("faucet grant not repeated: %s", error.reason)

    # -- MarketBackend: what other nodes ask of us ------------------------------

    async def quote(self, peer: bytes, request: QuoteRequest) -> Quote | Refused:
        if request.client != peer:
            return Refused("a quote request must name its sender as the client")
        return self.desk.quote(request, wall_ms())

    async def deploy(self, peer: bytes, request: ContractDeploy) -> DeployResult | Refused:
        return Refused("contracts are not accepted by this node yet")

    async def query(
        self, peer: bytes, request: ContractQuery
    ) -> ContractRecord | NotFound | Refused:
        return NotFound()

    async def execute(self, peer: bytes, request: ContractExecute) -> ExecuteResult | Refused:
        return Refused("contracts are not accepted by this node yet")

    # -- asking others -------------------------------------------------------------

    async def gather_quotes(
        self, peers: Sequence[PeerInfo], request: QuoteRequest
    ) -> list[QuoteOutcome]:
        """Quotes from `peers`, best first (reputation and price), then the refusals."""
        answers: dict[bytes, Quote | str] = {}

        async def ask(peer: PeerInfo) -> None:
            try:
                answer = await self.client.quote(peer.peer_id, peer.addrs, request)
            except _QUOTE_FAILURES as error:
                self.counters.inc("quote_failed")
                answers[peer.peer_id] = f"no answer ({type(error).__name__})"
                return
            answers[peer.peer_id] = answer if isinstance(answer, Quote) else answer.reason

        async with trio.open_nursery() as nursery:
            for peer in peers[:QUOTE_FAN_OUT]:
                nursery.start_soon(ask, peer)
        quotes = {p: a for p, a in answers.items() if isinstance(a, Quote)}
        scores = {p: self.reputation.score(p) for p in answers}
        ranked = rank_providers([(p, scores[p], q.total_micro_tokens) for p, q in quotes.items()])
        out = [QuoteOutcome(r.peer, quotes[r.peer], None, r.score) for r in ranked]
        kept = {r.peer for r in ranked}
        for peer_id, answer in answers.items():
            if peer_id not in kept:
                refusal = answer if isinstance(answer, str) else "banned: reputation too low"
                out.append(QuoteOutcome(peer_id, None, refusal, scores[peer_id]))
        return out


def wall_ms() -> int:
    return int(time.time() * 1000)
