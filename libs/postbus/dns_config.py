"""Name servers from ``postbus_dns_servers``, for dnspython resolvers.

``1.2.3.4``, ``1.2.3.4:5353``, ``[::1]:5353`` or ``::1``; an empty list means
the system's resolver, and without /etc/resolv.conf the local name server,
as the C library's resolver (and so Postfix) does. (ingress-smtpd's
dns_checks and delivery-smtp's addr.py each still parse the list their own way.)
"""

from __future__ import annotations

import dns.nameserver
import dns.resolver

__all__ = ["nameserver", "sync_resolver"]


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


def sync_resolver(servers: list[str], lifetime: float = 10.0) -> dns.resolver.Resolver:
    """A blocking resolver (for libraries that call the DNS from a thread, like pyspf)."""
    if servers:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [nameserver(s) for s in servers]
    else:
        try:
            resolver = dns.resolver.Resolver()
        except dns.resolver.NoResolverConfiguration:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = ["127.0.0.1"]
    resolver.lifetime = lifetime
    return resolver
