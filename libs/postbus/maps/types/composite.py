"""Tables made of tables: ``unionmap:{...}`` and ``pipemap:{...}`` (≈ dict_union.c, dict_pipe.c).

* ``unionmap:{type:name, ...}`` asks every table and joins all results
  with commas; not found only when no table has the key.
* ``pipemap:{type:name, ...}`` feeds each result to the next table as its
  key; not found as soon as one stage has nothing.

A temporary error in any component is the result of the whole lookup.  The
first component decides whether the composite is a fixed-key or a pattern
table, as in Postfix.
"""

from __future__ import annotations

from postbus.maps.table import Table, TableConfigError, open_table, register_type
from postbus.maps.types._syntax import balpar, split_tokens


def parse_components(type_name: str, name: str) -> list[str]:
    """Split ``{type:name, ...}`` into component specs, or raise TableConfigError."""
    parts = split_tokens(name[1:-1]) if balpar(name) == len(name) and name else []
    if not parts or any(":" not in part for part in parts):
        raise TableConfigError(
            f'bad syntax: "{type_name}:{name}"; need "{type_name}:{{type:name...}}"'
        )
    return parts


class _CompositeTable(Table):
    type_name = ""

    def __init__(self, spec: str, name: str) -> None:
        super().__init__(spec)
        self.tables = [open_table(part) for part in parse_components(self.type_name, name)]
        self.fixed = self.tables[0].fixed

    def check(self) -> None:
        for table in self.tables:
            table.check()


class UnionTable(_CompositeTable):
    """All components' results, comma-separated."""

    type_name = "unionmap"

    async def lookup(self, key: str) -> str | None:
        found = [r for t in self.tables if (r := await t.lookup(key)) is not None]
        return ",".join(found) or None  # like Postfix: only an empty join is "not found"


class PipeTable(_CompositeTable):
    """Each component's result is the next component's key."""

    type_name = "pipemap"

    async def lookup(self, key: str) -> str | None:
        result = key
        for table in self.tables:
            found = await table.lookup(result)
            if found is None:
                return None
            result = found
        return result


register_type("unionmap", UnionTable)
register_type("pipemap", PipeTable)
