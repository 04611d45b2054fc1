"""smtpd_sasl_mechanism_filter (≈ global/sasl_mech_filter.c over a string_list).

Applied after the backend's own choice (smtpd_sasl_security_options), to the
names the server would announce: each name is matched against the list as
Postfix's string_list_match() does, first match decides.  A pattern is a
name (compared case-insensitively), a ``type:table`` (the casefolded name is
the lookup key; any value is a match), or a ``/file/name`` whose lines are
patterns in turn; ``!`` in front negates (``!!`` undoes it).  The default
``!external, static:rest`` drops EXTERNAL and keeps the rest.

Postfix stops the smtpd process when the filter leaves nothing or a table
lookup fails; a Postbus process serves many sessions, so it logs the same
``fatal:`` line and offers no AUTH in that session instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.maps.maps import Maps, open_maps
from postbus.maps.table import TableRetry, fold_key

log = logging.getLogger(__name__)

PARAM = "smtpd_sasl_mechanism_filter"


@dataclass(frozen=True)
class Pattern:
    keep: bool  # False under an odd number of "!"
    word: str  # casefolded name, or the table's type:name
    maps: Maps | None = None


class MechanismFilter:
    """One parsed filter; ``None`` from :meth:`from_config` when the value is empty."""

    def __init__(self, patterns: list[Pattern], param: str = PARAM) -> None:
        self.patterns = patterns
        self.param = param

    @classmethod
    def from_config(cls, cfg: Config, param: str = PARAM) -> MechanismFilter | None:
        words = cfg.list(param)
        return cls(_parse(words, True, param), param) if words else None

    async def matches(self, name: str) -> bool:
        """string_list_match(); TableRetry when a table lookup fails."""
        folded = fold_key(name)
        for p in self.patterns:
            hit = (await p.maps.find(folded)) is not None if p.maps else p.word == folded
            if hit:
                return p.keep
        return False

    async def apply(self, names: list[str]) -> list[str] | None:
        """The names the filter keeps, in order; None (logged as Postfix words it) when
        a lookup fails or nothing is left."""
        if not names:
            return names
        kept = []
        for name in names:
            try:
                if await self.matches(name):
                    kept.append(name)
            except TableRetry:
                log.critical("sasl_mech_filter: SASL mechanism filter failed for: '%s'", name)
                return None
        if not kept:
            log.critical("%s discards all mechanisms in '%s'", self.param, " ".join(names))
            return None
        return kept


def _parse(words: list[str], keep: bool, param: str) -> list[Pattern]:
    """match_list_parse(): files expanded in line, negation carried into them."""
    out: list[Pattern] = []
    for word in words:
        item = word.lstrip("!")
        this = keep if (len(word) - len(item)) % 2 == 0 else not keep
        if not item:
            raise ConfigError(f"{param}: no pattern after '!'", parameter=param)
        if item.startswith("/"):
            try:
                lines = Path(item).read_text().splitlines()
            except OSError as exc:
                raise ConfigError(f"{param}: open file {item}: {exc.strerror}",
                                  parameter=param) from exc
            for line in lines:
                if line.strip() and not line.lstrip().startswith("#"):
                    out += _parse(line.replace(",", " ").split(), this, param)
        elif ":" in item:
            out.append(Pattern(this, item, open_maps(item, param)))
        else:
            out.append(Pattern(this, fold_key(item)))
    return out
