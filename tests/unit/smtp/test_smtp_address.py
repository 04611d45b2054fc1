"""MAIL/RCPT argument parsing, table-driven from what Postfix 3.7 answered."""

from __future__ import annotations

import pytest

from postbus.config.loader import Config
from postbus.resolve import Resolver
from postbus.smtp import replies as r
from postbus.smtp.address import (
    ReplyError,
    parse_address,
    parse_mail,
    parse_rcpt,
    quote_local,
    split_args,
)

# (path token, internal form) -- accepted by Postfix with strict_rfc821_envelopes = no
GOOD = [
    ("<user@example.org>", "user@example.org"),
    ("user@example.org", "user@example.org"),
    ("<>", ""),
    ("< user@example.org >", "user@example.org"),
    ("<user@example.org>>", "user@example.org"),
    ("user@example.org>", "user@example.org"),
    ("<@a,@b:user@example.org>", "user@example.org"),
    ("<@a:user@example.org>", "user@example.org"),
    ('<"a b"@example.org>', "a b@example.org"),
    ('<"x\\"y"@example.org>', 'x"y@example.org'),
    ("<a\\b@example.org>", "ab@example.org"),
    ("<a(comment)@example.org>", "a@example.org"),
    ("<.a@example.org>", ".a@example.org"),
    ("<a.@example.org>", "a.@example.org"),
    ("<root>", "root"),
    ("<@localhost>", "@localhost"),
    ('<""@localhost>', "@localhost"),
    ("<user@[127.0.0.1]>", "user@[127.0.0.1]"),
    ("<user@[IPv6:::1]>", "user@[IPv6:::1]"),
    ("<user@localhost.>", "user@localhost."),
    ("<user@a_b.example>", "user@a_b.example"),
    ("<user%x@localhost>", "user%x@localhost"),
    ("<\u00e4@example.org>", "\u00e4@example.org"),
    ("<user@ex\u00e4mple.org>", "user@ex\u00e4mple.org"),
]

# refused by the parser (≈ extract_addr())
BAD = [
    "<user@example.org",
    "<<user@example.org>",
    "<a b@example.org>",
    "<a,b@example.org>",
    "<a;b@example.org>",
    "<user@exa mple.org>",
    '<"open@example.org>',
]
# parsed, then refused because the resolved address is malformed (≈ smtpd_check_addr())
BAD_RESOLVED = [
    "<a[b@example.org>",
    "<user@>",
    "<user@a..b>",
    "<user@-a.example>",
    "<user@a-.example>",
    "<user@1.2.3.4>",
    "<user@[300.1.1.1]>",
    "<user@[1.2.3]>",
    "<user@[ipv6:zz]>",
    "<user%bad..example@localhost>",
    "<user%@localhost>",
]


@pytest.mark.parametrize(("token", "internal"), GOOD)
def test_good_paths(token: str, internal: str) -> None:
    assert parse_address(token) == internal


@pytest.mark.parametrize("token", BAD)
def test_bad_paths(token: str) -> None:
    with pytest.raises(ValueError):
        parse_address(token)


@pytest.mark.parametrize("token", BAD_RESOLVED)
async def test_bad_resolved_paths(token: str) -> None:
    cfg = Config.from_text("mydestination = localhost\nmyhostname = mx.example.org\n", "")
    assert (await Resolver(cfg).resolve(parse_address(token))).error


def test_strict_rfc821_envelopes_wants_brackets() -> None:
    with pytest.raises(ValueError):
        parse_address("user@example.org", strict=True)
    assert parse_address("<user@example.org>", strict=True) == "user@example.org"


@pytest.mark.parametrize(
    ("internal", "external"),
    [
        ("user@example.org", "user@example.org"),
        ("a b@example.org", '"a b"@example.org'),
        ('x"y@example.org', '"x\\"y"@example.org'),
        (".a@example.org", '".a"@example.org'),
        ("a..b@example.org", '"a..b"@example.org'),
        ("", ""),
        ("\u00e4@example.org", "\u00e4@example.org"),
        ("a+b=c@example.org", "a+b=c@example.org"),
    ],
)
def test_quote_local(internal: str, external: str) -> None:
    assert quote_local(internal) == external


def test_split_args_keeps_brackets_and_quotes_whole() -> None:
    assert split_args('FROM:<a b@c> SIZE=1  "x y"') == ["FROM:<a b@c>", "SIZE=1", '"x y"']


MAIL_ERRORS = [
    ("", r.MAIL_SYNTAX),
    ("TO:<a@b.example>", r.MAIL_SYNTAX),
    ("FROM :<a@b.example>", r.MAIL_SYNTAX),
    ("FROM:", r.MAIL_SYNTAX),
    ("FROM:<a b@c.example>", r.BAD_SENDER_SYNTAX),
    ("FROM:<a@b.example> FOO=bar", "555 5.5.4 Unsupported option: FOO=bar"),
    ("FROM:<a@b.example> BODY=BINARYMIME", "555 5.5.4 Unsupported option: BODY=BINARYMIME"),
    ("FROM:<a@b.example> SMTPUTF8=x", "555 5.5.4 Unsupported option: SMTPUTF8=x"),
    ("FROM:<a@b.example> SIZE=abc", r.BAD_SIZE),
    ("FROM:<a@b.example> SIZE=", r.BAD_SIZE),
    ("FROM:<a@b.example> RET=bad", r.BAD_RET),
    ("FROM:<a@b.example> RET=FULL RET=HDRS", r.BAD_RET),
    ("FROM:<a@b.example> ENVID=a ENVID=b", r.BAD_ENVID),
    ("FROM:<a@b.example> ENVID=a\x01b", r.BAD_ENVID),
    ("FROM:<a@b.example> ENVID=a+zz", r.BAD_ENVID),
]


@pytest.mark.parametrize(("arg", "reply"), MAIL_ERRORS)
def test_mail_errors(arg: str, reply: str) -> None:
    with pytest.raises(ReplyError) as err:
        parse_mail(arg)
    assert err.value.reply == reply


def test_mail_parameters() -> None:
    mail = parse_mail("from: <s@example.org> size=12 SIZE=20 body=8bitmime SMTPUTF8 "
                      "RET=hdrs ENVID=a+2Bb AUTH=<>")
    assert (mail.sender, mail.size, mail.body, mail.smtputf8) == ("s@example.org", 20,
                                                                  "8BITMIME", True)
    assert (mail.ret, mail.envid) == ("HDRS", "a+b")
    assert parse_mail("FROM:<>").sender == ""


RCPT_ERRORS = [
    ("", r.RCPT_SYNTAX),
    ("FROM:<a@b>", r.RCPT_SYNTAX),
    ("TO:<>", r.BAD_RECIPIENT_SYNTAX),
    ("TO:<a@b.example> <x>", "555 5.5.4 Unsupported option: <x>"),
    ("TO:<a@b.example> NOTIFY=BOGUS", r.BAD_NOTIFY),
    ("TO:<a@b.example> NOTIFY=", r.BAD_NOTIFY),
    ("TO:<a@b.example> NOTIFY=NEVER,SUCCESS", r.BAD_NOTIFY),
    ("TO:<a@b.example> NOTIFY=SUCCESS NOTIFY=DELAY", r.BAD_NOTIFY),
    ("TO:<a@b.example> ORCPT=bad", r.BAD_ORCPT),
    ("TO:<a@b.example> ORCPT=;x", r.BAD_ORCPT),
    ("TO:<a@b.example> ORCPT=rfc822", r.BAD_ORCPT),
    ("TO:<a@b.example> ORCPT=rfc822;a ORCPT=rfc822;b", r.BAD_ORCPT),
]


@pytest.mark.parametrize(("arg", "reply"), RCPT_ERRORS)
def test_rcpt_errors(arg: str, reply: str) -> None:
    with pytest.raises(ReplyError) as err:
        parse_rcpt(arg)
    assert err.value.reply == reply


def test_rcpt_parameters() -> None:
    rcpt = parse_rcpt("TO:<u@example.org> notify=success,delay ORCPT=rfc822;o+2Bx@example.org")
    assert (rcpt.address, rcpt.notify, rcpt.orcpt) == ("u@example.org", "SUCCESS,DELAY",
                                                       "o+x@example.org")
    assert parse_rcpt("TO:<u@example.org> ORCPT=x-foo;bar").orcpt == "bar"


def test_illegal_syntax_is_logged_only_for_a_complete_token() -> None:
    """Postfix warns "Illegal address syntax" for <a b@c>, not for an unterminated <."""
    with pytest.raises(ReplyError) as err:
        parse_rcpt("TO:<a b@c.example>")
    assert err.value.bad_address == "<a b@c.example>"
    with pytest.raises(ReplyError) as err:
        parse_rcpt("TO:<a@c.example")
    assert err.value.bad_address is None
