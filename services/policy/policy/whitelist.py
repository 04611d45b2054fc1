"""postgrey's whitelists as main.cf lists (≈ read_clients_whitelists(),
read_recipients_whitelists()), with Postfix tables besides.

Clients: ``/regexp/`` (client name, case-insensitive), an address or a
network (``192.0.2.0/24``, ``2001:db8::/32``), a name (matches the client
name and its subdomains, as postgrey's ``(?:^|\\.)name$``), or ``type:table``
(the client address, then the client name, is looked up; any answer
matches). Recipients: ``/regexp/``, ``user@domain`` and ``user@``
(``user+extension`` included), a domain (and its subdomains), or
``type:table`` (the recipient, then its domain).
"""

from __future__ import annotations

import ipaddress
import re

from postbus.maps.maps import Maps, open_maps

__all__ = ["ClientList", "RecipientList"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _table(word: str) -> bool:
    return ":" in word and not word.startswith("/") and word.partition(":")[0].isalnum()


class ClientList:
    def __init__(self, words: list[str], param: str) -> None:
        self.names: list[re.Pattern[str]] = []
        self.networks: list[Network] = []
        self.tables: list[Maps] = []
        for word in words:
            if len(word) > 2 and word.startswith("/") and word.endswith("/"):
                self.names.append(re.compile(word[1:-1], re.IGNORECASE))
                continue
            try:
                self.networks.append(ipaddress.ip_network(word.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if _table(word):
                self.tables.append(open_maps(word, param))
            else:
                self.names.append(re.compile(r"(?:^|\.)" + re.escape(word) + "$", re.IGNORECASE))

    async def matches(self, address: str, name: str) -> bool:
        if any(p.search(name) for p in self.names):
            return True
        if self.networks:
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                ip = None
            if ip is not None and any(ip.version == n.version and ip in n
                                      for n in self.networks):
                return True
        for table in self.tables:
            if await table.find(address) is not None or (
                    name and await table.find(name.lower()) is not None):
                return True
        return False


class RecipientList:
    def __init__(self, words: list[str], param: str) -> None:
        self.patterns: list[re.Pattern[str]] = []
        self.tables: list[Maps] = []
        for word in words:
            if len(word) > 2 and word.startswith("/") and word.endswith("/"):
                self.patterns.append(re.compile(word[1:-1], re.IGNORECASE))
            elif "@" in word:
                user, _, domain = word.partition("@")
                tail = re.escape(domain) + "$" if domain else ""
                self.patterns.append(re.compile(
                    "^" + re.escape(user) + r"(?:\+[^@]+)?@" + tail, re.IGNORECASE))
            elif _table(word):
                self.tables.append(open_maps(word, param))
            else:
                self.patterns.append(re.compile(r"(?:@|\.)" + re.escape(word) + "$",
                                                re.IGNORECASE))

    async def matches(self, recipient: str) -> bool:
        if any(p.search(recipient) for p in self.patterns):
            return True
        for table in self.tables:
            if await table.find(recipient.lower()) is not None or await table.find(
                    recipient.rpartition("@")[2].lower()) is not None:
                return True
        return False
