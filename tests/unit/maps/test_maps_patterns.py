"""regexp:, pcre: and cidr: tables, with the examples of their manual pages."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from postbus.maps.table import Table, open_table


def table(tmp_path: Path, typ: str, text: str) -> Table:
    path = tmp_path / f"t.{typ}"
    path.write_text(text)
    return open_table(f"{typ}:{path}")


# regexp_table(5) / pcre_table(5) EXAMPLE SMTPD ACCESS MAP
ACCESS_MAP = r"""# Disallow sender-specified routing. This is a must if you relay mail
# for other domains.
/[%!@].*[%!@]/       550 Sender-specified routing rejected

# Postmaster is OK, that way they can talk to us about how to fix
# their problem.
/^postmaster@/       OK

# Protect your outgoing majordomo exploders
if !/^owner-/
/^(.*)-outgoing@(.*)$/  550 Use ${1}@${2} instead
endif
"""

ACCESS_CASES = [
    ("user%other@example.com", "550 Sender-specified routing rejected"),
    ("a!b@example.com", "550 Sender-specified routing rejected"),
    ("PostMaster@example.com", "OK"),
    ("list-outgoing@example.com", "550 Use list@example.com instead"),
    ("owner-list-outgoing@example.com", None),
    ("user@example.com", None),
]

HEADER_MAP = r"""/^Subject: make money fast/     REJECT
/^To: friend@public\.com/       REJECT
"""

BODY_MAP = "~^[[:alnum:]+/]{60,}$~\tOK\n"


@pytest.mark.parametrize("typ", ["regexp", "pcre"])
@pytest.mark.parametrize(("key", "value"), ACCESS_CASES)
async def test_man_access_example(tmp_path: Path, typ: str, key: str, value: str | None) -> None:
    assert await table(tmp_path, typ, ACCESS_MAP).lookup(key) == value


@pytest.mark.parametrize("typ", ["regexp", "pcre"])
async def test_man_header_and_body_examples(tmp_path: Path, typ: str) -> None:
    headers = table(tmp_path, typ, HEADER_MAP)
    assert await headers.lookup("subject: Make Money Fast now") == "REJECT"
    assert await headers.lookup("To: friend@publicXcom") is None
    body = table(tmp_path, typ, BODY_MAP)
    assert await body.lookup("QUJD" * 16) == "OK"
    assert await body.lookup("QUJD" * 14) is None
    assert await body.lookup("QUJD*" * 16) is None


REGEXP_CASES = [
    # (rules, key, expected)
    ("/^(a)(b)?c$/ r=$1$2\n", "ac", "r=a"),
    ("/^(a)(b)?c$/ r=$1$2\n", "abc", "r=ab"),
    ("/^x(.*)$/ ${1}z $$ $(1)\n", "xQ", "Qz $ Q"),
    ("/^y(.*)$/ $1abc\n/^y/ fallback\n", "yq", "fallback"),  # bad $ syntax: rule skipped
    ("/^z(.*)/ $10\n", "zq", None),  # out of range
    ("/abc/ lower\n", "xABCx", "lower"),  # i on by default
    ("/abc/i case\n", "xABCx", None),  # i toggles it off
    ("!/^abc/ not-abc\n", "xyz", "not-abc"),
    ("!/^abc/ not-abc\n", "abcd", None),
    ("/^a/!/b$/ a-not-b\n", "axc", "a-not-b"),
    ("/^a/!/b$/ a-not-b\n", "axb", None),
    ("if /^a/\nif !/z/\n/b/ ab\nendif\nendif\n/./ any\n", "ab", "ab"),
    ("if /^a/\nif !/z/\n/b/ ab\nendif\nendif\n/./ any\n", "abz", "any"),
    ("IF /^a/\n/./ in\nENDIF\n", "b", None),
    ("#c\n/a/ x\n  y\n", "a", "x  y"),  # continuation line
    ("/a/  spaced result  \n", "a", "spaced result"),
    ("@a/b@ delim\n", "a/b", "delim"),
    ("/a\\/b/ slash\n", "a/b", "slash"),
    ("/^(x)|(y)$/ [$1][$2]\n", "y", "[][y]"),
]


@pytest.mark.parametrize(("rules", "key", "value"), REGEXP_CASES)
async def test_regexp_rules(tmp_path: Path, rules: str, key: str, value: str | None) -> None:
    assert await table(tmp_path, "regexp", rules).lookup(key) == value


def test_regexp_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = "/^y(.*)$/ $1abc\n/^z(.*)/ $10\n/^w/\n/x/q r\nendif\nif /a/\nfoo\n/(/ x\n"
    with caplog.at_level(logging.WARNING, "postbus.maps"):
        table(tmp_path, "regexp", text).check()
    p = tmp_path / "t.regexp"
    assert caplog.messages[:7] == [
        f'regexp map {p}, line 1: non-numeric replacement index "1abc"',
        f"regexp map {p}, line 1: bad replacement syntax: skipping this rule",
        f'regexp map {p}, line 2: out of range replacement index "10": skipping this rule',
        f"regexp map {p}, line 3: no replacement text: using empty string",
        f'regexp map {p}, line 4: unknown regexp option "q": skipping this rule',
        f"regexp map {p}, line 5: ignoring ENDIF without matching IF",
        f"regexp map {p}, line 7: ignoring unrecognized request",
    ]
    assert caplog.messages[-1] == f"regexp map {p}, line 6: IF has no matching ENDIF"


PCRE_CASES = [
    (r"/^(\d+)\.(\d+)$/ $2.$1", "12.34", "34.12"),
    (r"/^a.b$/ dotall", "a\nb", "dotall"),
    (r"/^a.b$/s no-dotall", "a\nb", None),
    (r"/^b$/m multi", "a\nb\nc", "multi"),
    (r"/b/A anchored", "ab", None),
    (r"/a b/x extended", "ab", "extended"),
    (r"/^a$/ dollar", "a\n", "dollar"),
    (r"/^a$/E endonly", "a\n", None),
    (r"/^(a+)/U ungreedy=$1", "aaa", "ungreedy=a"),
    (r"/^(?<n>x)\k<n>$/ named", "xx", "named"),
    (r"/^\Qa.b\E$/ quoted", "a.b", "quoted"),
    (r"/^\Qa.b\E$/ quoted", "axb", None),
    (r"/^[[:digit:]]+\z/ digits", "123", "digits"),
]


@pytest.mark.parametrize(("rule", "key", "value"), PCRE_CASES)
async def test_pcre_rules(tmp_path: Path, rule: str, key: str, value: str | None) -> None:
    assert await table(tmp_path, "pcre", rule + "\n").lookup(key) == value


POSIX_CASES = [
    ("/^[[:upper:]]+$/i up", "ABC", "up"),
    ("/^[[:upper:]]+$/i up", "abc", None),
    ("/^a\\{2\\}$/x bre", "aa", "bre"),
    ("/^a{2}$/x bre-literal", "a{2}", "bre-literal"),
    ("/^\\(a\\)b$/x bre-group-$1", "ab", "bre-group-a"),
    ("/^[]x]+$/ bracket", "]x]", "bracket"),
    ("/^[a\\]+$/ backslash-literal", "a\\", "backslash-literal"),
    ("/a$/ no-trailing-nl", "a\n", None),
    ("/^b$/m newline", "a\nb", "newline"),
    ("/\\<foo\\>/ word", "a foo b", "word"),
]


@pytest.mark.parametrize(("rule", "key", "value"), POSIX_CASES)
async def test_posix_translation(tmp_path: Path, rule: str, key: str, value: str | None) -> None:
    assert await table(tmp_path, "regexp", rule + "\n").lookup(key) == value


async def test_inline_pattern_tables() -> None:
    t = open_table("regexp:{ {/^(.*)@example\\.com$/ $1}, {/./ other} }")
    assert await t.lookup("joe@example.com") == "joe"
    assert await t.lookup("joe@example.org") == "other"
    c = open_table("cidr:{ {192.168.0.0/16 lan}, {!::/0 v4} }")
    assert await c.lookup("192.168.3.4") == "lan"
    assert await c.lookup("10.0.0.1") is None  # "!::/0" applies to IPv6 keys only


# cidr_table(5) EXAMPLE SMTPD ACCESS MAP
CIDR_MAP = """# Rule order matters. Put more specific allowlist entries
# before more general denylist entries.
192.168.1.1             OK
192.168.0.0/16          REJECT
2001:db8::1             OK
2001:db8::/32           REJECT
"""

CIDR_CASES = [
    ("192.168.1.1", "OK"),
    ("192.168.1.2", "REJECT"),
    ("192.169.1.1", None),
    ("2001:db8::1", "OK"),
    ("2001:0db8:0000::0001", "OK"),
    ("2001:db8:ffff::1", "REJECT"),
    ("2001:db9::1", None),
    ("01.168.1.1", None),
    ("[192.168.1.1]", None),
    ("not-an-address", None),
    ("::ffff:192.168.1.1", None),
]


@pytest.mark.parametrize(("key", "value"), CIDR_CASES)
async def test_cidr_man_example(tmp_path: Path, key: str, value: str | None) -> None:
    assert await table(tmp_path, "cidr", CIDR_MAP).lookup(key) == value


CIDR_RULES = [
    ("!10.0.0.0/8 outside\n", "11.0.0.1", "outside"),
    ("!10.0.0.0/8 outside\n", "10.0.0.1", None),
    ("!10.0.0.0/8 outside\n", "::1", None),
    ("if 10.0.0.0/8\n10.1.0.0/16 in\nendif\n0.0.0.0/0 any\n", "10.1.2.3", "in"),
    ("if 10.0.0.0/8\n10.1.0.0/16 in\nendif\n0.0.0.0/0 any\n", "10.2.2.3", "any"),
    ("if !10.0.0.0/8\n0.0.0.0/0 out\nendif\n", "10.2.2.3", None),
    ("[10.0.0.0]/8 b1\n", "10.2.2.3", "b1"),
    ("[10.0.0.0/8] b2\n", "10.2.2.3", "b2"),
    ("[2001:db8::]/32 b3\n", "2001:db8::5", "b3"),
    ("10.0.0.1/8 bad\n0.0.0.0/0 any\n", "10.0.0.1", "any"),
    ("10.0.0.0/33 bad\n10.0.0.0/8 ok\n", "10.0.0.1", "ok"),
]


@pytest.mark.parametrize(("rules", "key", "value"), CIDR_RULES)
async def test_cidr_rules(tmp_path: Path, rules: str, key: str, value: str | None) -> None:
    assert await table(tmp_path, "cidr", rules).lookup(key) == value


def test_cidr_warnings(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "postbus.maps"):
        table(tmp_path, "cidr", "10.0.0.1/8 x\n1.2.3.4\nendif\n").check()
    p = tmp_path / "t.cidr"
    assert caplog.messages == [
        f'cidr map {p}, line 1: non-null host address bits in "10.0.0.1/8", '
        'perhaps you should use "10.0.0.0/8" instead: skipping this rule',
        f"cidr map {p}, line 2: no lookup result: skipping this rule",
        f"cidr map {p}, line 3: ENDIF without IF: skipping this rule",
    ]
