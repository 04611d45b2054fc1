"""Tables without a file: ``static:``, ``fail:``, ``environ:`` (≈ dict_static.c, dict_fail.c)."""

from __future__ import annotations

import logging
import os

from postbus.maps.table import Table, TableConfigError, TableRetry, register_type
from postbus.maps.types._syntax import extpar

log = logging.getLogger("postbus.maps")


class StaticTable(Table):
    """Every key finds the same value: ``static:value`` or ``static:{ text with spaces }``.

    It is a fixed-key table, so it also answers partial keys (``@domain``...).
    """

    fixed = True

    def __init__(self, spec: str, name: str) -> None:
        super().__init__(spec)
        if name.startswith("{"):
            try:
                name = extpar(name)
            except TableConfigError as exc:
                raise TableConfigError(f"bad static:name syntax: {exc}") from None
        self.value = name

    async def lookup(self, key: str) -> str | None:
        return self.value


class FailTable(Table):
    """Every lookup fails with a temporary error; ``fail:name`` is for testing error paths.

    Like Postfix it is a pattern table, so only full keys are asked.
    """

    fixed = False

    async def lookup(self, key: str) -> str | None:
        raise TableRetry(f"{self.spec}: table lookup failed by design")


class EnvironTable(Table):
    """Look up the process environment: ``environ:`` (key is the variable name, not folded)."""

    fixed = True

    async def lookup(self, key: str) -> str | None:
        return os.environ.get(key)


class NisTable(Table):
    """``nis:map``: Postbus has no NIS client, so it behaves as Postfix does on a
    host without a NIS domain: one warning, then every key is not found.
    (Postfix's default alias_maps is ``hash:/etc/aliases, nis:mail.aliases``.)"""

    fixed = True
    warned = False

    async def lookup(self, key: str) -> str | None:
        if not NisTable.warned:
            NisTable.warned = True
            log.warning("warning: dict_nis_init: NIS domain name not set - NIS lookups disabled")
        return None


register_type("static", StaticTable)
register_type("nis", lambda spec, name: NisTable(spec))
register_type("fail", lambda spec, name: FailTable(spec))
register_type("environ", lambda spec, name: EnvironTable(spec))
