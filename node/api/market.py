"""Market routes of the control API: quotes from other nodes, and this node's wallet."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import trio
from libp2p.peer.id import ID

from node.market.book import ContractSummary
from node.market.ledger import Receipt
from node.market_node import QuoteOutcome
from node.tiers import TIER_NAMES
from protocols.kad.keyspace import kad_id
from protocols.market.messages import QuoteRequest

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from node.api.app import Request, Response
    from node.service import NodeService

SECONDS_PER_DAY = 86_400
MAX_QUOTE_SIZE = 1 << 50  # 1 PiB: anything larger is a typo
MAX_QUOTE_DAYS = 36_500
QUOTE_TIMEOUT = 20.0
RECEIPTS_SHOWN = 20


def _int_field(data: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
    from node.api.app import ApiError

    value = data.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(400, f"{name} must be an integer in {low}..{high}")
    return value


def quote_json(outcome: QuoteOutcome) -> dict[str, Any]:
    out: dict[str, Any] = {
        "provider": ID(outcome.peer).to_base58(),
        "reputation": outcome.score,
    }
    if outcome.quote is None:
        out["refused"] = outcome.refusal
        return out
    q = outcome.quote
    out.update(
        {
            "quote_id": q.quote_id.hex(),
            "total_micro_tokens": q.total_micro_tokens,
            "valid_until_ms": q.valid_until_ms,
            "free_capacity_bytes": q.free_capacity_bytes,
            "lines": [
                {
                    "key": line.key,
                    "label": line.label,
                    "micro_tokens": line.micro_tokens,
                    "detail": line.detail,
                }
                for line in q.lines
            ],
        }
    )
    return out


def deal_json(summary: ContractSummary) -> dict[str, Any]:
    return {
        "id": summary.contract_id.hex(),
        "role": summary.role.value,
        "provider": ID(summary.provider).to_base58(),
        "client": ID(summary.client).to_base58(),
        "state": summary.state.value,
        "sequence": summary.sequence,
        "price_micro_tokens": summary.price_micro_tokens,
        "size": summary.total_size,
        "start_ms": summary.start_ms,
        "end_ms": summary.end_ms,
    }


def receipt_json(receipt: Receipt) -> dict[str, Any]:
    def account(raw: bytes | None) -> str | None:
        if raw is None:
            return None
        try:
            return ID(raw).to_base58()
        except Exception:  # an account that is not a PeerID is shown as hex
            return raw.hex()

    return {
        "id": receipt.id,
        "kind": receipt.kind.value,
        "from": account(receipt.src),
        "to": account(receipt.dst),
        "amount_micro_tokens": receipt.amount,
        "contract": receipt.contract_id.hex() if receipt.contract_id else None,
        "period": receipt.period,
        "time_ms": receipt.time_ms,
        "signature": receipt.signature.hex(),
    }


class MarketRoutes:
    def __init__(self, node: NodeService) -> None:
        self.node = node

    def routes(self) -> dict[tuple[str, str], Callable[[Request], Awaitable[Response]]]:
        return {
            ("POST", "/api/v0/market/quote"): self.quote,
            ("GET", "/api/v0/wallet"): self.wallet,
            ("GET", "/api/v0/market/deals"): self.deals,
            ("GET", "/api/v0/market/deal"): self.deal,
            ("GET", "/api/v0/reputation"): self.reputation,
        }

    async def deals(self, request: Request) -> Response:
        from node.api.app import Response

        summaries = self.node.market.book.list()
        return Response.json({"deals": [deal_json(s) for s in summaries]})

    async def deal(self, request: Request) -> Response:
        from node.api.app import ApiError, Response

        wanted = request.arg("id").strip().lower().rstrip("…")
        if len(wanted) < 8 or any(c not in "0123456789abcdef" for c in wanted):
            raise ApiError(400, "id must be a contract ID in hex (at least 8 digits)")
        market = self.node.market
        matches = [s for s in market.book.list() if s.contract_id.hex().startswith(wanted)]
        if not matches:
            raise ApiError(404, "no such deal on this node")
        if len(matches) > 1:
            raise ApiError(400, f"{len(matches)} deals start with {wanted}: give more digits")
        summary = matches[0]
        state = market.book.state(summary.contract_id)
        if state is None:
            raise ApiError(404, "no such deal on this node")
        terms = state.terms
        out = deal_json(summary)
        out.update(
            {
                "escrow_micro_tokens": terms.escrow_micro_tokens,
                "collateral_micro_tokens": terms.collateral_micro_tokens,
                "penalty_micro_tokens": terms.penalty_micro_tokens,
                "period_ms": terms.period_ms,
                "periods": state.periods_total,
                "passed": sorted(state.passed),
                "failed": sorted(state.failed),
                "released": sorted(state.released),
                "released_micro_tokens": state.released_micro_tokens,
                "penalties_micro_tokens": state.penalties_micro_tokens,
                "shards": [s.address.hex() for s in terms.shards],
                "sla": {
                    "uptime_bp": terms.sla.uptime_bp,
                    "retrieval_ms": terms.sla.retrieval_ms,
                    "integrity_bp": terms.sla.integrity_bp,
                },
                "history": [
                    {
                        "sequence": t.sequence,
                        "event": t.event.name,
                        "period": t.period,
                        "amount_micro_tokens": t.amount_micro_tokens,
                        "issued_ms": t.issued_ms,
                        "reason": t.reason,
                    }
                    for t in state.history
                ],
            }
        )
        return Response.json(out)

    async def reputation(self, request: Request) -> Response:
        from node.api.app import ApiError, Response

        try:
            peer = ID.from_base58(request.arg("peer")).to_bytes()
        except ValueError:
            raise ApiError(400, "peer must be a PeerID") from None
        book = self.node.market.reputation
        return Response.json(
            {
                "peer": request.arg("peer"),
                "score": book.score(peer),
                "standing": book.standing(peer).value,
                "history": [
                    {
                        "at_ms": c.at_ms,
                        "points": c.points,
                        "cause": c.cause,
                        "contract": c.contract_id.hex() if c.contract_id else None,
                        "period": c.period,
                        "score_after": c.score_after,
                    }
                    for c in book.history(peer, 50)
                ],
            }
        )

    async def quote(self, request: Request) -> Response:
        from node.api.app import ApiError, Response

        data = request.json()
        size = _int_field(data, "size", 1, MAX_QUOTE_SIZE, 0)
        days = _int_field(data, "days", 1, MAX_QUOTE_DAYS, 30)
        tier = data.get("tier", self.node.config.default_tier)
        if tier not in TIER_NAMES:
            raise ApiError(400, f"unknown tier {tier!r} (known: {', '.join(TIER_NAMES)})")
        sla = data.get("sla", False)
        if not isinstance(sla, bool):
            raise ApiError(400, "sla must be true or false")
        node = self.node
        # Candidates: nodes from our routing table around a random point, as
        # placement would pick holders for some shard.
        peers = node.dht.closest_peers(kad_id(os.urandom(32)), 8, exclude=())
        if not peers:
            raise ApiError(503, "no other nodes known: cannot ask for quotes")
        ask = QuoteRequest(
            size_bytes=size,
            duration_seconds=days * SECONDS_PER_DAY,
            tier=tier,
            sla_requested=sla,
            client=node.peer_id.to_bytes(),
        )
        with trio.move_on_after(QUOTE_TIMEOUT):
            outcomes = await node.market.gather_quotes(peers, ask)
            return Response.json(
                {
                    "size": size,
                    "days": days,
                    "tier": tier,
                    "sla": sla,
                    "quotes": [quote_json(o) for o in outcomes],
                }
            )
        raise ApiError(504, "no quotes in time")

    async def wallet(self, request: Request) -> Response:
        from node.api.app import Response

        ledger = self.node.market.ledger
        account = self.node.peer_id.to_bytes()

        def read() -> dict[str, Any]:
            return {
                "account": self.node.peer_id.to_base58(),
                "balance": ledger.balance(account),
                "escrow": ledger.escrowed_total(account),
                "receipts": [receipt_json(r) for r in ledger.receipts(account, RECEIPTS_SHOWN)],
                "public_key": self.node.market.public_key.hex(),
            }

        return Response.json(await trio.to_thread.run_sync(read))
