"""Quotes and wallets on a real testnet, through the CLI."""

from __future__ import annotations

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
