"""Resolvers for ``postbus_dns_servers``, the one way every role builds them.

``1.2.3.4``, ``1.2.3.4:5353``, ``[::1]:5353`` or ``::1``; an empty list means
the system's resolver, and without /etc/resolv.conf the local name server,
as the C library's resolver (and so Postfix) does.
"""

from __future__ import annotations

from typing import TypeVar

import dns.asyncresolver
import dns.nameserver
import dns.resolver

__all__ = ["async_resolver", "nameserver", "sync_resolver"]

R = TypeVar("R", dns.resolver.Resolver, dns.asyncresolver.Resolver)


def nameserver(entry: str) -> dns.nameserver.Nameserver:
    host, port = entry.strip(), 53
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        if rest.startswith(":"):
            port = int(rest[1:])
    elif host.count(":") == 1:
        host, _, text = host.partition(":")
        port = int(text)
    return dns.nameserver.Do53Nameserver(host, port)


def async_resolver(servers: list[str], lifetime: float = 10.0) -> dns.asyncresolver.Resolver:
    return _make(dns.asyncresolver.Resolver, servers, lifetime)


def sync_resolver(servers: list[str], lifetime: float = 10.0) -> dns.resolver.Resolver:
    """A blocking resolver (for libraries that call the DNS from a thread, like pyspf)."""
    return _make(dns.resolver.Resolver, servers, lifetime)


def _make(cls: type[R], servers: list[str], lifetime: float) -> R:
    try:
        made = cls(configure=not servers)
    except dns.resolver.NoResolverConfiguration:
        made = cls(configure=False)
    if servers:
        made.nameservers = [nameserver(s) for s in servers]
    elif not made.nameservers:
        made.nameservers = ["127.0.0.1"]
    made.lifetime = lifetime
    return made
