"""The node's market: serves /zhtp/market/1.0.0, makes deals, and audits providers.

Wires the pure market modules (node/market/) to the node. The node, not its
owner's identity, is the party to storage deals: it signs quotes, contracts,
audit verdicts and payments with its libp2p Ed25519 key, because audits and
payments run every period while the owner is away.

As a provider it quotes from measured capacity, countersigns proposals that
match a quote it gave (node/market/deals.py), locks collateral in its own
book, answers audit challenges from the shards it holds, and applies the
client's signed verdicts and payments. As a client it asks candidate holders
for quotes, proposes one contract per chosen provider, locks the escrow,
and then, every period, challenges each provider, judges the period against
the SLA, pays or penalises, and records the provider's reputation with its
cause. Every transition goes to the provider and the contract's record is
republished to the nodes closest to its ID, which validate the whole signed
history (node/records/contracts.py), so replicas agree.
"""

from __future__ import annotations

import logging
import random
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import blake3
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from node.files.deal_put import Offer
from node.files.network import FileNetwork, ShardTransferError
from node.market import audit
from node.market.book import BookRole, ContractBook
from node.market.contract import (
    ContractError,
    ContractRecord,
    ContractState,
    Event,
    Role,
    ShardTerm,
    State,
    Transition,
    countersign,
    decode_terms,
    decode_transition,
    encode_contract_record,
    encode_terms,
    encode_transition,
    final_payout,
    make_transition,
    open_contract,
    penalty_due,
    period_payment,
    sign_proposal,
    sign_transition,
    state_digest,
)
from node.market.deals import DealPolicy, accept_proposal, build_terms, collateral_account
from node.market.desk import MarketDesk, ProviderState
from node.market.ledger import Ledger, LedgerError
from node.market.pricing import PricingPolicy
from node.market.quality import Verdict, assess, measure_period
from node.market.reputation import ReputationBook, period_event, rank_providers
from node.records.contracts import contract_key
from protocols.errors import ProtocolError
from protocols.framing import PEER_FAILURES, Counters
from protocols.kad.messages import PeerInfo
from protocols.market.client import MarketClient
from protocols.market.messages import (
    AuditChallenge,
    AuditProof,
    ContractDeploy,
    ContractExecute,
    ContractQuery,
    DeployResult,
    ExecuteResult,
    NotFound,
    Quote,
    QuoteRequest,
    Refused,
)
from protocols.market.messages import ContractRecord as WireRecord
from protocols.market.messages import ProofItem as WireProofItem
from protocols.store import ShardNotFound, StoreRefused

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

MICRO_PER_TOKEN = 1_000_000
FAUCET_KEY = b"faucet:genesis"
# Quotes asked in parallel for one `market quote` or one put.
QUOTE_FAN_OUT = 16
REPLICA_DOMAIN = b"zhtp/market/replica-state/v1\x00"
# A peer that cannot answer, or answers with a bad message, is one failed row.
_PEER_FAILURES: tuple[type[BaseException], ...] = (*PEER_FAILURES, ProtocolError)
_FETCH_FAILURES: tuple[type[BaseException], ...] = (*_PEER_FAILURES, ShardNotFound, StoreRefused)
_AUDITED_STATES = frozenset({State.MONITORING, State.VIOLATION, State.PENALISED})
# What the auditor looks at: running contracts, and terminated ones to refund.
_ROUND_STATES = _AUDITED_STATES | {State.TERMINATED}
AUDITS_IN_PARALLEL = 8
PING_TIMEOUT = 5.0


def node_signing_key(private_seed: bytes) -> Ed25519PrivateKey:
    """The node's libp2p Ed25519 key (its 32-byte seed) as a `cryptography` key."""
    return Ed25519PrivateKey.from_private_bytes(private_seed[:32])


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def wall_ms() -> int:
    return int(time.time() * 1000)


class DealFailed(Exception):
    """No deal could be made for some shards; the message says why."""


@dataclass(frozen=True)
class QuoteOutcome:
    """One provider's answer to a quote request, ranked among the others."""

    peer: bytes
    quote: Quote | None
    refusal: str | None
    score: int


@dataclass
class _PeriodEvidence:
    """What the auditor saw of one provider in one period of one contract."""

    pings_ok: int = 0
    pings_total: int = 0
    latencies_ms: list[int] = field(default_factory=list)
    audits_passed: int = 0
    audits_total: int = 0
    failures: list[str] = field(default_factory=list)


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
        deal_policy: DealPolicy,
        provider_state: Callable[[], ProviderState],
        client: MarketClient,
        read_shard: Callable[[bytes], Awaitable[bytes | None]],
        ping: Callable[[bytes, tuple[bytes, ...]], Awaitable[object]],
        fetch_range: Callable[[bytes, tuple[bytes, ...], bytes, int, int], Awaitable[bytes]],
        publish_record: Callable[[bytes, bytes], Awaitable[int]],
        peer_addrs: Callable[[bytes], tuple[bytes, ...]],
        counters: Counters,
    ) -> None:
        self.party_id = party_id
        self._key = key
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
        self.deal_policy = deal_policy
        self._provider_state = provider_state
        self.ledger = Ledger(db_path, signer=key.sign, signer_public_key=self.public_key)
        self.reputation = ReputationBook(db_path)
        self.book = ContractBook(db_path)
        self.client = client
        self._read_shard = read_shard
        self._ping = ping
        self._fetch_range = fetch_range
        self._publish_record = publish_record
        self._peer_addrs = peer_addrs
        self.counters = counters
        self._evidence: dict[tuple[bytes, int], _PeriodEvidence] = {}
        self._audits_run: dict[tuple[bytes, int], int] = {}
        # One contract's transitions are made one at a time; different
        # contracts proceed in parallel. (A node-wide lock would also deadlock
        # two nodes that are each other's client and provider.)
        self._locks: dict[bytes, trio.Lock] = {}
        # When the auditor next has something to do for each contract, so a
        # round does not load every contract's state every tick.
        self._next_due: dict[bytes, int] = {}
        self._unpublished: set[bytes] = set()

    def close(self) -> None:
        self.book.close()
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

    def admits(self, address: bytes, contract_id: bytes) -> bool:
        """Whether a shard may be stored here: a serving contract of ours names it."""
        return contract_id in self.book.active_for_provider(address)

    # == provider side: what other nodes ask of us ======================================

    async def quote(self, peer: bytes, request: QuoteRequest) -> Quote | Refused:
        if request.client != peer:
            return Refused("a quote request must name its sender as the client")
        return self.desk.quote(request, wall_ms())

    async def deploy(self, peer: bytes, request: ContractDeploy) -> DeployResult | Refused:
        now = wall_ms()
        try:
            terms = decode_terms(request.terms)
            proposed = open_contract(terms, request.client_signature)
        except ContractError as error:
            self.counters.inc("deploy_invalid")
            return Refused(f"invalid proposal: {error}")
        reason = accept_proposal(
            terms,
            peer=peer,
            me=self.party_id,
            my_public_key=self.public_key,
            given=self.desk.given(terms.quote_id),
            free_bytes=self._provider_state().free_bytes,
            balance=self.ledger.balance(self.party_id),
            now_ms=now,
        )
        if reason is not None:
            self.counters.inc("deploy_refused")
            return DeployResult(accepted=False, reason=reason)
        if self.book.state(terms.contract_id) is not None:
            return DeployResult(accepted=False, reason="this contract is already deployed")
        signed = countersign(proposed, self._key, now)
        record = ContractRecord(
            terms=request.terms,
            client_signature=request.client_signature,
            transitions=(encode_transition(signed),),
        )
        async with self._lock(terms.contract_id):
            try:
                await trio.to_thread.run_sync(self.book.add, record, BookRole.PROVIDER, now)
                if terms.collateral_micro_tokens:
                    self.ledger.transfer(
                        self.party_id,
                        collateral_account(terms.contract_id),
                        terms.collateral_micro_tokens,
                        b"collateral:" + terms.contract_id,
                        now_ms=now,
                    )
            except (ContractError, LedgerError) as error:
                self.counters.inc("deploy_refused")
                return DeployResult(accepted=False, reason=f"cannot accept: {error}")
        self.counters.inc("contracts_countersigned")
        return DeployResult(accepted=True, countersign=encode_transition(signed))

    async def query(self, peer: bytes, request: ContractQuery) -> WireRecord | NotFound | Refused:
        record = self.book.record(request.contract_id)
        state = self.book.state(request.contract_id)
        if record is None or state is None:
            return NotFound()
        digest = state_digest(state)
        return WireRecord(
            terms=record.terms,
            client_signature=record.client_signature,
            transitions=record.transitions,
            state=state.state.value,
            sequence=state.sequence,
            state_digest=digest,
            replica=self.party_id,
            replica_signature=self._key.sign(REPLICA_DOMAIN + digest),
        )

    async def execute(self, peer: bytes, request: ContractExecute) -> ExecuteResult | Refused:
        try:
            transition = decode_transition(request.transition)
        except ContractError as error:
            return Refused(f"invalid transition: {error}")
        now = wall_ms()
        async with self._lock(transition.contract_id):
            before = self.book.state(transition.contract_id)
            if before is None:
                return Refused("no such contract here")
            if transition.sequence <= before.sequence:
                held = before.history[transition.sequence - 1]
                if encode_transition(held) != encode_transition(transition):
                    # Another transition holds that sequence number: both are
                    # signed, so this is evidence, not something to apply.
                    self.counters.inc("execute_conflict")
                    return ExecuteResult(
                        accepted=False,
                        reason=f"sequence {transition.sequence} is already another transition",
                    )
                # Already applied (a retry): answer with where we are.
                return ExecuteResult(
                    accepted=True, sequence=before.sequence, state_digest=state_digest(before)
                )
            try:
                after = await trio.to_thread.run_sync(
                    self.book.apply, transition.contract_id, transition, now
                )
            except ContractError as error:
                self.counters.inc("execute_refused")
                return ExecuteResult(accepted=False, reason=str(error))
            if self.book.role(transition.contract_id) is BookRole.PROVIDER:
                self._provider_books(after, transition, now)
        return ExecuteResult(
            accepted=True, sequence=after.sequence, state_digest=state_digest(after)
        )

    def _provider_books(self, state: ContractState, t: Transition, now: int) -> None:
        """The provider's own book follows the client's signed payments and penalties."""
        terms = state.terms
        cid = terms.contract_id
        collateral = collateral_account(cid)
        try:
            if t.event is Event.PAYMENT_RELEASE and t.amount_micro_tokens:
                self.ledger.inbound(
                    terms.client,
                    self.party_id,
                    t.amount_micro_tokens,
                    b"paid:" + cid + struct.pack(">I", t.period or 0),
                    contract_id=cid,
                    period=t.period,
                    now_ms=now,
                )
            elif t.event is Event.PENALTY_APPLIED and t.amount_micro_tokens:
                self.ledger.transfer(
                    collateral,
                    terms.client,
                    t.amount_micro_tokens,
                    b"penalty:" + cid + struct.pack(">I", t.period or 0),
                    now_ms=now,
                )
            elif t.event is Event.SETTLE:
                if t.amount_micro_tokens:
                    self.ledger.inbound(
                        terms.client,
                        self.party_id,
                        t.amount_micro_tokens,
                        b"settled:" + cid,
                        contract_id=cid,
                        now_ms=now,
                    )
                left = self.ledger.balance(collateral)
                if left:
                    self.ledger.transfer(
                        collateral, self.party_id, left, b"collateral-back:" + cid, now_ms=now
                    )
        except LedgerError as error:
            # The contract moved on; our book must follow, so this is our bug.
            log.error("provider book could not follow %s: %s", t.event.name, error.reason)

    async def verify_stored(self, address: bytes) -> bool:
        """Check a newly stored shard against the Merkle roots our contracts name.

        The client computes the roots and we sign contracts before the bytes
        arrive; a client that named a wrong root could have us fail every
        audit and pay penalties. So each stored shard is checked once, and a
        contract whose root is wrong is terminated by us, with the reason.
        True if every contract naming the shard has its root right.
        """
        contract_ids = self.book.active_for_provider(address)
        if not contract_ids:
            return True
        data = await self._read_shard(address)
        if data is None:
            return False
        good = True
        for contract_id in contract_ids:
            state = self.book.state(contract_id)
            if state is None:
                continue
            term = next(s for s in state.terms.shards if s.address == address)
            root = await trio.to_thread.run_sync(audit.merkle_root, data, state.terms.leaf_size)
            if root == term.merkle_root and len(data) == term.size:
                continue
            good = False
            self.counters.inc("contract_root_mismatch")
            async with self._lock(contract_id):
                await self._terminate_as_provider(state, "shard does not match the contract's root")
        return good

    async def _terminate_as_provider(self, state: ContractState, reason: str) -> None:
        now = max(wall_ms(), state.last_issued_ms)
        t = make_transition(state, Event.TERMINATE, now, reason=reason)
        t = sign_transition(t, Role.PROVIDER, self._key)
        try:
            await trio.to_thread.run_sync(self.book.apply, state.contract_id, t, now)
        except ContractError as error:
            log.warning("could not terminate contract: %s", error)
            return
        collateral = collateral_account(state.contract_id)
        left = self.ledger.balance(collateral)
        if left:
            self.ledger.transfer(
                collateral, self.party_id, left, b"collateral-back:" + state.contract_id,
                now_ms=now,
            )  # fmt: skip
        client = state.terms.client
        try:
            await self.client.execute(
                client, self._peer_addrs(client), ContractExecute(encode_transition(t))
            )
        except _PEER_FAILURES:
            self.counters.inc("execute_unsent")

    async def audit(self, peer: bytes, request: AuditChallenge) -> AuditProof | Refused:
        state = self.book.state(request.contract_id)
        if state is None or self.book.role(request.contract_id) is not BookRole.PROVIDER:
            return Refused("no such contract here")
        if state.terms.client != peer:
            return Refused("only the contract's client audits it")
        if request.shard_address not in {s.address for s in state.terms.shards}:
            return Refused("the contract does not name this shard")
        data = await self._read_shard(request.shard_address)
        if data is None:
            self.counters.inc("audit_unanswerable")
            return Refused("shard not held (or failed verification)")
        challenge = audit.Challenge(nonce=request.nonce, leaf_indices=request.leaf_indices)
        try:
            proof = await trio.to_thread.run_sync(
                audit.prove, data, challenge, state.terms.leaf_size
            )
        except ValueError as error:
            return Refused(f"cannot answer: {error}")
        self.counters.inc("audits_answered")
        return AuditProof(
            nonce=proof.nonce,
            items=tuple(
                WireProofItem(index=i.index, leaf=i.leaf, path=i.path) for i in proof.items
            ),
        )

    # == client side ======================================================================

    async def gather_quotes(
        self, peers: Sequence[PeerInfo], request: QuoteRequest
    ) -> list[QuoteOutcome]:
        """Quotes from `peers`, best first (reputation and price), then the refusals."""
        answers: dict[bytes, Quote | str] = {}

        async def ask(peer: PeerInfo) -> None:
            try:
                answer = await self.client.quote(peer.peer_id, peer.addrs, request)
            except _PEER_FAILURES as error:
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

    def quote_request(self, size: int, tier: str) -> QuoteRequest:
        return QuoteRequest(
            size_bytes=max(1, size),
            duration_seconds=self.deal_policy.duration_ms // 1000,
            tier=tier,
            sla_requested=True,
            client=self.party_id,
        )

    # -- DealMaker (node/files/deal_put.py) ----------------------------------------

    @property
    def leaf_size(self) -> int:
        return self.deal_policy.leaf_size

    async def offers(self, candidates: Sequence[PeerInfo], size: int, tier: str) -> list[Offer]:
        """Providers among `candidates` that quote for `size` bytes, best first."""
        by_id = {p.peer_id: p for p in candidates}
        outcomes = await self.gather_quotes(candidates, self.quote_request(size, tier))
        return [
            Offer(provider=by_id[o.peer], quote=o.quote) for o in outcomes if o.quote is not None
        ]

    async def deal(self, offer: Offer, shards: Sequence[ShardTerm]) -> bytes:
        assert isinstance(offer.quote, Quote)
        return await self.make_deal(offer.provider, offer.quote, shards)

    async def single_shard_deal(self, provider: PeerInfo, address: bytes, data: bytes) -> bytes:
        """A contract for one shard with one provider (repair re-stores shards this way)."""
        request = self.quote_request(len(data), "warm")
        try:
            answer = await self.client.quote(provider.peer_id, provider.addrs, request)
        except _PEER_FAILURES as error:
            raise DealFailed(f"no quote ({type(error).__name__})") from error
        if isinstance(answer, Refused):
            raise DealFailed(f"no quote: {answer.reason}")
        root = await trio.to_thread.run_sync(audit.merkle_root, data, self.deal_policy.leaf_size)
        shard = ShardTerm(address=address, merkle_root=root, size=len(data))
        return await self.make_deal(provider, answer, [shard])

    async def make_deal(
        self, provider: PeerInfo, quote: Quote, shards: Sequence[ShardTerm]
    ) -> bytes:
        """Propose, get countersigned, lock escrow, start monitoring; the contract ID.

        Raises DealFailed with the provider's reason.
        """
        now = wall_ms()
        terms = build_terms(
            policy=self.deal_policy,
            client=self.party_id,
            client_public_key=self.public_key,
            provider=provider.peer_id,
            provider_public_key=quote.provider_public_key,
            quote_id=quote.quote_id,
            quote_total=quote.total_micro_tokens,
            quote_size=quote.size_bytes,
            quote_valid_until_ms=quote.valid_until_ms,
            shards=shards,
            start_ms=now,
        )
        encoded = encode_terms(terms)
        signature = sign_proposal(terms, self._key)
        if self.ledger.balance(self.party_id) < terms.escrow_micro_tokens:
            raise DealFailed("our balance cannot cover the escrow")
        try:
            result = await self.client.deploy(
                provider.peer_id, provider.addrs, ContractDeploy(encoded, signature)
            )
        except _PEER_FAILURES as error:
            raise DealFailed(f"no answer to the proposal ({type(error).__name__})") from error
        if isinstance(result, Refused) or not result.accepted:
            reason = result.reason
            raise DealFailed(f"proposal refused: {reason}")
        try:
            countersigned = decode_transition(result.countersign)
        except ContractError as error:
            raise DealFailed(f"bad countersignature: {error}") from error
        cid = terms.contract_id
        record = ContractRecord(
            terms=encoded,
            client_signature=signature,
            transitions=(encode_transition(countersigned),),
        )
        async with self._lock(cid):
            try:
                state = await trio.to_thread.run_sync(self.book.add, record, BookRole.CLIENT, now)
            except ContractError as error:
                raise DealFailed(f"countersignature does not apply: {error}") from error
            if state.state is not State.ACTIVE:
                raise DealFailed("the provider did not countersign")
            try:
                self.ledger.lock_escrow(
                    cid,
                    self.party_id,
                    provider.peer_id,
                    terms.escrow_micro_tokens,
                    state.periods_total,
                    b"escrow:" + cid,
                    now_ms=now,
                )
            except LedgerError as error:
                raise DealFailed(f"cannot lock the escrow: {error.reason}") from error
            # Monitoring starts before any shard moves: the provider may end
            # the contract once it has checked the shards (`verify_stored`),
            # and its TERMINATE must follow ours, not race it.
            await self._transition(state, Event.START_MONITORING)
        # The record is first published on the auditor's next round, off the
        # put's critical path.
        self._unpublished.add(cid)
        self._next_due[cid] = 0
        self.counters.inc("deals_made")
        return cid

    async def _transition(
        self,
        state: ContractState,
        event: Event,
        *,
        period: int | None = None,
        amount: int = 0,
        digest: bytes = b"",
        reason: str = "",
    ) -> ContractState:
        """Sign `event` as the client, apply it here, send it to the provider."""
        issued = max(wall_ms(), state.last_issued_ms)
        t = make_transition(
            state, event, issued, period=period, amount_micro_tokens=amount, digest=digest,
            reason=reason,
        )  # fmt: skip
        t = sign_transition(t, Role.CLIENT, self._key)
        after = await trio.to_thread.run_sync(
            self.book.apply, state.contract_id, t, max(issued, wall_ms())
        )
        provider = state.terms.provider
        try:
            answer = await self.client.execute(
                provider, self._peer_addrs(provider), ContractExecute(encode_transition(t))
            )
            if isinstance(answer, Refused) or not answer.accepted:
                self.counters.inc("execute_refused_by_provider")
        except _PEER_FAILURES:
            # The record in the DHT carries the transition to the provider later.
            self.counters.inc("execute_unsent")
        return after

    async def publish(self, contract_id: bytes) -> int:
        """Store the contract's whole history on the nodes closest to its ID."""
        record = self.book.record(contract_id)
        if record is None:
            return 0
        try:
            return await self._publish_record(
                contract_key(contract_id), encode_contract_record(record)
            )
        except _PEER_FAILURES:
            self.counters.inc("contract_publish_failed")
            return 0

    # -- auditing ---------------------------------------------------------------------

    async def run_auditor(
        self, *, tick: float = 1.0, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Audit every contract we are the client of, period after period."""
        task_status.started()
        while True:
            await trio.sleep(tick)
            await self.audit_round(wall_ms())

    def _lock(self, contract_id: bytes) -> trio.Lock:
        lock = self._locks.get(contract_id)
        if lock is None:
            lock = self._locks[contract_id] = trio.Lock()
        return lock

    async def audit_round(self, now: int) -> None:
        """Advance every contract of ours that has something due (a few at a time)."""
        due = [
            s.contract_id
            for s in self.book.list(role=BookRole.CLIENT, states=_ROUND_STATES)
            if self._next_due.get(s.contract_id, 0) <= now
        ]
        limiter = trio.CapacityLimiter(AUDITS_IN_PARALLEL)

        async def advance(contract_id: bytes) -> None:
            async with limiter, self._lock(contract_id):
                state = self.book.state(contract_id)
                if state is None:
                    return
                try:
                    state = await self._advance(state, now)
                except (ContractError, LedgerError) as error:
                    # A transition or a book refused: a state we did not
                    # foresee (e.g. the provider ended the contract meanwhile).
                    # Say so and look again later; other contracts go on.
                    log.error("contract %s: %s", contract_id.hex()[:16], error)
                    self.counters.inc("advance_failed")
                    self._next_due[contract_id] = wall_ms() + state.terms.period_ms
                    return
                self._next_due[contract_id] = self._next_action_ms(state, wall_ms())

        async with trio.open_nursery() as nursery:
            for contract_id in due:
                nursery.start_soon(advance, contract_id)

    def _next_action_ms(self, state: ContractState, now: int) -> int:
        """When `_advance` next has work for this contract: an audit, a verdict, the end."""
        if state.state not in _AUDITED_STATES:
            return 1 << 62  # finished, or terminated and refunded
        terms = state.terms
        current = (now - terms.start_ms) // terms.period_ms
        if current >= state.periods_total:
            return now + 1000  # judge the last periods, complete and settle
        done = self._audits_run.get((terms.contract_id, current), 0)
        period_end = state.period_start_ms(current + 1)
        if done >= terms.audits_per_period:
            return period_end
        next_audit = state.period_start_ms(current) + (
            done * terms.period_ms // terms.audits_per_period
        )
        return max(now, min(next_audit, period_end))

    async def _advance(self, state: ContractState, now: int) -> ContractState:
        terms = state.terms
        cid = terms.contract_id
        if state.state is State.TERMINATED:
            # Ended early (e.g. the provider found a wrong root): what was not
            # earned goes back to the client; settling needs both parties.
            self._settle_escrow(state, now)
            return state
        changed = cid in self._unpublished
        self._unpublished.discard(cid)
        # 1. Judge every period that has ended and has no verdict.
        for period in range(state.periods_total):
            if now < state.period_start_ms(period + 1):
                break
            if period in state.passed or period in state.failed:
                continue
            if state.state not in _AUDITED_STATES:
                break
            state = await self._judge(state, period)
            changed = True
        # 2. Audit the running period, spreading its audits over it.
        current = (now - terms.start_ms) // terms.period_ms
        if state.state in _AUDITED_STATES and 0 <= current < state.periods_total:
            done = self._audits_run.get((cid, current), 0)
            due = (now - state.period_start_ms(current)) * terms.audits_per_period
            if done < terms.audits_per_period and due >= done * terms.period_ms:
                self._audits_run[(cid, current)] = done + 1
                await self._audit_once(state, current)
        # 3. The term is over and every period judged: complete and settle.
        if (
            state.state is State.MONITORING
            and now >= state.end_ms
            and len(state.passed | state.failed) == state.periods_total
        ):
            state = await self._transition(state, Event.COMPLETE)
            state = await self._transition(state, Event.SETTLE, amount=final_payout(state))
            self._settle_escrow(state, now)
            changed = True
        if changed:
            await self.publish(cid)
        return state

    async def _audit_once(self, state: ContractState, period: int) -> None:
        """One round of evidence about the provider for `period`.

        A ping (uptime); a storage proof for random leaves of a random shard
        with a fresh nonce (integrity; a timeout gets one retry before it
        counts as a miss); and a real ranged fetch of one proven leaf, timed
        (retrieval latency) and compared with the proven bytes.
        """
        terms = state.terms
        shard = random.choice(terms.shards)
        evidence = self._evidence.setdefault((terms.contract_id, period), _PeriodEvidence())
        provider = terms.provider
        addrs = self._peer_addrs(provider)
        evidence.pings_total += 1
        try:
            with trio.fail_after(PING_TIMEOUT):
                await self._ping(provider, addrs)
            evidence.pings_ok += 1
        except _PEER_FAILURES:
            pass
        challenge = audit.make_challenge(shard.size, terms.leaf_size, terms.leaves_per_audit)
        request = AuditChallenge(
            contract_id=terms.contract_id,
            shard_address=shard.address,
            nonce=challenge.nonce,
            leaf_indices=challenge.leaf_indices,
        )
        answer: AuditProof | Refused | None = None
        for attempt in range(2):
            try:
                answer = await self.client.audit(provider, addrs, request)
                break
            except trio.TooSlowError:
                if attempt == 0:
                    continue  # a timeout is retried once before it counts as a miss
                evidence.failures.append("audit timed out twice")
            except _PEER_FAILURES as error:
                evidence.failures.append(f"audit unanswered ({type(error).__name__})")
                break
        evidence.audits_total += 1
        if answer is None:
            return
        if isinstance(answer, Refused):
            evidence.failures.append(f"audit refused: {answer.reason}")
            self.counters.inc("audit_failed")
            return
        proof = audit.Proof(
            nonce=answer.nonce,
            items=tuple(
                audit.ProofItem(index=i.index, leaf=i.leaf, path=i.path) for i in answer.items
            ),
        )
        try:
            audit.verify_proof(shard.merkle_root, shard.size, terms.leaf_size, challenge, proof)
        except audit.AuditFailed as error:
            evidence.failures.append(f"bad proof: {error.reason}")
            self.counters.inc("audit_failed")
            return
        # Retrieval as a reader sees it: fetch one proven leaf like any range.
        item = proof.items[0]
        started = time.monotonic()
        try:
            with trio.fail_after(terms.sla.retrieval_ms / 1000 * 2):
                fetched = await self._fetch_range(
                    provider, addrs, shard.address, item.index * terms.leaf_size, len(item.leaf)
                )
        except _FETCH_FAILURES as error:
            evidence.failures.append(f"fetch failed ({type(error).__name__})")
            evidence.latencies_ms.append(terms.sla.retrieval_ms * 2)
            return
        evidence.latencies_ms.append(int((time.monotonic() - started) * 1000))
        if fetched != item.leaf:
            evidence.failures.append("fetched bytes differ from the proven leaf")
            self.counters.inc("audit_failed")
            return
        evidence.audits_passed += 1
        self.counters.inc("audit_passed")

    async def _judge(self, state: ContractState, period: int) -> ContractState:
        cid = state.contract_id
        if (cid, period) not in self._evidence:
            # No audit in this period (e.g. we restarted): audit now before judging.
            await self._audit_once(state, period)
        evidence = self._evidence.pop((cid, period))
        self._audits_run.pop((cid, period), None)
        outcome = assess(
            measure_period(
                pings_ok=evidence.pings_ok,
                pings_total=evidence.pings_total,
                latencies_ms=evidence.latencies_ms,
                audits_passed=evidence.audits_passed,
                audits_total=evidence.audits_total,
            ),
            state.terms.sla,
        )
        digest = blake3.blake3(
            repr((evidence.audits_passed, evidence.audits_total, evidence.failures)).encode()
        ).digest()
        now = wall_ms()
        provider = state.terms.provider
        if outcome.verdict is Verdict.VIOLATION:
            why = "; ".join(evidence.failures) or outcome.describe()
            state = await self._transition(
                state, Event.AUDIT_FAILED, period=period, digest=digest, reason=why[:200]
            )
            state = await self._transition(
                state, Event.PENALTY_APPLIED, period=period, amount=penalty_due(state),
                digest=digest,
            )  # fmt: skip
            state = await self._transition(state, Event.RESOLVE)
            self.counters.inc("periods_failed")
        else:
            state = await self._transition(state, Event.AUDIT_PASSED, period=period, digest=digest)
            amount = period_payment(state.terms, period)
            state = await self._transition(
                state, Event.PAYMENT_RELEASE, period=period, amount=amount
            )
            self.ledger.release_period(
                cid, period, b"release:" + cid + struct.pack(">I", period), now_ms=now
            )
            self.counters.inc("periods_paid")
        self.reputation.record(provider, period_event(outcome, cid, period, now))
        return state

    def _settle_escrow(self, state: ContractState, now: int) -> None:
        """At settlement, what the provider did not earn goes back to the client."""
        escrow = self.ledger.escrow(state.contract_id)
        if escrow is not None and not escrow.closed:
            self.ledger.refund(state.contract_id, b"refund:" + state.contract_id, now_ms=now)


class ContractedFileNetwork:
    """The node's FileNetwork, where a store without a contract first makes one.

    Repair rebuilds single shards and stores each on a live node: under the
    market, the repairing node pays for that copy, with a one-shard contract
    with the new holder (this node keeps its own rebuilt shards, no contract
    needed). Everything else passes straight through.
    """

    def __init__(self, net: FileNetwork, market: NodeMarket) -> None:
        self._net = net
        self._market = market

    @property
    def local_peer_id(self) -> bytes:
        return self._net.local_peer_id

    async def holder_candidates(self, address: bytes) -> list[PeerInfo]:
        return await self._net.holder_candidates(address)

    async def store_shard(
        self, peer: PeerInfo, address: bytes, data: bytes, *, contract_id: bytes = b""
    ) -> None:
        if not contract_id and peer.peer_id != self._net.local_peer_id:
            try:
                contract_id = await self._market.single_shard_deal(peer, address, data)
            except DealFailed as error:
                raise ShardTransferError(f"no contract with this holder: {error}") from error
        await self._net.store_shard(peer, address, data, contract_id=contract_id)

    async def shard_holders(self, address: bytes) -> tuple[list[PeerInfo], list[PeerInfo]]:
        return await self._net.shard_holders(address)

    async def confirmed_holders(self, address: bytes) -> list[PeerInfo]:
        return await self._net.confirmed_holders(address)

    async def fetch_shard(self, peer: PeerInfo, address: bytes) -> bytes:
        return await self._net.fetch_shard(peer, address)

    async def publish_record(self, key: bytes, value: bytes) -> int:
        return await self._net.publish_record(key, value)

    async def find_record(self, key: bytes) -> bytes | None:
        return await self._net.find_record(key)
