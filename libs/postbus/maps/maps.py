"""An ordered list of tables, as written in a parameter value (≈ maps.c).

``open_maps("hash:/etc/postfix/a, regexp:/etc/postfix/b")`` opens each
table; :meth:`Maps.find` asks them in order and returns the first result.
A temporary error (TableRetry) stops the search and propagates: Postfix
never falls through to the next table when one cannot answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from postbus.maps.table import Table, TableRetry, log, open_table
from postbus.maps.types._syntax import split_tokens

__all__ = ["Maps", "open_maps", "table_specs"]


class Maps:
    """Tables searched in order; ``title`` names them in warnings (e.g. "virtual_alias_maps")."""

    def __init__(self, tables: Sequence[Table] = (), title: str = "") -> None:
        self.tables = list(tables)
        self.title = title

    def __len__(self) -> int:
        return len(self.tables)

    def __iter__(self) -> Iterator[Table]:
        return iter(self.tables)

    def __repr__(self) -> str:
        return f"<Maps {self.title or ''} {', '.join(t.spec for t in self.tables)}>"

    async def find(self, key: str, *, partial: bool = False) -> str | None:
        """The first table's value for ``key`` (≈ maps_find()).

        ``partial`` marks a derived key (``user@domain`` after the extension
        was stripped, ``@domain``, a parent domain...): pattern tables
        (regexp, pcre, cidr) are not asked for those, exactly as Postfix
        skips tables without DICT_FLAG_FIXED.  An empty key finds nothing.
        An empty result is a configuration error (Postfix: "should return
        NO RESULT in case of NOT FOUND") and raises TableRetry.
        """
        if not key:
            return None
        for table in self.tables:
            if partial and not table.fixed:
                continue
            value = await table.lookup(key)
            if value is None:
                continue
            if value == "":
                log.warning("%s lookup of %s returns an empty string result",
                            self.title or table.spec, key)
                log.warning("%s should return NO RESULT in case of NOT FOUND",
                            self.title or table.spec)
                raise TableRetry(f"{table.spec}: empty lookup result for {key}")
            return value
        return None


def table_specs(value: str) -> list[str]:
    """The ``type:name`` items of a parameter value (commas or whitespace; braces kept whole)."""
    return split_tokens(value)


def open_maps(value: str, title: str = "", *, strict: bool = False) -> Maps:
    """Open every ``type:name`` in a parameter value (separated by commas or whitespace)."""
    return Maps([open_table(spec, strict=strict) for spec in table_specs(value)], title)
