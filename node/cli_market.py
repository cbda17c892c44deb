"""``zhtp market quote`` and ``zhtp wallet``: prices from other nodes, and this node's tokens."""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from typing import Any

from node.api.client import ApiClient
from node.cli_files import FileCommandError

MICRO = 1_000_000
_SIZE = re.compile(r"(?i)\s*([0-9]+(?:\.[0-9]+)?)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*")
_UNITS = {
    None: 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "tib": 1 << 40,
}


def parse_size(text: str) -> int:
    """``4096``, ``64MiB``, ``1.5GB`` as bytes; FileCommandError otherwise."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise FileCommandError(f"not a size: {text!r} (e.g. 4096, 64MiB, 1GB)")
    number, unit = match.groups()
    size = int(float(number) * _UNITS[unit.lower() if unit else None])
    if size < 1:
        raise FileCommandError("a size must be at least 1 byte")
    return size


def tokens(micro: int) -> str:
    sign = "-" if micro < 0 else ""
    whole, frac = divmod(abs(micro), MICRO)
    return f"{sign}{whole:,}.{frac:06d}"


def cmd_quote(args: argparse.Namespace, api: ApiClient) -> dict[str, Any]:
    body = {"size": parse_size(args.size), "days": args.days, "sla": args.sla}
    if args.tier:
        body["tier"] = args.tier
    info: dict[str, Any] = api.post_json("/api/v0/market/quote", body)
    return info


def quote_text(info: dict[str, Any]) -> str:
    quotes = [q for q in info["quotes"] if "refused" not in q]
    lines = [
        f"{len(quotes)} quotes for {info['size']:,} bytes, {info['days']} days, tier "
        f"{info['tier']}{', with SLA' if info['sla'] else ''} (best first)"
    ]
    for q in info["quotes"]:
        if "refused" in q:
            lines.append(f"  {q['provider']}  refused: {q['refused']}")
        else:
            lines.append(
                f"  {q['provider']}  {tokens(q['total_micro_tokens']):>18} tokens  "
                f"reputation {q['reputation']}"
            )
    if quotes:
        best = quotes[0]
        lines.append(f"breakdown of the best quote ({best['provider']}):")
        for line in best["lines"]:
            lines.append(
                f"  {line['label']:<28} {tokens(line['micro_tokens']):>18}  {line['detail']}"
            )
        lines.append(f"  {'total':<28} {tokens(best['total_micro_tokens']):>18}")
    return "\n".join(lines)


def cmd_wallet(args: argparse.Namespace, api: ApiClient) -> dict[str, Any]:
    info: dict[str, Any] = api.get_json("/api/v0/wallet")
    return info


def wallet_text(info: dict[str, Any]) -> str:
    lines = [
        f"account {info['account']}",
        f"  balance: {tokens(info['balance'])} tokens",
        f"  escrow:  {tokens(info['escrow'])} tokens locked in contracts",
    ]
    if info["receipts"]:
        lines.append("  recent receipts (signed by this node):")
    for r in info["receipts"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["time_ms"] / 1000))
        lines.append(f"    #{r['id']} {when} {r['kind']:<18} {tokens(r['amount_micro_tokens'])}")
    return "\n".join(lines)


def deals_text(info: dict[str, Any]) -> str:
    deals = info["deals"]
    if not deals:
        return "no deals yet"
    lines = []
    for d in deals:
        other = d["provider"] if d["role"] == "client" else d["client"]
        lines.append(
            f"{d['id'][:16]}…  {d['role']:<8} {d['state']:<10} {other}  {d['size']:>12} B  "
            f"{tokens(d['price_micro_tokens'])} tokens"
        )
    return "\n".join(lines)


def deal_text(info: dict[str, Any]) -> str:
    lines = [
        f"deal {info['id']}",
        f"  {info['role']} of a {info['state']} contract, {info['size']:,} bytes in "
        f"{len(info['shards'])} shards",
        f"  provider {info['provider']}",
        f"  client   {info['client']}",
        f"  price {tokens(info['price_micro_tokens'])}, escrow "
        f"{tokens(info['escrow_micro_tokens'])}, collateral "
        f"{tokens(info['collateral_micro_tokens'])} tokens",
        f"  periods: {info['periods']} of {info['period_ms'] / 1000:g} s; passed "
        f"{len(info['passed'])}, failed {len(info['failed'])}, paid {len(info['released'])} "
        f"({tokens(info['released_micro_tokens'])} tokens), penalties "
        f"{tokens(info['penalties_micro_tokens'])}",
        "  history:",
    ]
    for t in info["history"]:
        period = f" period {t['period']}" if t["period"] is not None else ""
        amount = f" {tokens(t['amount_micro_tokens'])}" if t["amount_micro_tokens"] else ""
        reason = f" ({t['reason']})" if t["reason"] else ""
        lines.append(f"    #{t['sequence']} {t['event']}{period}{amount}{reason}")
    return "\n".join(lines)


def reputation_text(info: dict[str, Any]) -> str:
    lines = [f"{info['peer']}: {info['score']} points ({info['standing']})"]
    for c in info["history"]:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c["at_ms"] / 1000))
        lines.append(f"  {when} {c['points']:+5d} -> {c['score_after']:5d}  {c['cause']}")
    if not info["history"]:
        lines.append("  no judged periods yet (a new provider starts at 1000)")
    return "\n".join(lines)


def add_market_commands(
    commands: Any,
    common: argparse.ArgumentParser,
    command: Callable[..., argparse.ArgumentParser],
    run: Callable[..., Any],
    parser_class: Any,
) -> None:
    """Register ``zhtp market ...`` and ``zhtp wallet``."""
    group = commands.add_parser("market", help="storage prices and deals", parents=[common])
    sub = group.add_subparsers(dest="market_command", required=True, parser_class=parser_class)
    p = command("quote", run(cmd_quote, quote_text), "ask nodes what storing SIZE costs", sub)
    p.add_argument("size", help="bytes, or with a unit: 64MiB, 1GB")
    p.add_argument("--tier", choices=["hot", "warm", "cold", "archive"])
    p.add_argument("--days", type=int, default=30, help="how long to store (default 30)")
    p.add_argument("--sla", action="store_true", help="ask for SLA guarantees (+10%%)")
    command(
        "deals",
        run(lambda a, c: c.get_json("/api/v0/market/deals"), deals_text),
        "this node's storage contracts, as client and as provider",
        sub,
    )
    p = command(
        "deal",
        run(lambda a, c: c.get_json("/api/v0/market/deal", id=a.id), deal_text),
        "one contract: terms, periods, payments and its signed history",
        sub,
    )
    p.add_argument("id", help="the contract ID (hex), as `market deals` shows it")
    command("wallet", run(cmd_wallet, wallet_text), "this node's balance, escrow and receipts")
    p = command(
        "reputation",
        run(lambda a, c: c.get_json("/api/v0/reputation", peer=a.peer), reputation_text),
        "a provider's score as this node measured it, and every change with its cause",
    )
    p.add_argument("peer", help="the provider's PeerID")
