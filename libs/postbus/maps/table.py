"""One lookup interface chosen by ``type:name`` (≈ dict.h, dict_open.c, dict_surrogate.c).

A lookup has three results, exactly as in Postfix:

* a string: found;
* ``None``: not found;
* :class:`TableRetry`: a temporary error (file missing, bad configuration,
  backend down).  Callers turn it into ``451 4.3.0``; it must never be
  mistaken for "not found", or a broken table would silently relax policy.

A malformed spec or an unknown type does not crash the process: like
Postfix's ``dict_surrogate()`` we return a table that fails every lookup
with the configuration error text.  ``open_table(spec, strict=True)``
raises :class:`TableConfigError` instead, for configuration checks.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable

log = logging.getLogger("postbus.maps")

__all__ = [
    "SurrogateTable",
    "Table",
    "TableConfigError",
    "TableFactory",
    "TableRetry",
    "fold_key",
    "open_table",
    "register_type",
    "registered_types",
    "split_spec",
]


class TableRetry(Exception):
    """Temporary lookup failure (≈ DICT_ERR_RETRY): reply 4xx, never "not found"."""


class TableConfigError(Exception):
    """A table spec or table content that cannot be used (raised only in strict mode)."""


def fold_key(key: str) -> str:
    """Case-fold a key of a fixed-key table (≈ casefold() with smtputf8_enable=yes).

    ASCII keys are lowercased; non-ASCII keys get Unicode full case folding,
    as Postfix does through ICU when SMTPUTF8 support is on (the default
    since compatibility_level 1).
    """
    return key.lower() if key.isascii() else key.casefold()


class Table(abc.ABC):
    """A lookup table.

    ``fixed`` is True for key/value tables (Postfix's DICT_FLAG_FIXED): they
    fold keys to lower case, and they are the only ones asked for partial
    keys such as ``user@domain`` after ``user+ext@domain`` failed, or
    ``@domain`` (maps.c skips pattern tables for those).  Pattern tables
    (regexp, pcre, cidr) see only full keys, in their original case.
    """

    spec: str
    fixed: bool = True

    def __init__(self, spec: str) -> None:
        self.spec = spec

    @abc.abstractmethod
    async def lookup(self, key: str) -> str | None:
        """Return the value for ``key``, None when absent; raise TableRetry on temporary error."""

    def check(self) -> None:  # noqa: B027  (optional hook, not abstract)
        """Validate eagerly (load files, parse); raise TableConfigError. Default: nothing to do."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"


class SurrogateTable(Table):
    """A table that fails every lookup with a fixed reason (≈ dict_surrogate.c)."""

    fixed = True

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(spec)
        self.reason = reason
        log.warning("%s is unavailable. %s", spec, reason)

    async def lookup(self, key: str) -> str | None:
        log.warning("%s lookup error for \"%s\": %s", self.spec, key, self.reason)
        raise TableRetry(f"{self.spec}: {self.reason}")

    def check(self) -> None:
        raise TableConfigError(f"{self.spec}: {self.reason}")


#: A factory receives the whole spec ("type:name") and the name part.
TableFactory = Callable[[str, str], Table]

_REGISTRY: dict[str, TableFactory] = {}
_builtins_loaded = False


def register_type(name: str, factory: TableFactory) -> None:
    """Register a table type (≈ dict_open_register()); a later registration replaces the earlier."""
    _REGISTRY[name] = factory


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        import postbus.maps.types  # noqa: F401  (registers the built-in types)


def registered_types() -> list[str]:
    """Names of the known table types, sorted (≈ ``postconf -m``)."""
    _load_builtins()
    return sorted(_REGISTRY)


def split_spec(spec: str) -> tuple[str, str]:
    """Split ``type:name`` at the first colon; raise TableConfigError when malformed."""
    typ, sep, name = spec.partition(":")
    if not sep or not typ:
        raise TableConfigError(f'need "type:name" instead of "{spec}"')
    if not typ.replace("_", "").replace("-", "").isalnum():
        raise TableConfigError(f'bad table type in "{spec}"')
    return typ, name


def open_table(spec: str, *, strict: bool = False) -> Table:
    """Open a table by its ``type:name`` spec, exactly as written in main.cf.

    Without ``strict`` any problem gives a :class:`SurrogateTable` whose
    lookups raise TableRetry.  With ``strict`` problems raise
    TableConfigError, and the table is validated eagerly (files read).
    """
    _load_builtins()
    try:
        typ, name = split_spec(spec.strip())
        factory = _REGISTRY.get(typ)
        if factory is None:
            raise TableConfigError(f'unsupported dictionary type: {typ}')
        table = factory(spec.strip(), name)
        if strict:
            table.check()
    except TableConfigError as exc:
        if strict:
            raise
        return SurrogateTable(spec, str(exc))
    return table
