"""``inline:{ key=value, { key = text with spaces } }`` (≈ dict_inline.c).

A fixed-key table whose content is in the spec itself.  As in Postfix there
is no duplicate check: a later ``key=value`` replaces an earlier one.  A
syntax error or an empty table makes the whole table a surrogate.
"""

from __future__ import annotations

from postbus.maps.table import Table, TableConfigError, fold_key, register_type
from postbus.maps.types._syntax import balpar, extpar, split_qnameval, split_tokens


def parse_inline(name: str) -> dict[str, str]:
    """Parse the ``{...}`` part of an inline: spec into folded key -> value."""
    usage = 'need "inline:{name=value...}"'
    if balpar(name) == 0 or balpar(name) != len(name):
        raise TableConfigError(f'bad syntax: "inline:{name}"; {usage}')
    table: dict[str, str] = {}
    for tok in split_tokens(name[1:-1]):
        try:
            key, value = split_qnameval(extpar(tok) if tok.startswith("{") else tok)
        except TableConfigError as exc:
            raise TableConfigError(f'{exc}: "inline:{name}"; {usage}') from None
        table[fold_key(key)] = value
    if not table:
        raise TableConfigError(f'empty table: "inline:{name}"; {usage}')
    return table


class InlineTable(Table):
    """Key/value pairs written in the spec."""

    fixed = True

    def __init__(self, spec: str, name: str) -> None:
        super().__init__(spec)
        self.table = parse_inline(name)

    async def lookup(self, key: str) -> str | None:
        return self.table.get(fold_key(key))


register_type("inline", InlineTable)
