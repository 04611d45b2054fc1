"""Text syntax shared by the table types (≈ readlline.c, balpar.c, extpar.c, mystrtok.c).

Also :class:`FileBackedTable`, the "source file or inline ``{...}`` text,
parsed once and re-parsed when the file changes" base class of every
file-based type.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

from postbus.maps.table import Table, TableConfigError, TableRetry, log

SPACE = " \t\n\r\v\f"
COMMA_SP = ", \t\r\n"


def logical_lines(text: str, path: str) -> Iterator[tuple[int, str]]:
    """Yield ``(first_line_number, logical_line)`` (≈ readllines()).

    Comment lines (first non-blank is ``#``) and blank lines are dropped,
    even inside a continued line; a line starting with whitespace continues
    the previous one and is appended as-is (its leading blanks kept).  A
    logical line that starts with whitespace gets Postfix's warning and is
    skipped.
    """
    buf: list[str] = []
    first = 0
    bad = False
    for lineno, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.lstrip(SPACE)
        if not stripped or stripped.startswith("#"):
            continue
        if raw[0] in SPACE and buf:
            buf.append(raw)
            continue
        if buf:
            yield from _flush(buf, first, bad, path)
        buf, first, bad = [raw], lineno, raw[0] in SPACE
    if buf:
        yield from _flush(buf, first, bad, path)


def _flush(buf: list[str], first: int, bad: bool, path: str) -> Iterator[tuple[int, str]]:
    line = "".join(buf)
    if not bad:
        yield first, line
        return
    shown = line if len(line) <= 30 else line[:30] + "..."
    log.warning('%s: logical line must not start with whitespace: "%s"', path, shown)


def balpar(text: str, parens: str = "{}") -> int:
    """Length of the balanced ``{...}`` group at the start of text, 0 if none (≈ balpar.c)."""
    if not text or text[0] != parens[0]:
        return 0
    level = 1
    for i in range(1, len(text)):
        if text[i] == parens[1]:
            level -= 1
            if level == 0:
                return i + 1
        elif text[i] == parens[0]:
            level += 1
    return 0


def extpar(text: str, strip: bool = True) -> str:
    """Remove the outer braces of ``{ text }`` (≈ extpar() with EXTPAR_FLAG_STRIP)."""
    if not text.startswith("{"):
        raise TableConfigError(f"no '{{' at start of text in \"{text}\"")
    n = balpar(text)
    if n == 0:
        raise TableConfigError(f"missing '}}' in \"{text}\"")
    if n != len(text):
        raise TableConfigError(f"syntax error after '}}' in \"{text}\"")
    inner = text[1 : n - 1]
    return inner.strip(SPACE) if strip else inner


def split_tokens(text: str, sep: str = COMMA_SP) -> list[str]:
    """Split on separators outside ``{}`` (≈ mystrtokq(..., CHARS_COMMA_SP, CHARS_BRACE))."""
    out: list[str] = []
    cur: list[str] = []
    level = 0
    for ch in text:
        if ch == "{":
            level += 1
        elif ch == "}" and level > 0:
            level -= 1
        elif level == 0 and ch in sep:
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if cur:
        out.append("".join(cur))
    return out


def split_qnameval(text: str) -> tuple[str, str]:
    """Split ``key = value`` honouring quotes and backslashes in the key (≈ split_qnameval.c)."""
    s = text.lstrip(SPACE)
    if not s:
        raise TableConfigError("no key found; expected format: key = value")
    i, quoted = 0, False
    while i < len(s):
        ch = s[i]
        if ch == "\\":
            i += 1
        elif (ch in SPACE or ch == "=") and not quoted:
            break
        elif ch == '"':
            quoted = not quoted
        i += 1
    if quoted:
        raise TableConfigError("unbalanced '\"'")
    key, rest = s[:i], s[i:].lstrip(SPACE)
    if not rest.startswith("="):
        raise TableConfigError("missing '=' after attribute name")
    return key, rest[1:].strip(SPACE)


def inline_to_text(name: str, typ: str) -> str:
    """``{ {rule1}, {rule2} }`` to a multi-line file text (≈ dict_inline_to_multiline())."""
    try:
        inner = extpar(name, strip=False)
        lines = []
        for tok in split_tokens(inner):
            lines.append(extpar(tok) if tok.startswith("{") else tok)
    except TableConfigError as exc:
        raise TableConfigError(f"{typ} map: {exc}") from None
    return "".join(line + "\n" for line in lines)


ParsedT = TypeVar("ParsedT")


class FileBackedTable(Table, Generic[ParsedT]):
    """A table parsed from a source file (or inline ``{...}`` text).

    The file is read on first use and again whenever its mtime, size or
    inode changes, so an edited table is picked up without a restart.  A
    file that cannot be read makes lookups raise TableRetry, as Postfix's
    surrogate table does.
    """

    type_name: str = ""
    #: Whether ``type:{ {rule}, ... }`` inline text is accepted (regexp, pcre, cidr).
    inline_ok: bool = False

    def __init__(self, spec: str, name: str) -> None:
        super().__init__(spec)
        self.path = name
        self._inline = self.inline_ok and name.startswith("{")
        self._parsed: ParsedT | None = None
        self._stamp: tuple[int, int, int] | None = None
        if self._inline:
            self._parsed = self.parse(inline_to_text(name, self.type_name), name)

    @abc.abstractmethod
    def parse(self, text: str, path: str) -> ParsedT:
        """Parse the whole source text; log warnings for bad lines and skip them."""

    def current(self) -> ParsedT:
        """The parsed content, re-reading the file when it changed."""
        if self._inline:
            assert self._parsed is not None
            return self._parsed
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if self._parsed is None or stamp != self._stamp:
                with open(self.path, encoding="utf-8", errors="surrogateescape") as fp:
                    text = fp.read()
                self._parsed = self.parse(text, self.path)
                self._stamp = stamp
        except OSError as exc:
            reason = f"open database {self.path}: {exc.strerror or exc}"
            log.warning("%s:%s lookup error: %s", self.type_name, self.path, reason)
            raise TableRetry(f"{self.spec}: {reason}") from None
        return self._parsed

    def check(self) -> None:
        try:
            self.current()
        except TableRetry as exc:
            raise TableConfigError(str(exc)) from None


def join_nonempty(parts: Iterable[str]) -> str:
    """Join with commas (unionmap results)."""
    return ",".join(parts)
