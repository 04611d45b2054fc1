"""Differential test: the same tables and keys through real Postfix ``postmap -q -``.

Postfix runs with its own temporary config directory (compatibility_level
3.6, so SMTPUTF8 case folding is on, as in a modern install), live where it
is installed and from its recorded answers
(``tests/data/postfix/postmap_q.json``) everywhere else, so the comparison
never skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from postbus.maps.table import open_table
from tests.recorded import Recording

POSTMAP = shutil.which("postmap") or (
    "/usr/sbin/postmap" if os.access("/usr/sbin/postmap", os.X_OK) else None
)
RECORDING = Recording("postmap_q")

TEXTHASH = """# access-style table
user@example.com        OK user
User2@Example.COM       REJECT mixed case key
example.com             domain
.example.com            dot-domain
@example.org            at-domain
user+ext@example.net    extension
user@                   localpart-at
postmaster              local
1.2.3                   net
2001:db8                net6
dup                     first
DUP                     second
cont                    a
   b   c
"quoted key"            quoted
ÄBC@ex.com              utf8
strasse                 street
\tleading-tab-line      x
novalue
key:                    colon
# end
"""

REGEXP = r"""/[%!@].*[%!@]/       550 Sender-specified routing rejected
/^postmaster@/       OK
if !/^owner-/
/^(.*)-outgoing@(.*)$/  550 Use ${1}@${2} instead
endif
/^(a)(b)?c$/ r=$1$2
/^x(.*)$/ ${1}z $$ $(1)
/^y(.*)$/ $1abc
/^z(.*)/ $10
/^CaSe$/i exact-case
/^case-insens$/ folded
/^[[:digit:]]+$/ digits
/^[]x]+$/ bracket
/^a\{2\}$/x bre
/^b{2}$/ ere
/^c+d?$/x bre-literal
!/\./ no-dot
/^a/!/b$/ a-not-b
/\<word\>/ word
@^del/im@ delim
if /^nest/
if !/z/
/1$/ nest1
endif
/./ nest-any
endif
/^[^@]+@([^.]+)\.(.*)$/ $2/$1
"""

PCRE = r"""/^(\d+)\.(\d+)$/ $2.$1
/^(?:foo|bar)baz$/ alt
/^x(?=y)/ lookahead
/^(a+?)b/ lazy=$1
/^(a+)c/U ungreedy=$1
/b/A anchored
/^[[:alpha:]]+\d$/ posix-class
/^CaSe$/i exact-case
/^\Qa.b\E$/ quoted
/^(?<n>q)\k<n>$/ named
!/[aeiou]/ no-vowel
if /^nest/
/1$/ nest1
endif
/^([^@]+)@(.+)$/ user=$1 domain=$2
"""

CIDR = """192.168.1.1             OK
192.168.0.0/16          REJECT
2001:db8::1             OK
2001:db8::/32           REJECT
!10.0.0.0/8             not-ten
if 10.0.0.0/8
10.1.0.0/16             ten-one
endif
[172.16.0.0]/12         bracket1
[::ffff:0:0/96]         mapped
10.0.0.1/8              bad-host-bits
10.0.0.0/33             bad-mask
1.2.3.4
"""

INLINE = "inline:{ key=value, { key2 = text with spaces }, Mixed=Case, a=1, A=2 }"

ADDRESS_KEYS = [
    "user@example.com", "USER@EXAMPLE.COM", "User2@example.com", "user2@EXAMPLE.com",
    "example.com", "EXAMPLE.COM", ".example.com", "sub.example.com", "@example.org",
    "@EXAMPLE.ORG", "user+ext@example.net", "user@", "postmaster", "Postmaster",
    "postmaster@example.com", "owner-list-outgoing@example.com",
    "list-outgoing@example.com", "a%b@c@d", "1.2.3", "2001:db8", "dup", "Dup", "cont",
    '"quoted key"', '"QUOTED KEY"', "äbc@ex.com", "ÄBC@EX.COM", "STRASSE", "straße",
    "novalue", "key:", "key", "key2", "mixed", "MIXED", "a", "A", "leading-tab-line",
]
PATTERN_KEYS = [
    "ac", "abc", "xQ", "yq", "zq", "CaSe", "case", "CASE-INSENS", "12345", "12a", "]x]",
    "aa", "a{2}", "bb", "b{2}", "ccd", "c+d?", "cd", "nodot", "no.dot", "axc", "axb",
    "a word here", "awordhere", "DEL/x", "nest1", "nest1z", "nestx", "nosuch.thing",
    "12.34", "foobaz", "barbaz", "bazbaz", "xy", "xz", "aaab", "aaac", "ab", "ba",
    "abc1", "abc", "a.b", "axb", "qq", "QQ", "rhythm", "joe@example.com", "Joe@Sub.Example.Com",
    "ä@ö.example", "tab\there", "$1", "", " lead", "a$b",
]
CIDR_KEYS = [
    "192.168.1.1", "192.168.1.2", "192.169.0.1", "10.1.2.3", "10.2.2.3", "11.0.0.1",
    "172.16.5.5", "172.32.0.1", "2001:db8::1", "2001:DB8:0::0:1", "2001:db8::2",
    "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db9::1", "::ffff:192.168.1.1",
    "::ffff:10.1.2.3", "::1", "01.2.3.4", "1.2.3.4", "1.2.3", "[192.168.1.1]",
    "192.168.1.1 ", "example.com", "fe80::1%eth0", "1.2.3.4.5", "0x7f.0.0.1", "",
]


def postmap(case: str, spec: str, keys: list[str], config: Path) -> dict[str, str]:
    """Postfix's ``postmap -q - spec``: key -> value for the keys it found."""
    answer: dict[str, str] = RECORDING.answer(
        case, (lambda: _postmap(spec, keys, config)) if POSTMAP else None
    )
    return answer


def _postmap(spec: str, keys: list[str], config: Path) -> dict[str, str]:
    """Run ``postmap -q - spec`` once."""
    assert POSTMAP is not None
    proc = subprocess.run(
        [POSTMAP, "-q", "-", spec],
        input="".join(k + "\n" for k in keys).encode(),
        capture_output=True,
        env={**os.environ, "MAIL_CONFIG": str(config), "LANG": "C.UTF-8"},
        timeout=60,
        check=False,
    )
    assert b"fatal" not in proc.stderr, proc.stderr.decode(errors="replace")
    found: dict[str, str] = {}
    for line in proc.stdout.decode("utf-8", errors="surrogateescape").split("\n"):
        if line:
            key, _, value = line.partition("\t")
            found[key] = value
    return found


def cool_down(path: Path) -> None:
    """Backdate a new file: Postfix re-reads a "hot" file (mtime within 1s) until it cools."""
    os.utime(path, (1_000_000_000, 1_000_000_000))


@pytest.fixture
def config(tmp_path: Path) -> Path:
    cfg = tmp_path / "postfix"
    cfg.mkdir()
    (cfg / "main.cf").write_text("compatibility_level = 3.6\n")
    cool_down(cfg / "main.cf")
    return cfg


CASES = [
    ("texthash", TEXTHASH, ADDRESS_KEYS),
    ("regexp", REGEXP, ADDRESS_KEYS + PATTERN_KEYS),
    ("pcre", PCRE, ADDRESS_KEYS + PATTERN_KEYS),
    ("cidr", CIDR, CIDR_KEYS),
]


def usable(keys: list[str]) -> list[str]:
    # postmap -q - reads one key per line; empty lines are not queried.
    return [k for k in dict.fromkeys(keys) if k and "\n" not in k and "\t" not in k]


@pytest.mark.parametrize(("typ", "text", "keys"), CASES, ids=[c[0] for c in CASES])
async def test_against_postmap(tmp_path: Path, config: Path, typ: str, text: str,
                               keys: list[str]) -> None:
    path = tmp_path / f"table.{typ}"
    path.write_text(text)
    cool_down(path)
    spec = f"{typ}:{path}"
    keys = usable(keys)
    expected = postmap(typ, spec, keys, config)
    table = open_table(spec)
    ours = {k: v for k in keys if (v := await table.lookup(k)) is not None}
    assert ours == expected


@pytest.mark.parametrize("spec", [
    INLINE,
    "static:{ text with spaces }",
    "regexp:{ {/^(.*)@example\\.com$/ local=$1}, {/\\./ dotted} }",
    "cidr:{ {10.0.0.0/8 ten}, {!::/0 not-v6} }",
])
async def test_inline_specs_against_postmap(config: Path, spec: str) -> None:
    keys = usable(ADDRESS_KEYS + PATTERN_KEYS + CIDR_KEYS)
    expected = postmap(spec, spec, keys, config)
    table = open_table(spec)
    ours = {k: v for k in keys if (v := await table.lookup(k)) is not None}
    assert ours == expected
