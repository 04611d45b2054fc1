"""``cidr:`` tables: IPv4/IPv6 network patterns, first match wins (≈ dict_cidr.c, cidr_match.c).

Syntax (cidr_table(5), Postfix 3.2+ features included)::

    192.168.1.1         OK          # a bare address means /32 or /128
    [2001:db8::]/32     REJECT      # [] around the address are allowed
    !10.0.0.0/8         DUNNO       # negation: matches keys outside the net
    if 192.168.0.0/16               # if/endif blocks nest
    192.168.1.0/24      x
    endif

Keys and patterns are converted with the C library's ``inet_pton`` (so
``01.2.3.4`` is not an address, and IPv6 leading zeros do not matter).  A
pattern only applies to keys of its own address family, negated or not.
A key that is not an address matches nothing.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

from postbus.maps.table import TableConfigError, log, register_type
from postbus.maps.types._syntax import SPACE, FileBackedTable, logical_lines


@dataclass
class CidrRule:
    """One line: a match rule (``op="match"``), an ``if`` or an ``endif``."""

    op: str
    lineno: int
    family: int = socket.AF_INET
    net: int = 0
    mask: int = 0
    match: bool = True
    value: str = ""
    end: int | None = field(default=None)  # for "if": index of the matching endif


def _family(text: str) -> int:
    return socket.AF_INET6 if ":" in text else socket.AF_INET


def _to_int(family: int, text: str) -> int | None:
    if "\0" in text:
        return None
    try:
        return int.from_bytes(socket.inet_pton(family, text), "big")
    except (OSError, ValueError):
        return None


def parse_pattern(pattern: str, match: bool, lineno: int) -> CidrRule:
    """Parse ``addr``, ``addr/len``, ``[addr]/len`` or ``[addr/len]`` (≈ cidr_match_parse())."""
    mask_text: str | None = None
    if pattern.startswith("["):
        inner, sep, after = pattern[1:].partition("]")
        if not sep:
            raise TableConfigError(f'missing \']\' character after "[{pattern[1:]}"')
        if after and not after.startswith("/"):
            raise TableConfigError(f'garbage after "[{inner}]"')
        pattern = inner + after
    addr, slash, mask_text = pattern.partition("/")
    family = _family(addr)
    bits = 128 if family == socket.AF_INET6 else 32
    net = _to_int(family, addr)
    if slash:
        if not mask_text.isdigit() or not mask_text.isascii():
            raise TableConfigError(f'bad mask value in "{addr}/{mask_text}"')
        length = int(mask_text)
        if length > bits:
            raise TableConfigError(f'bad mask length in "{addr}/{mask_text}"')
        if net is None:
            raise TableConfigError(f'bad network value in "{addr}/{mask_text}"')
    else:
        if net is None:
            raise TableConfigError(f'bad address pattern: "{addr}"')
        length = bits
    mask = ((1 << bits) - 1) ^ ((1 << (bits - length)) - 1)
    if net & ~mask:
        fixed = socket.inet_ntop(family, (net & mask).to_bytes(bits // 8, "big"))
        raise TableConfigError(
            f'non-null host address bits in "{addr}/{mask_text}", '
            f'perhaps you should use "{fixed}/{length}" instead'
        )
    return CidrRule("match", lineno, family, net, mask, match)


def _negations(text: str) -> tuple[bool, str]:
    match = True
    i = 0
    while i < len(text) and (text[i] == "!" or text[i] in SPACE):
        if text[i] == "!":
            match = not match
        i += 1
    return match, text[i:]


def _keyword(line: str, word: str) -> bool:
    return line[: len(word)].lower() == word and not line[len(word) : len(word) + 1].isalnum()


def parse_rule(line: str, lineno: int, nesting: int) -> CidrRule:
    """Parse one logical line (≈ dict_cidr_parse_rule()); raise TableConfigError."""
    if _keyword(line, "if"):
        match, rest = _negations(line[2:])
        rest = rest.rstrip(SPACE)
        if not rest:
            raise TableConfigError("no address pattern")
        rule = parse_pattern(rest, match, lineno)
        rule.op = "if"
        return rule
    if _keyword(line, "endif"):
        if line[5:].strip(SPACE):
            raise TableConfigError("garbage after ENDIF")
        if nesting == 0:
            raise TableConfigError("ENDIF without IF")
        return CidrRule("endif", lineno)
    match, rest = _negations(line)
    pattern, value = _split_ws(rest)
    if not pattern:
        raise TableConfigError("no address pattern")
    rule = parse_pattern(pattern, match, lineno)
    if not value:
        raise TableConfigError("no lookup result")
    rule.value = value
    return rule


def _split_ws(text: str) -> tuple[str, str]:
    for i, ch in enumerate(text):
        if ch in SPACE:
            return text[:i], text[i + 1 :].strip(SPACE)
    return text, ""


def parse_cidr(text: str, path: str) -> list[CidrRule]:
    """Parse a cidr table; bad rules are logged and skipped, as Postfix does."""
    rules: list[CidrRule] = []
    stack: list[int] = []
    for lineno, line in logical_lines(text, path):
        try:
            rule = parse_rule(line, lineno, len(stack))
        except TableConfigError as exc:
            log.warning("cidr map %s, line %d: %s: skipping this rule", path, lineno, exc)
            continue
        if rule.op == "if":
            stack.append(len(rules))
        elif rule.op == "endif":
            rules[stack.pop()].end = len(rules)
        rules.append(rule)
    for index in reversed(stack):
        log.warning("cidr map %s, line %d: IF has no matching ENDIF", path, rules[index].lineno)
    return rules


def cidr_find(rules: list[CidrRule], key: str) -> str | None:
    """First matching rule's value (≈ cidr_match_execute())."""
    family = _family(key)
    addr = _to_int(family, key)
    if addr is None:
        return None
    i = 0
    while i < len(rules):
        rule = rules[i]
        if rule.op == "match":
            if rule.family == family and ((addr & rule.mask) == rule.net) == rule.match:
                return rule.value
        elif rule.op == "if" and not (
            rule.family == family and ((addr & rule.mask) == rule.net) == rule.match
        ):
            if rule.end is None:
                return None
            i = rule.end
        i += 1
    return None


class CidrTable(FileBackedTable[list[CidrRule]]):
    """A cidr: table; a pattern table, so it sees full keys only."""

    fixed = False
    type_name = "cidr"
    inline_ok = True

    def parse(self, text: str, path: str) -> list[CidrRule]:
        return parse_cidr(text, path)

    async def lookup(self, key: str) -> str | None:
        return cidr_find(self.current(), key)


register_type("cidr", CidrTable)
