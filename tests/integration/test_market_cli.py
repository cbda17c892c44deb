"""Quotes and wallets on a real testnet, through the CLI."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.integration.test_testnet_cli import NODES, Net, net, ok_json, one_error_line, zhtp

__all__ = ["net"]  # the module-scoped testnet fixture

pytestmark = pytest.mark.slow


def test_every_node_starts_funded_once(net: Net) -> None:
    wallet = ok_json(zhtp("--data-dir", net.data_dir(2), "wallet", "--json"))
    assert wallet["balance"] == 1_000_000 * 1_000_000 and wallet["escrow"] == 0
    assert [r["kind"] for r in wallet["receipts"]] == ["mint"]
    assert wallet["receipts"][0]["to"] == wallet["account"]


def test_quotes_come_from_other_nodes_with_their_breakdown(net: Net) -> None:
    info = ok_json(
        zhtp("--data-dir", net.data_dir(1), "market", "quote", "1GB", "--tier", "cold", "--json")
    )
    quotes = [q for q in info["quotes"] if "refused" not in q]
    assert 3 <= len(quotes) <= NODES - 1
    me = ok_json(zhtp("--data-dir", net.data_dir(1), "id", "--json"))["peer_id"]
    assert me not in {q["provider"] for q in quotes}
    for quote in quotes:
        # An empty provider, 1 GB, 30 days, cold: 100 x 30 x 60% x 0.8 = 1,440
        # tokens, plus 5% network and 2% escrow fees = 1,540.8.
        assert quote["total_micro_tokens"] == 1_540_800_000
        assert sum(line["micro_tokens"] for line in quote["lines"]) == 1_540_800_000
        assert quote["lines"][0]["key"] == "base"
        assert quote["reputation"] == 1000


def test_bad_quote_requests_are_one_line_errors(net: Net) -> None:
    bad = zhtp("--data-dir", net.data_dir(1), "market", "quote", "lots")
    assert "not a size" in one_error_line(bad)
    bad = zhtp("--data-dir", net.data_dir(1), "market", "quote", "1GB", "--days", "0")
    assert "days must be" in one_error_line(bad)


def test_a_put_makes_deals_that_are_audited_and_paid(net: Net, tmp_path: Path) -> None:
    source = tmp_path / "ledger.bin"
    source.write_bytes(os.urandom(600_000))
    client = net.data_dir(3)
    put = ok_json(zhtp("--data-dir", client, "put", source, "--json"))
    assert put["contracts"] >= 3
    deals = ok_json(zhtp("--data-dir", client, "market", "deals", "--json"))["deals"]
    mine = [d for d in deals if d["role"] == "client"]
    assert len(mine) == put["contracts"]
    assert all(d["state"] == "monitoring" and d["provider"] and d["id"] for d in mine)
    wallet = ok_json(zhtp("--data-dir", client, "wallet", "--json"))
    assert wallet["escrow"] == sum(d["price_micro_tokens"] for d in mine) > 0
    assert wallet["balance"] == 1_000_000 * 1_000_000 - wallet["escrow"]

    # The first 30 s period ends, is audited, judged and paid.
    first = mine[0]
    deadline = time.monotonic() + 90
    while True:
        deal = ok_json(zhtp("--data-dir", client, "market", "deal", first["id"][:12], "--json"))
        if deal["released"] or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    assert deal["released"] == [0] and deal["failed"] == []
    events = [t["event"] for t in deal["history"]]
    assert events[:2] == ["COUNTERSIGN", "START_MONITORING"]
    assert "AUDIT_PASSED" in events and "PAYMENT_RELEASE" in events
    reputation = ok_json(zhtp("--data-dir", client, "reputation", first["provider"], "--json"))
    assert reputation["score"] > 1000 and reputation["standing"] in ("normal", "high")
    assert "period 0" in reputation["history"][0]["cause"]
    text = zhtp("--data-dir", client, "market", "deal", first["id"])
    assert text.returncode == 0 and "PAYMENT_RELEASE period 0" in text.stdout
    # The provider's own book shows the payment it was sent.
    index = next(
        i
        for i in range(NODES)
        if ok_json(zhtp("--data-dir", net.data_dir(i), "id", "--json"))["peer_id"]
        == first["provider"]
    )
    theirs = ok_json(zhtp("--data-dir", net.data_dir(index), "wallet", "--json"))
    assert any(r["kind"] == "inbound" for r in theirs["receipts"])


def test_deal_lookups_are_one_line_errors(net: Net) -> None:
    missing = zhtp("--data-dir", net.data_dir(1), "market", "deal", "00" * 8)
    assert "no such deal" in one_error_line(missing)
    bad = zhtp("--data-dir", net.data_dir(1), "market", "deal", "xyz")
    assert "contract ID in hex" in one_error_line(bad)
    bad = zhtp("--data-dir", net.data_dir(1), "reputation", "not-a-peer")
    assert "PeerID" in one_error_line(bad)
