"""One address through a canonical or virtual alias table (≈ mail_addr_map.c,
mail_addr_crunch.c).

The table is searched in Postfix's virtual/canonical order
(:meth:`postbus.resolve.Resolver.find`). The result may list several
addresses; each is parsed as an RFC 822 address, rewritten to canonical
form in the local context (``user`` becomes ``user@$myorigin``), and gets
the address extension back that had to be stripped to find the entry,
when propagate_unmatched_extensions names the table's class. A result
``@otherdomain`` keeps the local part: ``user@domain`` becomes
``user@otherdomain``.
"""

from __future__ import annotations

import logging

from postbus import tok822_tree
from postbus.maps.addr_find import Query
from postbus.maps.maps import Maps
from postbus.maps.table import TableRetry
from postbus.resolve import Resolver
from postbus.rewrite import RewriteRules
from postbus.tok822 import quote_822_local, unquote_822_local

log = logging.getLogger("postbus.cleanup")


def crunch(text: str, extension: str | None, rules: RewriteRules,
           external: bool = False) -> list[str]:
    """A table result as a list of canonical addresses (≈ mail_addr_crunch_opt()).

    ``text`` is in external form; the result is internal, or external with
    ``external``. ``extension`` (``+foo``) goes in front of each ``@``."""
    if not text or text == "<>":
        text = '""'  # the null address
    out: list[str] = []
    for addr in tok822_tree.addresses(tok822_tree.parse(text)):
        internal = unquote_822_local(rules.external(tok822_tree.externalize(addr.head)))
        if extension:
            at = internal.rfind("@")
            internal = (internal[:at] + extension + internal[at:] if at >= 0
                        else internal + extension)
        out.append(quote_822_local(internal) if external else internal)
    return out


async def addr_map(
    resolver: Resolver, maps: Maps, address: str, *, propagate: bool, rules: RewriteRules,
    query: Query = "external", external: bool = False,
) -> list[str] | None:
    """The addresses an internal-form ``address`` maps to, or None when it is not listed
    (≈ mail_addr_map_opt()). A table failure, or a result without any address,
    raises TableRetry."""
    found = await resolver.find(maps, address, query=query)
    if found is None:
        return None
    value = found.value
    if value.startswith("@"):  # prepend the user to @otherdomain
        at = address.rfind("@")
        local = address[:at] if at >= 0 else address
        if found.extension:
            local = local[: len(local) - len(found.extension)]
        value = quote_822_local(local + value)
    result = crunch(value, found.extension if propagate else None, rules, external)
    if not result:
        log.warning('%s lookup of %s returns non-address result "%s"', maps.title, address, value)
        raise TableRetry(f"{maps.title}: non-address result for {address}")
    return result
