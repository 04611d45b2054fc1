"""Postfix's address lookup orders, as a written contract (≈ mail_addr_find.c, smtpd_check.c,
trivial-rewrite/transport.c, strip_addr.c, split_addr.c).

Every function is a pure coroutine over a :class:`~postbus.maps.maps.Maps`
and explicit settings, so any service can call it.  Each query key is tried
against *every* table of the Maps before the next key is tried (maps_find).
"Partial" keys below skip pattern tables (regexp, pcre, cidr): those only
see the full address.  A TableRetry from any table stops the search and
propagates; the caller answers 451 4.3.0 / defers.

The address is given in internal (unquoted) form; ``query`` says in which
form the address keys (not ``@domain`` nor domain keys) are asked
(≈ MA_FORM_*): "internal" as given, "external" quoted (``"a b"@domain``),
"external_first" quoted, then as given when that differs (what
mail_addr_find() does for relocated_maps and smtpd's recipient tables).

Virtual and canonical (virtual(5), canonical(5)) — :func:`find_virtual`::

    user+ext@domain      full
    user@domain          partial, only when recipient_delimiter splits off +ext
    user+ext             partial, only when is_local(domain)
    user                 partial, only when is_local(domain) and +ext split off
    @domain              partial
  The extension is returned when a stripped key matched, for
  :func:`propagate_extension`.

Access maps (access(5)) for an email address — :func:`find_access`::

    user+ext@sub.domain.tld   full
    user@sub.domain.tld       partial
    sub.domain.tld            partial
    domain.tld, tld           partial; ".domain.tld", ".tld" instead unless
                              parent_domain_matches_subdomains lists smtpd_access_maps
    user+ext@                 partial
    user@                     partial
  The null sender is looked up as ``<>`` (smtpd_null_access_lookup_key).

Access maps for a client or helo host — :func:`find_domain_access`,
:func:`find_addr_access`, :func:`find_client_access`::

    host.sub.domain.tld (full), then parents as above (partial); no parents
    for a name that is a numeric address; then the client address (full) and
    its prefixes (partial): 1.2.3.4, 1.2.3, 1.2, 1 or 2001:db8::1,
    2001:db8:, 2001:db8, 2001.

Transport maps (transport(5)) — :func:`find_transport`::

    user+ext@domain      full
    user@domain          partial
    domain               partial
    .domain parents      partial (or domain parents if parent_domain_matches_subdomains
                         lists transport_maps)
    *                    full
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

from postbus.maps.maps import Maps
from postbus.tok822 import quote_822_local

Query = Literal["internal", "external", "external_first"]

__all__ = [
    "Found",
    "Route",
    "Strategy",
    "apply_transport_entry",
    "find_access",
    "find_addr_access",
    "find_canonical",
    "find_client_access",
    "find_domain_access",
    "find_transport",
    "find_virtual",
    "mail_addr_find",
    "propagate_extension",
    "resolve_transport",
    "split_extension",
    "strip_extension",
]


class Strategy(enum.Flag):
    """Which derived keys to try, in this order (≈ MA_FIND_*)."""

    FULL = enum.auto()
    NOEXT = enum.auto()
    LOCALPART_IF_LOCAL = enum.auto()
    LOCALPART_AT_IF_LOCAL = enum.auto()
    AT_DOMAIN = enum.auto()
    DOMAIN = enum.auto()
    PDMS = enum.auto()  # parent domain matches subdomains: "domain.tld"
    PDDMDS = enum.auto()  # parent dot-domain matches dot-subdomains: ".domain.tld"
    LOCALPART_AT = enum.auto()
    DEFAULT = FULL | NOEXT | LOCALPART_IF_LOCAL | AT_DOMAIN


@dataclass(frozen=True)
class Found:
    """A lookup result and the extension (with its delimiter) stripped to find it, if any."""

    value: str
    extension: str | None = None


@dataclass(frozen=True)
class ExtensionRules:
    """Settings of split_addr(): which local parts never lose an "extension"."""

    owner_request_special: bool = True
    double_bounce_sender: str = "double-bounce"


_DEFAULT_RULES = ExtensionRules()


def split_extension(
    localpart: str, delimiters: str, rules: ExtensionRules = _DEFAULT_RULES
) -> tuple[str, str | None]:
    """Split ``user+ext`` into ``("user", "+ext")`` (≈ split_addr_internal()).

    ``delimiters`` is recipient_delimiter: any of its characters splits at
    the first occurrence (Postfix 2.11+).  Never split postmaster,
    MAILER-DAEMON, the double-bounce sender, nor (when ``-`` is a delimiter
    and owner_request_special) owner-foo and foo-request; never leave an
    empty local part.
    """
    low = localpart.lower()
    if not delimiters or low in ("postmaster", "mailer-daemon"):
        return localpart, None
    if low == rules.double_bounce_sender.lower():
        return localpart, None
    if "-" in delimiters and rules.owner_request_special and (
        low.startswith("owner-") or (len(low) > 8 and low.endswith("-request"))
    ):
        return localpart, None
    for i, ch in enumerate(localpart):
        if ch in delimiters:
            return (localpart, None) if i == 0 else (localpart[:i], localpart[i:])
    return localpart, None


def strip_extension(
    address: str, delimiters: str, rules: ExtensionRules = _DEFAULT_RULES
) -> tuple[str, str] | None:
    """``user+ext@domain`` -> ``("user@domain", "+ext")``, None when nothing to strip."""
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    base, ext = split_extension(local, delimiters, rules)
    if ext is None:
        return None
    return base + at + domain, ext


def propagate_extension(address: str, extension: str | None) -> str:
    """Re-attach an unmatched extension to a result address (≈ mail_addr_crunch()).

    ``joe@example.org`` + ``+foo`` -> ``joe+foo@example.org``; an address
    without ``@`` gets the extension appended.  Callers apply this per
    result address when propagate_unmatched_extensions names the map.
    """
    if not extension:
        return address
    local, at, domain = address.rpartition("@")
    return local + extension + at + domain if at else address + extension


async def _find_addr(
    maps: Maps, key: str, query: Query, *, partial: bool = False, with_domain: bool = True
) -> str | None:
    """One address key in the query form (≈ find_addr())."""
    if query == "internal":
        return await maps.find(key, partial=partial)
    quoted = quote_822_local(key, bare=not with_domain)
    value = await maps.find(quoted, partial=partial)
    if value is None and query == "external_first" and quoted != key:
        value = await maps.find(key, partial=partial)
    return value


async def _find_local(
    maps: Maps, full: str, bare: str | None, saved_ext: str | None, with_at: bool,
    query: Query,
) -> Found | None:
    """``user+ext`` then ``user`` (or with a trailing ``@``) (≈ find_local())."""
    tail = "@" if with_at else ""
    value = await _find_addr(maps, full[: full.rfind("@")] + tail, query, partial=True,
                             with_domain=with_at)
    if value is not None:
        return Found(value)
    if bare is not None:
        value = await _find_addr(maps, bare[: bare.rfind("@")] + tail, query, partial=True,
                                 with_domain=with_at)
        if value is not None:
            return Found(value, saved_ext)
    return None


async def mail_addr_find(
    maps: Maps,
    address: str,
    strategy: Strategy = Strategy.DEFAULT,
    *,
    recipient_delimiter: str = "",
    is_local: Callable[[str], bool] | None = None,
    rules: ExtensionRules = _DEFAULT_RULES,
    query: Query = "internal",
) -> Found | None:
    """Search ``maps`` for ``address`` and keys derived from it, in Postfix's order.

    ≈ mail_addr_find_opt(); the steps run in the order of :class:`Strategy`.
    ``is_local(domain)`` says whether the domain is myorigin, mydestination
    or one of our interface addresses (for the LOCALPART_* steps).
    """
    bare: str | None = None
    saved_ext: str | None = None
    if recipient_delimiter and Strategy.NOEXT in strategy:
        stripped = strip_extension(address, recipient_delimiter, rules)
        if stripped is not None:
            bare, saved_ext = stripped
    found: Found | None = None
    if Strategy.FULL in strategy and (
        value := await _find_addr(maps, address, query)
    ) is not None:
        return Found(value)
    if bare is not None and (
        value := await _find_addr(maps, bare, query, partial=True)
    ) is not None:
        return Found(value, saved_ext)
    at = address.rfind("@")
    if at < 0:
        return None
    domain = address[at + 1 :]
    if strategy & (Strategy.LOCALPART_IF_LOCAL | Strategy.LOCALPART_AT_IF_LOCAL) and (
        is_local is not None and is_local(domain)
    ):
        if Strategy.LOCALPART_IF_LOCAL in strategy:
            found = await _find_local(maps, address, bare, saved_ext, False, query)
        if found is None and Strategy.LOCALPART_AT_IF_LOCAL in strategy:
            found = await _find_local(maps, address, bare, saved_ext, True, query)
        if found is not None:
            return found
    if Strategy.AT_DOMAIN in strategy and (
        value := await maps.find(address[at:], partial=True)
    ) is not None:
        return Found(value)
    if Strategy.DOMAIN in strategy:
        name = domain
        while name:
            if (value := await maps.find(name, partial=True)) is not None:
                return Found(value)
            nxt = name.find(".", 1)
            if not strategy & (Strategy.PDMS | Strategy.PDDMDS) or nxt < 0:
                break
            name = name[nxt:] if Strategy.PDDMDS in strategy else name[nxt + 1 :]
    if Strategy.LOCALPART_AT in strategy:
        return await _find_local(maps, address, bare, saved_ext, True, query)
    return None


async def find_virtual(
    maps: Maps,
    address: str,
    *,
    recipient_delimiter: str = "",
    is_local: Callable[[str], bool] | None = None,
    rules: ExtensionRules = _DEFAULT_RULES,
) -> Found | None:
    """virtual_alias_maps / canonical_maps order (virtual(5)); see the module docstring."""
    return await mail_addr_find(
        maps, address, Strategy.DEFAULT,
        recipient_delimiter=recipient_delimiter, is_local=is_local, rules=rules,
    )


find_canonical = find_virtual


async def find_access(
    maps: Maps,
    address: str,
    *,
    recipient_delimiter: str = "",
    parent_matches_subdomains: bool = False,
    null_key: str = "<>",
    rules: ExtensionRules = _DEFAULT_RULES,
) -> Found | None:
    """check_sender_access / check_recipient_access order (access(5)).

    ``parent_matches_subdomains``: parent_domain_matches_subdomains lists
    smtpd_access_maps (then ``domain.tld`` matches subdomains; otherwise
    only ``.domain.tld`` does).  The null address looks up ``null_key``.
    An address without ``@domain`` finds nothing (smtpd qualifies first).
    """
    if address == "":
        value = await maps.find(null_key)
        return Found(value) if value is not None else None
    if "@" not in address:
        return None
    strategy = Strategy.FULL | Strategy.NOEXT | Strategy.DOMAIN | Strategy.LOCALPART_AT
    strategy |= Strategy.PDMS if parent_matches_subdomains else Strategy.PDDMDS
    return await mail_addr_find(
        maps, address, strategy, recipient_delimiter=recipient_delimiter, rules=rules
    )


def _is_hostaddr(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return "%" not in name


async def find_domain_access(
    maps: Maps, domain: str, *, parent_matches_subdomains: bool = False
) -> str | None:
    """A host or domain name, then its parents (≈ check_domain_access()).

    The name itself is a full key, parents are partial.  A name that is a
    numeric address gets no parent lookups.
    """
    name, partial = domain, False
    while name:
        if (value := await maps.find(name, partial=partial)) is not None:
            return value
        if not partial and _is_hostaddr(domain):
            break
        nxt = name.find(".", 1)
        if nxt < 0:
            break
        name = name[nxt + 1 :] if parent_matches_subdomains else name[nxt:]
        partial = True
    return None


async def find_addr_access(maps: Maps, address: str) -> str | None:
    """An IP address, then its shorter prefixes (≈ check_addr_access()).

    ``1.2.3.4``, ``1.2.3``, ``1.2``, ``1``; for IPv6 the text is cut at
    each ``:`` from the right (``2001:db8::1``, ``2001:db8:``, ``2001:db8``,
    ``2001``).  The first key is full, the rest partial.
    """
    delim = ":" if ":" in address else "."
    key, partial = address, False
    while True:
        if (value := await maps.find(key, partial=partial)) is not None:
            return value
        cut = key.rfind(delim)
        if cut < 0:
            return None
        key, partial = key[:cut], True


async def find_client_access(
    maps: Maps, hostname: str, address: str, *, parent_matches_subdomains: bool = False
) -> str | None:
    """check_client_access: the client name and parents, then its address and prefixes."""
    value = await find_domain_access(
        maps, hostname, parent_matches_subdomains=parent_matches_subdomains
    )
    return value if value is not None else await find_addr_access(maps, address)


class Route(NamedTuple):
    """A transport:nexthop pair."""

    transport: str
    nexthop: str


def apply_transport_entry(value: str, rcpt_domain: str, current: Route) -> Route:
    """Apply a transport(5) result to the default route (≈ update_entry()).

    ``transport:nexthop`` splits at the first colon, so ``smtp:[host]:port``
    and ``smtp:[2001:db8::1]:25`` keep their nexthop whole.  An empty
    transport keeps the current transport (and the current nexthop unless
    one is given: ``:`` alone changes nothing).  A new transport without a
    nexthop resets the nexthop to the recipient domain, or for ``error``
    and ``retry`` to "Address is undeliverable".
    """
    transport, _, nexthop = value.partition(":")
    if not transport:
        return Route(current.transport, nexthop or current.nexthop)
    if nexthop:
        return Route(transport, nexthop)
    if transport in ("error", "retry"):
        return Route(transport, "Address is undeliverable")
    return Route(transport, rcpt_domain)


async def find_transport(
    maps: Maps,
    address: str,
    *,
    recipient_delimiter: str = "",
    parent_matches_subdomains: bool = False,
    rules: ExtensionRules = _DEFAULT_RULES,
) -> str | None:
    """The raw transport_maps result for a recipient (transport(5) order, then ``*``)."""
    if not maps or not address or address.endswith("@") or "@" not in address:
        return None  # no table: nothing to search (every resolve passes here)
    strategy = Strategy.FULL | Strategy.NOEXT | Strategy.DOMAIN
    strategy |= Strategy.PDMS if parent_matches_subdomains else Strategy.PDDMDS
    found = await mail_addr_find(
        maps, address, strategy, recipient_delimiter=recipient_delimiter, rules=rules
    )
    if found is not None:
        return found.value
    return await maps.find("*")


async def resolve_transport(
    maps: Maps,
    address: str,
    rcpt_domain: str,
    default: Route,
    *,
    recipient_delimiter: str = "",
    parent_matches_subdomains: bool = False,
    rules: ExtensionRules = _DEFAULT_RULES,
) -> Route | None:
    """transport_lookup(): the route for ``address``, or None when no entry applies."""
    value = await find_transport(
        maps, address, recipient_delimiter=recipient_delimiter,
        parent_matches_subdomains=parent_matches_subdomains, rules=rules,
    )
    return None if value is None else apply_transport_entry(value, rcpt_domain, default)
