"""Virtual alias expansion (≈ cleanup_map1n.c).

virtual(5): each recipient is looked up in virtual_alias_maps (in the
virtual order, :func:`postbus.maps.addr_find.find_virtual`), each result
address is looked up again, and so on, breadth first, until no address
changes. An address that expands into itself (``a@x -> a@x, b@y``) keeps
itself and is not expanded again. Three limits stop runaway tables:
virtual_alias_expansion_limit (addresses in one expansion),
virtual_alias_recursion_limit (nesting) and
virtual_alias_address_length_limit (the length of a result). Hitting one,
or a table that cannot answer, keeps the message out of the queue with
``4.6.0 Alias expansion error``: nothing half-expanded is queued.
"""

from __future__ import annotations

from postbus.cleanup.addr_map import addr_map
from postbus.cleanup.canonical import extension_classes
from postbus.cleanup.status import Stat, Status
from postbus.config.loader import Config
from postbus.maps.maps import open_maps
from postbus.maps.table import TableRetry
from postbus.resolve import Resolver
from postbus.rewrite import RewriteRules

EXPANSION_ERROR = "4.6.0 Alias expansion error"


class VirtualAliases:
    def __init__(self, cfg: Config, resolver: Resolver) -> None:
        self.resolver = resolver
        self.maps = open_maps(cfg.get("virtual_alias_maps"), "virtual_alias_maps")
        self.rules = RewriteRules.local(cfg)
        self.propagate = "virtual" in extension_classes(cfg)
        self.expansion_limit = cfg.int("virtual_alias_expansion_limit")
        self.recursion_limit = cfg.int("virtual_alias_recursion_limit")
        self.length_limit = cfg.int("virtual_alias_address_length_limit")

    def __bool__(self) -> bool:
        return bool(self.maps)

    async def expand(self, status: Status, address: str) -> list[str]:
        """The recipients ``address`` stands for (≈ cleanup_map1n_internal()); on
        an error, ``[address]`` and the error noted in ``status``."""
        title = self.maps.title
        argv = [address]
        seen: set[str] = set()  # addresses that expanded into themselves (folded)

        def failed(stat: Stat, warning: str) -> list[str]:
            status.fail(stat, warning, EXPANSION_ERROR)
            return [address]

        arg = 0
        while arg < len(argv):
            if len(argv) > self.expansion_limit:
                return failed(Stat.DEFER, f"unreasonable {title} map expansion size for "
                              f"{address} -- message not accepted, try again later")
            count = 0
            while argv[arg].casefold() not in seen:
                if count >= self.recursion_limit:
                    return failed(Stat.DEFER, f"unreasonable {title} map nesting for "
                                  f"{address} -- message not accepted, try again later")
                count += 1
                try:
                    lookup = await addr_map(self.resolver, self.maps, argv[arg],
                                            propagate=self.propagate, rules=self.rules)
                except TableRetry:
                    return failed(Stat.WRITE, f"{title} map lookup problem for {address} -- "
                                  "message not accepted, try again later")
                if lookup is None:
                    break
                lhs = argv[arg]
                for i, result in enumerate(lookup):
                    if len(result) > self.length_limit:
                        return failed(Stat.DEFER, f"unreasonable {title} result "
                                      f"{result[:300]}... -- message not accepted, "
                                      "try again later")
                    if i == 0:
                        argv[arg] = result
                    else:
                        argv.append(result)
                    if lhs.casefold() == result.casefold():  # expands into itself: once
                        seen.add(lhs.casefold())
            arg += 1
        return argv
