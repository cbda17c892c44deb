"""Market benchmarks between real nodes on loopback: ``python -m tests.bench.bench_market``.

Two nodes in this process (real py-libp2p hosts, real SQLite books, contracts
required). Measures, as the client node sees them:
- quote round trips (request, price, sign, verify), p50 / p95;
- contracts deployed per second, one and eight at a time (propose,
  countersign, both books, escrow and collateral, start monitoring);
- an audit of a 1 MiB shard end to end (challenge, read + prove on the
  holder, verify), p50 / p95; and prove / verify alone, in this process.
``--json`` prints the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import blake3
import trio

from node.market import audit
from node.market.contract import ShardTerm
from node.market.pricing import PricingPolicy
from node.market_node import NodeMarket
from protocols.kad.messages import PeerInfo
from protocols.market.messages import AuditChallenge, Quote
from tests.integration.netutil import start_network, wait_for

QUOTES = 200
DEALS = 40
AUDITS = 50
SHARD = 1 << 20


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fresh_quote(market: NodeMarket, provider: PeerInfo, size: int) -> Quote:
    answer = await market.client.quote(
        provider.peer_id, provider.addrs, market.quote_request(size, "warm")
    )
    assert isinstance(answer, Quote), answer
    return answer


async def one_deal(market: NodeMarket, provider: PeerInfo) -> None:
    quote = await fresh_quote(market, provider, 4096)
    shard = ShardTerm(address=os.urandom(32), merkle_root=os.urandom(32), size=4096)
    await market.make_deal(provider, quote, [shard])


async def measure(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        nodes = await start_network(
            nursery,
            root,
            2,
            require_contracts=True,
            faucet_tokens=1_000_000,
            pricing=PricingPolicy(),
        )
        for node in nodes:
            await wait_for(lambda n=node: len(n.service.dht.table) >= 1)
        client, holder = nodes[0].service, nodes[1].service
        market = client.market
        provider = PeerInfo(holder.peer_id.to_bytes(), holder.listen_addrs())

        times = []
        for _ in range(QUOTES):
            started = time.perf_counter()
            await fresh_quote(market, provider, 1 << 30)
            times.append((time.perf_counter() - started) * 1000)
        out["quote_ms_p50"] = statistics.median(times)
        out["quote_ms_p95"] = percentile(times, 0.95)

        started = time.perf_counter()
        for _ in range(DEALS):
            await one_deal(market, provider)
        out["contracts_per_s_1"] = DEALS / (time.perf_counter() - started)

        started = time.perf_counter()
        limiter = trio.Semaphore(8)

        async def limited() -> None:
            async with limiter:
                await one_deal(market, provider)

        async with trio.open_nursery() as deals:
            for _ in range(DEALS):
                deals.start_soon(limited)
        out["contracts_per_s_8"] = DEALS / (time.perf_counter() - started)

        # A real 1 MiB shard under a contract, then audits of it.
        data = os.urandom(SHARD)
        address = blake3.blake3(data).digest()
        root_hash = audit.merkle_root(data, market.leaf_size)
        quote = await fresh_quote(market, provider, SHARD)
        cid = await market.make_deal(
            provider, quote, [ShardTerm(address=address, merkle_root=root_hash, size=SHARD)]
        )
        await client.files.store_shard(provider, address, data, contract_id=cid)
        times = []
        for _ in range(AUDITS):
            challenge = audit.make_challenge(SHARD, market.leaf_size, 16)
            started = time.perf_counter()
            proof = await market.client.audit(
                provider.peer_id,
                provider.addrs,
                AuditChallenge(cid, address, challenge.nonce, challenge.leaf_indices),
            )
            assert not isinstance(proof, Exception)
            items = tuple(audit.ProofItem(i.index, i.leaf, i.path) for i in proof.items)  # type: ignore[union-attr]
            audit.verify_proof(
                root_hash,
                SHARD,
                market.leaf_size,
                challenge,
                audit.Proof(proof.nonce, items),  # type: ignore[union-attr]
            )
            times.append((time.perf_counter() - started) * 1000)
        out["audit_ms_p50"] = statistics.median(times)
        out["audit_ms_p95"] = percentile(times, 0.95)
        challenge = audit.make_challenge(SHARD, market.leaf_size, 16)
        started = time.perf_counter()
        local = audit.prove(data, challenge, market.leaf_size)
        out["prove_ms"] = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        audit.verify_proof(root_hash, SHARD, market.leaf_size, challenge, local)
        out["verify_ms"] = (time.perf_counter() - started) * 1000
        nursery.cancel_scope.cancel()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="zhtp-bench-market-") as tmp:
        figures = trio.run(measure, Path(tmp))
    if args.json:
        print(json.dumps(figures))
        return
    rows = [
        (
            "quote round trip p50 / p95",
            f"{figures['quote_ms_p50']:.2f} / {figures['quote_ms_p95']:.2f} ms",
        ),
        (
            "contracts deployed per second, 1 / 8 at a time",
            f"{figures['contracts_per_s_1']:.1f} / {figures['contracts_per_s_8']:.1f}",
        ),
        (
            "audit of a 1 MiB shard, 16 leaves, end to end p50 / p95",
            f"{figures['audit_ms_p50']:.2f} / {figures['audit_ms_p95']:.2f} ms",
        ),
        (
            "prove / verify alone (1 MiB, 16 leaves)",
            f"{figures['prove_ms']:.2f} / {figures['verify_ms']:.2f} ms",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'figure':<{width}}  value")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
