"""main.cf: parsing with Postfix's line rules, and postconf -e/-X/-# edits."""

from __future__ import annotations

import pytest

from postbus.config.conv import ConfigError
from postbus.config.main_cf import MainCf

TEXT = """\
# head comment
myhostname = mx.example.com
mydestination = $myhostname,
      localhost
# comment inside a continuation is skipped
\t  example.net   \n\

 example.org
relayhost=[relay.example.com]:587 # not a comment
   # indented comment
myorigin   =   \n\
  example.com
empty =
mydestination_x = {a} b
"""


def test_values_and_lines() -> None:
    cf = MainCf(TEXT, "/etc/postbus/main.cf")
    assert cf.values == {
        "myhostname": "mx.example.com",
        # continuation lines keep their leading blanks, as Postfix's readlline
        "mydestination": "$myhostname,      localhost\t  example.net example.org",
        "relayhost": "[relay.example.com]:587 # not a comment",
        "myorigin": "example.com",
        "empty": "",
        "mydestination_x": "{a} b",
    }
    assert [(e.name, e.line, e.end) for e in cf.entries] == [
        ("myhostname", 2, 3),
        ("mydestination", 3, 9),
        ("relayhost", 9, 10),
        ("myorigin", 11, 13),
        ("empty", 13, 14),
        ("mydestination_x", 14, 15),
    ]


def test_last_setting_wins() -> None:
    cf = MainCf("a = 1\nb = 2\na = 3\n")
    assert cf.get("a") == "3"
    entry = cf.entry("a")
    assert entry is not None and entry.line == 3
    assert cf.duplicates() == ["a"]
    assert cf.names() == ["b", "a"]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("a = 1\nfoo\n", 2, "missing '=' after attribute name"),
        ("a = 1\n= x\n", 2, "missing attribute name"),
        ("a b = 1\n", 1, "whitespace in attribute name"),
        ("a = 1\n\n\nfoo\n  bar\n", 4, 'missing \'=\' after attribute name: "foo  bar"'),
    ],
)
def test_syntax_errors_name_file_and_line(text: str, line: int, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        MainCf(text, "/etc/postbus/main.cf")
    assert str(info.value).startswith(f"/etc/postbus/main.cf, line {line}: ")
    assert reason in str(info.value)


def test_render_round_trip_is_exact() -> None:
    assert MainCf(TEXT).render() == TEXT
    assert MainCf("").render() == ""
    assert MainCf("a = b").render() == "a = b\n"


EDIT_IN = "# head\nrelayhost = a\n   b\nmyorigin = x\nrelayhost = c\n# tail\n"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # The expected texts are what Postfix 3.7 postconf -e/-X/-# write.
        (lambda cf: cf.set("relayhost", "new"),
         "# head\nrelayhost = new\nmyorigin = x\nrelayhost = new\n# tail\n"),
        (lambda cf: cf.comment_out("relayhost"),
         "# head\n#relayhost = a\n#   b\nmyorigin = x\n#relayhost = c\n# tail\n"),
        (lambda cf: cf.remove("relayhost"), "# head\nmyorigin = x\n# tail\n"),
        (lambda cf: (cf.set("newparam", "zz"), cf.set("myorigin", "q")),
         "# head\nrelayhost = a\n   b\nmyorigin = q\nrelayhost = c\n# tail\nnewparam = zz\n"),
        (lambda cf: cf.set("myorigin", ""),
         "# head\nrelayhost = a\n   b\nmyorigin = \nrelayhost = c\n# tail\n"),
        (lambda cf: cf.remove("nothere"), EDIT_IN),
    ],
)
def test_edits_match_postconf(edit: object, expected: str) -> None:
    cf = MainCf(EDIT_IN)
    edit(cf)  # type: ignore[operator]
    assert cf.render() == expected
    reread = MainCf(cf.render())
    assert reread.values == cf.values


def test_edit_keeps_comment_inside_continuation() -> None:
    cf = MainCf("a = 1,\n# note\n  2\nb = 3\n")
    cf.set("a", "9")
    assert cf.render() == "a = 9\n# note\nb = 3\n"
    assert cf.values == {"a": "9", "b": "3"}


def test_set_rejects_bad_name() -> None:
    with pytest.raises(ConfigError):
        MainCf("").set("bad name", "x")
