"""The caller's network address, for per-address budgets (the sign-in throttle).

gRPC gives the peer as `ipv4:1.2.3.4:5678`, `ipv6:[::1]:5678` or `unix:...`.
Behind a proxy or load balancer every call comes from the proxy: when the peer
is one of CONCERT_TRUSTED_PROXIES, the client is read from `x-forwarded-for`,
walking from the right past the trusted hops (the left part is whatever the
client claimed, so it is never trusted). With no trusted proxies configured,
the header is ignored: anyone could write it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from grpc.aio import ServicerContext

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
FORWARDED_FOR = "x-forwarded-for"


def parse_networks(raw: str) -> tuple[Network, ...]:
    """CONCERT_TRUSTED_PROXIES: comma-separated addresses or CIDR blocks."""
    networks = []
    for part in raw.split(","):
        if part.strip():
            try:
                networks.append(ipaddress.ip_network(part.strip(), strict=False))
            except ValueError:
                raise ValueError(f"{part.strip()!r} is not an IP address or CIDR block") from None
    return tuple(networks)


def peer_address(peer: str) -> str:
    """The IP of a gRPC peer string; the whole string when it names no IP (unix sockets)."""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    if kind == "ipv6":
        host = rest.rpartition(":")[0]
        return host.strip("[]")
    return peer


def client_address(
    peer: str, metadata: Iterable[tuple[str, str | bytes]], trusted: Sequence[Network]
) -> str:
    address = peer_address(peer)
    if not trusted or not _is_in(address, trusted):
        return address
    hops: list[str] = []
    for key, value in metadata:
        if key.lower() == FORWARDED_FOR and isinstance(value, str):
            hops.extend(hop.strip() for hop in value.split(",") if hop.strip())
    for hop in reversed(hops):
        if not _is_ip(hop):
            return address  # a malformed chain: fall back to the proxy itself
        if not _is_in(hop, trusted):
            return hop
    return hops[0] if hops else address


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_in(address: str, networks: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def caller_address(context: ServicerContext, trusted_proxies: Sequence[Network]) -> str:
    """client_address of a call, as the servicers see it (trusted_proxies: the
    settings' CONCERT_TRUSTED_PROXIES)."""
    return client_address(context.peer(), context.invocation_metadata() or (), trusted_proxies)
