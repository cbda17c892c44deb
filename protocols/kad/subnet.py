"""Which public subnet a peer's addresses put it in, for routing-table caps.

Caps apply to public addresses only: loopback, private, link-local, shared
(CGNAT) and unspecified addresses are exempt, or a local testnet, where
every node shares 127.0.0.1, could never form. Multicast and broadcast
addresses are not a peer's address and are skipped. Documentation ranges
(203.0.113.0/24, 2001:db8::/32) count as public so tests can use them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import multiaddr

IP4_PREFIX = 24
IP6_PREFIX = 48

_IP4_EXEMPT = tuple(
    ipaddress.IPv4Network(n)
    for n in (
        "0.0.0.0/8",  # "this network", includes unspecified
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (CGNAT, Tailscale)
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.168.0.0/16",
    )
)
_IP6_EXEMPT = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "::/128",
        "::1/128",
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
    )
)

_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


def _first_ip(addr: bytes) -> _IP | None:
    """The leading IP of a binary multiaddr, if it has one we can use."""
    # The bytes come from remote peers and the parser fails on garbage with
    # assorted exception types (TypeError, ParseError, IndexError...), so
    # only the parse itself sits inside this broad try. The text form is
    # used because multiaddr 0.2.0's items() misreads addresses after an
    # ip6zone component, while str() gets them right.
    try:
        parts = str(multiaddr.Multiaddr(addr)).split("/")[1:]
    except Exception:
        return None
    # A relayed address names the relay's IP, not the peer's.
    if "p2p-circuit" in parts:
        return None
    if parts[:1] == ["ip6zone"]:
        parts = parts[2:]
    if len(parts) < 2 or parts[0] not in ("ip4", "ip6"):
        return None
    try:
        return ipaddress.ip_address(parts[1])
    except ValueError:
        return None


def _is_public(ip: _IP) -> bool:
    if ip.is_multicast:
        return False
    if isinstance(ip, ipaddress.IPv4Address):
        return ip != ipaddress.IPv4Address("255.255.255.255") and not any(
            ip in n for n in _IP4_EXEMPT
        )
    return not any(ip in n for n in _IP6_EXEMPT)


def public_subnet(addrs: Sequence[bytes]) -> str | None:
    """The subnet key of the first public IP in ``addrs``, e.g. ``"ip4:203.0.113.0/24"``.

    None when no address has a public IP. Unparseable addresses are skipped.
    """
    for addr in addrs:
        ip = _first_ip(addr)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip is None or not _is_public(ip):
            continue
        if isinstance(ip, ipaddress.IPv4Address):
            return f"ip4:{ipaddress.ip_network(f'{ip}/{IP4_PREFIX}', strict=False)}"
        return f"ip6:{ipaddress.ip_network(f'{ip}/{IP6_PREFIX}', strict=False)}"
    return None
