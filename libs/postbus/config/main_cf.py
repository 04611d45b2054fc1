"""main.cf reading and in-place editing (≈ mail_conf.c, readlline.c, postconf_edit.c).

Syntax, as Postfix reads it:

- ``name = value``; whitespace around ``=`` and at line ends is dropped.
- A line that starts with whitespace continues the previous logical line,
  blanks and all (``a,`` + ``  b`` gives ``a,  b``), as Postfix's readlline.
- A line whose first non-blank character is ``#`` is a comment and so is
  skipped, even between continuation lines; a ``#`` later in a line is part
  of the value.  Blank lines are skipped.
- A name set twice keeps the last value.

The physical lines are kept, so :meth:`MainCf.set`, :meth:`MainCf.remove`
and :meth:`MainCf.comment_out` behave like ``postconf -e``, ``-X`` and
``-#``: they touch only the lines of the named entries and keep comments
and order.

:func:`expand` does ``$name`` expansion with Postfix 3.7's rules, exactly as
``postconf -x`` evaluates it:

- ``$name``, ``${name}``, ``$(name)``; ``$$`` is a literal ``$``.  A name is
  ``[A-Za-z0-9_]+``; whitespace around a braced name is ignored.
- ``${name?text}`` / ``${name:text}``: text when the value is non-empty /
  empty or undefined.  Bare text runs to the closing brace, so
  ``${name?a:b}`` yields ``a:b`` (Postfix 2.x compatibility).
- ``${name?{text}}``, ``${name:{text}}``, ``${name?{text1}:{text2}}`` and
  ``${name?{text1}:text2}``: the 3.0 forms; whitespace around ``{}`` is ignored.
- ``${{left} OP {right} ? {t} : {f}}`` with OP ``== != < <= >= >``: numeric
  when both sides are all digits, else lexicographic; with the ``level``
  suffix (``<level``) both sides are compatibility levels like ``3.6``.
  Without ``?``/``:`` the expression yields ``true`` or the empty string.

Undefined names expand to the empty string (as ``postconf -x`` shows them).
Syntax errors and expansion loops raise :class:`ConfigError`; Postfix
treats both as fatal ("macro processing error") too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from postbus.config.conv import ConfigError

__all__ = ["Entry", "Lookup", "MainCf", "expand", "references"]

_BLANKS = " \t\r\n\f\v"


@dataclass(frozen=True)
class Entry:
    """One ``name = value`` setting: its logical value and where it is."""

    name: str
    value: str
    line: int  # 1-based number of the first physical line
    end: int  # 1-based number one past the last physical line


def _is_skipped(line: str) -> bool:
    """Blank lines and comment lines are not part of any setting."""
    stripped = line.lstrip(_BLANKS)
    return not stripped or stripped.startswith("#")


def _split_setting(text: str, filename: str, lineno: int) -> tuple[str, str]:
    """Split ``name = value`` (≈ split_nameval())."""
    name, sep, value = text.partition("=")
    name = name.strip(_BLANKS)
    if not sep:
        raise ConfigError(
            f'missing \'=\' after attribute name: "{text}"', file=filename, line=lineno
        )
    if not name:
        raise ConfigError(f'missing attribute name: "{text}"', file=filename, line=lineno)
    if any(ch in _BLANKS for ch in name):
        raise ConfigError(f'whitespace in attribute name: "{name}"', file=filename, line=lineno)
    return name, value.strip(_BLANKS)


class MainCf:
    """A main.cf file: its lines, its settings, and postconf-style edits."""

    def __init__(self, text: str = "", filename: str = "main.cf") -> None:
        self.filename = filename
        self.lines: list[str] = text.splitlines()
        self.entries: list[Entry] = []
        self._reparse()

    @classmethod
    def read(cls, path: str) -> MainCf:
        """Read a main.cf file; a missing file is an empty configuration."""
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as fp:
                return cls(fp.read(), path)
        except FileNotFoundError:
            return cls("", path)

    def _reparse(self) -> None:
        entries: list[Entry] = []
        start: int | None = None
        pieces: list[str] = []
        last = 0

        def flush() -> None:
            if start is not None:
                name, value = _split_setting("".join(pieces), self.filename, start)
                entries.append(Entry(name, value, start, last + 1))

        for number, line in enumerate(self.lines, start=1):
            if _is_skipped(line):
                continue
            if line[0] in _BLANKS and start is not None:
                # Postfix keeps a continuation line's leading blanks (readlline)
                pieces.append(line.rstrip(_BLANKS))
                last = number
                continue
            flush()
            start, pieces, last = number, [line.strip(_BLANKS)], number
        flush()
        self.entries = entries

    # -- reading ---------------------------------------------------------

    @property
    def values(self) -> dict[str, str]:
        """Every name set in the file with its last value, in file order."""
        result: dict[str, str] = {}
        for entry in self.entries:
            result.pop(entry.name, None)
            result[entry.name] = entry.value
        return result

    def entry(self, name: str) -> Entry | None:
        """The setting that wins for name (the last one), or None."""
        for entry in reversed(self.entries):
            if entry.name == name:
                return entry
        return None

    def get(self, name: str) -> str | None:
        entry = self.entry(name)
        return None if entry is None else entry.value

    def __contains__(self, name: object) -> bool:
        return any(entry.name == name for entry in self.entries)

    def names(self) -> list[str]:
        return list(self.values)

    def duplicates(self) -> list[str]:
        """Names set more than once (postconf warns "multiple entries")."""
        seen: set[str] = set()
        dups: list[str] = []
        for entry in self.entries:
            if entry.name in seen and entry.name not in dups:
                dups.append(entry.name)
            seen.add(entry.name)
        return dups

    # -- editing (postconf -e, -X, -#) -----------------------------------

    def _rewrite(self, name: str, replace: str | None, comment: bool = False) -> bool:
        """Rewrite the lines of every entry for name; True if any was found."""
        targets = [e for e in self.entries if e.name == name]
        for entry in reversed(targets):
            span = slice(entry.line - 1, entry.end - 1)
            if comment:
                self.lines[span] = [
                    line if _is_skipped(line) else "#" + line for line in self.lines[span]
                ]
            elif replace is None:
                self.lines[span] = [line for line in self.lines[span] if _is_skipped(line)]
            else:
                kept = [line for line in self.lines[span] if _is_skipped(line)]
                self.lines[span] = [replace, *kept]
        self._reparse()
        return bool(targets)

    def set(self, name: str, value: str) -> None:
        """Set name like ``postconf -e``: every existing entry is replaced in
        place with one line, or a new line is appended at the end."""
        line = f"{name} = {value}"  # postconf -e writes "name = " for an empty value
        if any(ch in _BLANKS for ch in name) or "=" in name or not name:
            raise ConfigError(f'bad parameter name: "{name}"', file=self.filename)
        if not self._rewrite(name, line):
            self.lines.append(line)
            self._reparse()

    def remove(self, name: str) -> bool:
        """Remove every entry for name like ``postconf -X``."""
        return self._rewrite(name, None)

    def comment_out(self, name: str) -> bool:
        """Prefix every line of name's entries with ``#`` like ``postconf -#``."""
        return self._rewrite(name, None, comment=True)

    def render(self) -> str:
        """The file text, with a final newline when not empty."""
        return "\n".join(self.lines) + "\n" if self.lines else ""


# -- $name expansion (≈ mac_parse.c + mac_expand.c) --------------------------

#: Returns the raw value of a name, or None when it is not defined.
Lookup = Callable[[str], "str | None"]

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_WHITESPACE = " \t\r\n"
_OP_CHARS = "<>!=?+-*/~&|%"
_RELOPS = frozenset({"==", "!=", "<", "<=", ">=", ">"})
_MAX_DEPTH = 100
_TRUE = "true"


def _parse(pattern: str) -> Iterator[tuple[bool, str]]:
    """Split text into literal runs and ``$`` references (≈ mac_parse())."""
    literal: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch != "$":
            literal.append(ch)
            i += 1
            continue
        if i + 1 < n and pattern[i + 1] == "$":
            literal.append("$")
            i += 2
            continue
        if literal:
            yield False, "".join(literal)
            literal = []
        i += 1
        if i < n and pattern[i] in "({":
            opener = pattern[i]
            closer = ")" if opener == "(" else "}"
            level, j = 1, i + 1
            while level > 0:
                if j >= n:
                    raise ConfigError(f'truncated macro reference: "{pattern}"')
                if pattern[j] == opener:
                    level += 1
                elif pattern[j] == closer:
                    level -= 1
                j += 1
            name = pattern[i + 1 : j - 1]
        else:
            j = i
            while j < n and pattern[j] in _NAME_CHARS:
                j += 1
            name = pattern[i:j]
        i = j
        if not name:
            raise ConfigError(f'empty macro name: "{pattern}"')
        yield True, name
    if literal:
        yield False, "".join(literal)


def _lstrip_ws(text: str) -> str:
    return text.lstrip(_WHITESPACE)


def _curly(text: str) -> tuple[str, str]:
    """Extract a balanced ``{payload}`` at the start of text; skip blanks after it."""
    level = 1
    for j in range(1, len(text)):
        if text[j] == "{":
            level += 1
        elif text[j] == "}":
            level -= 1
            if level == 0:
                return text[1:j], _lstrip_ws(text[j + 1 :])
    raise ConfigError(f'unbalanced {{}} in attribute expression: "{text}"')


def _compat_level(text: str) -> tuple[int, ...]:
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isascii() and p.isdigit() for p in parts):
        raise ConfigError(f'bad compatibility level: "{text}"')
    return tuple(int(p) for p in parts) + (0,) * (3 - len(parts))


def _compare(left: str, op: str, right: str, suffix: str) -> bool:
    delta: int
    if suffix == "level":
        lv, rv = _compat_level(left), _compat_level(right)
        delta = (lv > rv) - (lv < rv)
    elif left.isascii() and left.isdigit() and right.isascii() and right.isdigit():
        delta = int(left) - int(right)
    else:
        delta = (left > right) - (left < right)
    return {
        "==": delta == 0,
        "!=": delta != 0,
        "<": delta < 0,
        "<=": delta <= 0,
        ">=": delta >= 0,
        ">": delta > 0,
    }[op]


class _Expander:
    def __init__(self, lookup: Lookup, recursive: bool) -> None:
        self.lookup = lookup
        self.recursive = recursive
        self.active: list[str] = []
        self.out: list[str] = []

    def run(self, pattern: str) -> None:
        if len(self.active) > _MAX_DEPTH:
            raise ConfigError(f'unreasonable macro call nesting: "{pattern}"')
        for is_ref, text in _parse(pattern):
            if is_ref:
                self.reference(text)
            else:
                self.out.append(text)

    def sub(self, pattern: str) -> str:
        """Expand an operand of a relational expression on its own."""
        saved, self.out = self.out, []
        try:
            self.run(pattern)
            return "".join(self.out)
        finally:
            self.out = saved

    def relational(self, text: str) -> tuple[str, str]:
        left, rest = _curly(text)
        oplen = len(rest) - len(rest.lstrip(_OP_CHARS))
        op, rest = rest[:oplen], rest[oplen:]
        if op not in _RELOPS:
            raise ConfigError(
                f'"==" or "!=" or "<" or "<=" or ">=" or ">" expected at: '
                f'"...{left}}}>>>{rest[:20]}"'
            )
        suffix = ""
        while rest and rest[0] in _NAME_CHARS and rest[0] != "_":
            suffix, rest = suffix + rest[0], rest[1:]
        if suffix and suffix != "level":
            raise ConfigError(f'bad operator suffix at: "...{op}>>>{suffix}"')
        rest = _lstrip_ws(rest)
        if not rest.startswith("{"):
            raise ConfigError(f'"{{expression}}" expected at: "...{{{left}}} {op}>>>{rest[:20]}"')
        right, rest = _curly(rest)
        result = _compare(self.sub(left), op, self.sub(right), suffix)
        return (_TRUE if result else ""), rest

    def reference(self, text: str) -> None:
        op: str | None = None
        name: str | None = None
        stripped = _lstrip_ws(text)
        if stripped.startswith("{"):
            value: str | None
            value, rest = self.relational(stripped)
            if rest:
                if rest[0] not in "?:":
                    raise ConfigError(f'"?" or ":" expected at: "...}}>>>{rest[:20]}"')
                op, rest = rest[0], rest[1:]
        else:
            rest = ""
            k = 0
            while True:
                after = _lstrip_ws(stripped[k:])
                if not after:
                    name = stripped[:k]
                    break
                if after[0] in "?:":
                    name, op, rest = stripped[:k], after[0], after[1:]
                    break
                if stripped[k] not in _NAME_CHARS:
                    raise ConfigError(
                        f'attribute name syntax error at: "...{stripped[:k]}>>>{stripped[k:][:20]}"'
                    )
                k += 1
            value = self.lookup(name)
        if op is None:
            self.use(name, value)
            return
        if op == "?":
            body, rest = self.operand(rest)
            if value:
                self.run(body)
            if not rest:
                return
            if rest[0] != ":":
                raise ConfigError(f'":" expected at: "...{body}}}>>>{rest[:20]}"')
            rest = rest[1:]
        body, rest = self.operand(rest)
        if not value:
            self.run(body)
        if rest:
            raise ConfigError(f'unexpected input at: "...{body}}}>>>{rest[:20]}"')

    @staticmethod
    def operand(rest: str) -> tuple[str, str]:
        stripped = _lstrip_ws(rest)
        if stripped.startswith("{"):
            return _curly(stripped)
        return rest, ""

    def use(self, name: str | None, value: str | None) -> None:
        if not value:
            return
        if not self.recursive:
            self.out.append(value)
            return
        if name is not None and name in self.active:
            chain = " -> ".join([*self.active[self.active.index(name) :], name])
            raise ConfigError(f"parameter expansion loop: {chain}")
        if name is not None:
            self.active.append(name)
        try:
            self.run(value)
        finally:
            if name is not None:
                self.active.pop()


def expand(value: str, lookup: Lookup, *, recursive: bool = True, name: str | None = None) -> str:
    """Expand ``$name`` references in value (≈ mac_expand() as postconf -x uses it).

    ``lookup`` gives the raw (unexpanded) value of a name or None.  With
    ``recursive`` (Postfix's MAC_EXP_FLAG_RECURSE, what main.cf uses) the
    values found are expanded in turn.  ``name`` is the parameter being
    expanded, so a value referring back to it is reported as a loop.
    """
    expander = _Expander(lookup, recursive)
    if name is not None:
        expander.active.append(name)
    expander.run(value)
    return "".join(expander.out)


def references(value: str) -> list[str]:
    """Names referenced by value, in order, including in conditional parts.

    ≈ mac_expand() with MAC_EXP_FLAG_SCAN, which postconf uses to decide
    which user-defined parameters are in use.  Syntax errors raise.
    """
    found: list[str] = []

    def scan(text: str) -> None:
        for is_ref, ref in _parse(text):
            if not is_ref:
                continue
            stripped = _lstrip_ws(ref)
            if stripped.startswith("{"):
                for piece in _split_braced(stripped):
                    scan(piece)
                continue
            head = stripped
            for i, ch in enumerate(stripped):
                if ch in "?:":
                    head = stripped[:i]
                    scan(stripped[i + 1 :])
                    break
            head = head.strip(_WHITESPACE)
            if head and head not in found:
                found.append(head)

    scan(value)
    return found


def _split_braced(text: str) -> list[str]:
    """Payloads of every top-level ``{...}`` group in text."""
    pieces: list[str] = []
    level = 0
    start = 0
    for i, ch in enumerate(text):
        if ch == "{":
            if level == 0:
                start = i + 1
            level += 1
        elif ch == "}" and level > 0:
            level -= 1
            if level == 0:
                pieces.append(text[start:i])
    return pieces
