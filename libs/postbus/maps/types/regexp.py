"""``regexp:`` and ``pcre:`` tables (≈ dict_regexp.c, dict_pcre.c).

File syntax (regexp_table(5), pcre_table(5))::

    /pattern/flags result        # first matching rule wins
    !/pattern/flags result       # rule applies when the pattern does NOT match
    /pat1/!/pat2/ result         # regexp only: pat1 matches and pat2 does not
    if /pattern/flags            # if !/pattern/ too; if/endif nest
    ...
    endif

Flags toggle defaults: regexp has i (on), m, x (extended syntax, on);
pcre has i (on), m, s (on), x, A, E, U (X is obsolete and ignored).  The
delimiter may be any non-alphanumeric character.  In the result, ``$1`` ..
``$n``, ``${n}`` and ``$(n)`` insert matched groups (an unmatched group
is empty) and ``$$`` is a ``$``; a bad ``$`` reference, a ``$n`` beyond
the pattern's groups or one in a negated rule makes Postfix skip the rule
with a warning, and so do we.  Both are pattern tables: they see the full,
original-case key only.  See :mod:`.retranslate` for how the patterns are
compiled with Python's ``re`` and where that differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from postbus.maps.table import TableConfigError, log, register_type
from postbus.maps.types._syntax import SPACE, FileBackedTable, logical_lines
from postbus.maps.types.retranslate import compile_pcre, compile_posix

Template = list[str | int]


@dataclass
class Pattern:
    """A compiled pattern and whether a match (True) or a non-match (False) selects."""

    regex: re.Pattern[str]
    match: bool
    anchored: bool = False

    def search(self, key: str) -> re.Match[str] | None:
        return self.regex.match(key) if self.anchored else self.regex.search(key)

    def selects(self, key: str) -> bool:
        return (self.search(key) is not None) == self.match


@dataclass
class Rule:
    """``op`` is "match", "if" or "endif"; ``end`` is the index of an if's endif."""

    op: str
    lineno: int
    first: Pattern | None = None
    second: Pattern | None = None
    template: Template | None = None
    end: int | None = None


def parse_template(text: str) -> Template:
    """Parse the result text into literals and group numbers (≈ mac_parse() + prescan).

    Raises TableConfigError with Postfix's wording when the text is not usable.
    """
    out: Template = []
    lit: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "$":
            lit.append(c)
            i += 1
            continue
        if text[i + 1 : i + 2] == "$":
            lit.append("$")
            i += 2
            continue
        i += 1
        if i < n and text[i] in "{(":
            close, level, j = "}" if text[i] == "{" else ")", 1, i + 1
            while j < n and level:
                level += (text[j] == text[i]) - (text[j] == close)
                j += 1
            if level:
                raise TableConfigError(f'truncated macro reference: "{text}"')
            name, i = text[i + 1 : j - 1], j
        else:
            j = i
            while j < n and text[j].isascii() and (text[j].isalnum() or text[j] == "_"):
                j += 1
            name, i = text[i:j], j
        if not name:
            raise TableConfigError(f'empty macro name: "{text}"')
        if not (name.isascii() and name.isdigit()):
            raise TableConfigError(f'non-numeric replacement index "{name}"')
        if int(name) < 1:
            raise TableConfigError(f'out-of-range replacement index "{name}"')
        if lit:
            out.append("".join(lit))
            lit = []
        out.append(int(name))
    if lit:
        out.append("".join(lit))
    return out


def expand(template: Template, m: re.Match[str] | None) -> str:
    """Fill in a parsed template from a match (unmatched groups are empty)."""
    parts = []
    for part in template:
        if isinstance(part, str):
            parts.append(part)
        elif m is not None:
            parts.append(m.group(part) or "")
    return "".join(parts)


#: Python's words for a bad pattern -> glibc's regerror() text, which Postfix logs
_REGERROR = [
    ("missing ), unterminated subpattern", "Unmatched ( or \\("),
    ("unbalanced parenthesis", "Unmatched ) or \\)"),
    ("unterminated character set", "Unmatched [, [^, [:, [., or [="),
    ("brackets ([ ]) not balanced", "Unmatched [, [^, [:, [., or [="),
    ("nothing to repeat", "Invalid preceding regular expression"),
    ("multiple repeat", "Invalid preceding regular expression"),
    ("invalid preceding regular expression", "Invalid preceding regular expression"),
    ("trailing backslash", "Trailing backslash"),
    ("bad escape (end of pattern)", "Trailing backslash"),
    ("bad character range", "Invalid range end"),
    ("invalid character class", "Invalid character class name"),
    ("invalid collation character", "Invalid collation character"),
    ("invalid group reference", "Invalid back reference"),
    ("unmatched brace", "Unmatched \\{"),
    ("invalid brace content", "Invalid content of \\{\\}"),
    ("min repeat greater than max repeat", "Invalid content of \\{\\}"),
]


def regerror(exc: re.error) -> str:
    """The text glibc's regerror() gives for what Python refused (≈ dict_regexp_regerror())."""
    words = exc.msg if hasattr(exc, "msg") else str(exc)
    for prefix, text in _REGERROR:
        if words.startswith(prefix):
            return text
    return str(exc)


class _Dialect:
    """What differs between regexp: and pcre:."""

    name = ""
    options = ""
    default_on = ""
    #: regexp: the option list also stops at "!" (for /pat1/!/pat2/).
    option_stops = SPACE

    def compile(self, pattern: str, flags: str) -> tuple[re.Pattern[str], bool]:
        raise NotImplementedError


class _Posix(_Dialect):
    name, options, default_on, option_stops = "regexp", "imx", "ix", SPACE + "!"

    def compile(self, pattern: str, flags: str) -> tuple[re.Pattern[str], bool]:
        return compile_posix(pattern, "i" in flags, "m" in flags, "x" in flags), False


class _Pcre(_Dialect):
    name, options, default_on = "pcre", "imsxAEUX", "is"

    def compile(self, pattern: str, flags: str) -> tuple[re.Pattern[str], bool]:
        return compile_pcre(pattern, flags)


class _Parser:
    """Parses one file; every problem is logged with file:line and the rule skipped."""

    def __init__(self, dialect: _Dialect, path: str) -> None:
        self.d = dialect
        self.path = path
        self.lineno = 0

    def warn(self, fmt: str, *args: object) -> None:
        log.warning("%s map %s, line %d: " + fmt, self.d.name, self.path, self.lineno, *args)

    def get_pattern(self, text: str, pos: int) -> tuple[Pattern, int] | None:
        """Parse ``[!...]<delim>regex<delim>flags`` (≈ dict_regexp_get_pat())."""
        match = True
        while pos < len(text) and (text[pos] == "!" or text[pos] in SPACE):
            match = not match if text[pos] == "!" else match
            pos += 1
        if pos >= len(text):
            self.warn("no regexp: skipping this rule")
            return None
        delim = text[pos]
        start = pos = pos + 1
        while pos < len(text) and text[pos] != delim:
            pos += 2 if text[pos] == "\\" and pos + 1 < len(text) else 1
        if pos >= len(text):
            self.warn('no closing regexp delimiter "%s": skipping this rule', delim)
            return None
        regex_text, pos = text[start:pos], pos + 1
        flags = set(self.d.default_on)
        while pos < len(text) and text[pos] not in self.d.option_stops:
            opt = text[pos]
            if opt not in self.d.options:
                self.warn('unknown regexp option "%s": skipping this rule', opt)
                return None
            if opt == "X":
                self.warn('ignoring obsolete regexp option "%s"', opt)
            else:
                flags ^= {opt}
            pos += 1
        try:
            regex, anchored = self.d.compile(regex_text, "".join(sorted(flags)))
        except re.error as exc:
            self.warn("%s", regerror(exc) if self.d.name == "regexp" else exc)
            return None
        return Pattern(regex, match, anchored), pos

    def parse_match(self, line: str) -> Rule | None:
        got = self.get_pattern(line, 0)
        if got is None:
            return None
        first, pos = got
        second = None
        if self.d.name == "regexp" and line[pos : pos + 1] == "!":
            got = self.get_pattern(line, pos)
            if got is None:
                return None
            second, pos = got
        result = line[pos:].lstrip(SPACE)
        if not result:
            self.warn("no replacement text: using empty string")
        try:
            template = parse_template(result)
        except TableConfigError as exc:
            self.warn("%s", exc)
            self.warn("bad replacement syntax: skipping this rule")
            return None
        max_sub = max((p for p in template if isinstance(p, int)), default=0)
        if max_sub and not first.match:
            self.warn("$number found in negative match replacement text: skipping this rule")
            return None
        if max_sub > first.regex.groups:
            self.warn('out of range replacement index "%d": skipping this rule', max_sub)
            return None
        return Rule("match", self.lineno, first, second, template)

    def parse_line(self, line: str, nesting: int) -> Rule | None:
        """One rule (≈ dict_regexp_parseline())."""
        if not line[:1].isalnum():
            return self.parse_match(line)
        if line[:2].lower() == "if" and not line[2:3].isalnum():
            got = self.get_pattern(line, 2)
            if got is None:
                return None
            pattern, pos = got
            if line[pos:].strip(SPACE):
                self.warn('ignoring extra text after IF statement: "%s"',
                          line[pos:].lstrip(SPACE))
                self.warn("do not prepend whitespace to statements between IF and ENDIF")
            return Rule("if", self.lineno, pattern)
        if line[:5].lower() == "endif" and not line[5:6].isalnum():
            if nesting == 0:
                self.warn("ignoring ENDIF without matching IF")
                return None
            if line[5:].strip(SPACE):
                self.warn("ignoring extra text after ENDIF")
            return Rule("endif", self.lineno)
        self.warn("ignoring unrecognized request")
        return None

    def parse(self, text: str) -> list[Rule]:
        rules: list[Rule] = []
        stack: list[int] = []
        for lineno, line in logical_lines(text, self.path):
            self.lineno = lineno
            line = line.rstrip(SPACE)
            rule = self.parse_line(line, len(stack)) if line else None
            if rule is None:
                continue
            if rule.op == "if":
                stack.append(len(rules))
            elif rule.op == "endif":
                rules[stack.pop()].end = len(rules)
            rules.append(rule)
        for index in reversed(stack):
            self.lineno = rules[index].lineno
            self.warn("IF has no matching ENDIF")
        return rules


def regexp_find(rules: list[Rule], key: str) -> str | None:
    """First matching rule's expanded result (≈ dict_regexp_lookup())."""
    i = 0
    while i < len(rules):
        rule = rules[i]
        if rule.op == "match":
            assert rule.first is not None and rule.template is not None
            m = rule.first.search(key)
            if (m is not None) == rule.first.match and (
                rule.second is None or rule.second.selects(key)
            ):
                return expand(rule.template, m)
        elif rule.op == "if":
            assert rule.first is not None
            if not rule.first.selects(key):
                if rule.end is None:
                    return None
                i = rule.end
        i += 1
    return None


class PatternTable(FileBackedTable[list[Rule]]):
    """A regexp: or pcre: table."""

    fixed = False
    inline_ok = True
    dialect: _Dialect = _Posix()

    def parse(self, text: str, path: str) -> list[Rule]:
        return _Parser(self.dialect, path).parse(text)

    async def lookup(self, key: str) -> str | None:
        return regexp_find(self.current(), key)


class RegexpTable(PatternTable):
    type_name = "regexp"
    dialect = _Posix()


class PcreTable(PatternTable):
    type_name = "pcre"
    dialect = _Pcre()


register_type("regexp", RegexpTable)
register_type("pcre", PcreTable)
