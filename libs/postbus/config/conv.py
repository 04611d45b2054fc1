"""Value conversions for configuration parameters (≈ conv_time.c, mail_conf_*.c).

Postfix stores every parameter as text and converts it at the point of use;
these helpers do the same conversions with Postfix's rules, so a value that
Postfix would reject is rejected here too, with the file, line and parameter
in the message.
"""

from __future__ import annotations

import re

__all__ = [
    "TIME_UNITS",
    "ConfigError",
    "parse_bool",
    "parse_int",
    "parse_size",
    "parse_time",
    "split_list",
]

INT_MAX = 2**31 - 1
LONG_MAX = 2**63 - 1

#: Seconds per time unit letter, as conv_time() knows them.
TIME_UNITS: dict[str, int] = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

#: Separators of a Postfix list value (CHARS_COMMA_SP).
LIST_SEPARATORS = ", \t\r\n"

_INT_RE = re.compile(r"[+-]?[0-9]+")
_TIME_RE = re.compile(r"([+-]?[0-9]+)([a-zA-Z]?)")


class ConfigError(Exception):
    """A configuration problem, located like Postfix locates it.

    The message reads ``/etc/postbus/main.cf, line 12: parameter foo: reason``;
    parts that are unknown are left out.
    """

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        line: int | None = None,
        parameter: str | None = None,
    ) -> None:
        self.reason = reason
        self.file = file
        self.line = line
        self.parameter = parameter
        super().__init__(self._format())

    def _format(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(self.file if self.line is None else f"{self.file}, line {self.line}")
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.parameter:
            parts.append(f"parameter {self.parameter}")
        parts.append(self.reason)
        return ": ".join(parts)

    def located(
        self, *, file: str | None = None, line: int | None = None, parameter: str | None = None
    ) -> ConfigError:
        """Return a copy that fills in location parts still unknown."""
        return type(self)(
            self.reason,
            file=self.file or file,
            line=self.line if self.line is not None else line,
            parameter=self.parameter or parameter,
        )

    def __str__(self) -> str:
        return self._format()


def _check_bounds(value: int, lo: int | None, hi: int | None, text: str) -> int:
    if lo is not None and value < lo:
        raise ConfigError(f"invalid value {text!r}: must be >= {lo}")
    if hi is not None and value > hi:
        raise ConfigError(f"invalid value {text!r}: must be <= {hi}")
    return value


def parse_int(value: str, *, min: int | None = None, max: int | None = None) -> int:
    """Parse a decimal integer as get_mail_conf_int() does: no suffix, no junk."""
    text = value.strip()
    if not _INT_RE.fullmatch(text):
        raise ConfigError(f"bad numerical configuration value {value!r}")
    number = int(text)
    if not -INT_MAX - 1 <= number <= INT_MAX:
        raise ConfigError(f"numerical configuration value {value!r} out of range")
    return _check_bounds(number, min, max, value)


def parse_size(value: str, *, min: int | None = None, max: int | None = None) -> int:
    """Parse a byte count (a C ``long`` in Postfix, e.g. message_size_limit).

    Postfix takes plain decimal numbers only (no k/M suffixes), and so do we.
    """
    text = value.strip()
    if not _INT_RE.fullmatch(text):
        raise ConfigError(f"bad numerical configuration value {value!r}")
    number = int(text)
    if not -LONG_MAX - 1 <= number <= LONG_MAX:
        raise ConfigError(f"numerical configuration value {value!r} out of range")
    return _check_bounds(number, min, max, value)


def parse_time(
    value: str,
    unit: str = "s",
    *,
    min: float | None = None,
    max: float | None = None,
) -> float:
    """Parse a Postfix time value into seconds (≈ conv_time.c).

    The syntax is a non-negative integer with at most one unit letter
    (``s``, ``m``, ``h``, ``d``, ``w``); a bare number takes the parameter's
    default ``unit``.  Postfix has no combined forms like ``1h30m`` and no
    fractions, so neither do we.  Bounds are in seconds.
    """
    if unit not in TIME_UNITS:
        raise ValueError(f"bad default time unit {unit!r}")
    match = _TIME_RE.fullmatch(value.strip())
    if not match:
        raise ConfigError(f"bad time value {value!r}: expected a number with unit s, m, h, d or w")
    number = int(match.group(1))
    letter = match.group(2) or unit
    if letter not in TIME_UNITS:
        raise ConfigError(f"bad time unit {letter!r} in {value!r}: expected s, m, h, d or w")
    if number < 0:
        raise ConfigError(f"bad time value {value!r}: must not be negative")
    seconds = number * TIME_UNITS[letter]
    if seconds > INT_MAX:
        raise ConfigError(f"time value {value!r} out of range")
    if min is not None and seconds < min:
        raise ConfigError(f"invalid value {value!r}: must be >= {min:g}s")
    if max is not None and seconds > max:
        raise ConfigError(f"invalid value {value!r}: must be <= {max:g}s")
    return float(seconds)


_TRUE = frozenset({"yes", "true"})
_FALSE = frozenset({"no", "false"})


def parse_bool(value: str) -> bool:
    """Parse a boolean: Postfix's ``yes``/``no``, case-insensitive.

    ``true``/``false`` are accepted as well (Postfix would reject them); any
    other text is an error, as in get_mail_conf_bool().
    """
    text = value.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"bad boolean configuration value {value!r}: expected yes or no")


def split_list(value: str, separators: str = LIST_SEPARATORS) -> list[str]:
    """Split a list value into tokens (≈ mystrtokq() with CHARS_BRACE).

    Separators are commas and whitespace.  A ``{...}`` group is never split,
    so ``inline:{a=b, c=d}`` and ``check_policy_service { inet:h:9, timeout=5 }``
    arguments stay whole; the braces are kept in the token, as Postfix keeps
    them for the consumer (table or restriction parser) to strip.
    """
    tokens: list[str] = []
    current: list[str] = []
    level = 0
    for ch in value:
        if level == 0 and ch in separators:
            if current:
                tokens.append("".join(current))
                current = []
            continue
        if ch == "{":
            level += 1
        elif ch == "}" and level > 0:
            level -= 1
        current.append(ch)
    if current:
        tokens.append("".join(current))
    return tokens
