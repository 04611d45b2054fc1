"""Our smtpd against a real Postfix: the same dialogues must get the same replies and log lines.

A private Postfix (the Debian package's binaries) runs on a loopback port
from a temporary directory with the same main.cf settings as our server,
where Postfix is installed; everywhere else Postfix's recorded answers
(``tests/data/postfix/smtpd_dialogues.json``) stand in, so the comparison
always runs. Only dialogues that never complete a DATA phase are compared
(ours has a queue writer that fails the test if called); queueing is tested
against the real bus elsewhere.
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from ingress_smtpd.server import SmtpServer
from postbus.queue.entry import QueueEntry
from postbus.smtp import replies as r
from tests.integration.ingress.conftest import BASE_MAIN_CF, make_config
from tests.integration.postfix_dialogue import READ, READ_ALL, Line, LivePostfix, compare
from tests.recorded import Recording

pytestmark = pytest.mark.integration

RECORDING = Recording("smtpd_dialogues")

SHARED = {
    **BASE_MAIN_CF,
    "mail_name": "Postbus",
    "mydestination": "localhost",
    "local_recipient_maps": "proxy:unix:passwd.byname $alias_maps",
    "message_size_limit": "20000",
    "smtpd_hard_error_limit": "100",
    "smtpd_soft_error_limit": "100",
    "smtpd_recipient_restrictions": (
        "check_recipient_access inline:{rej@localhost=REJECT, {rejtxt@localhost=REJECT go away}, "
        "def@localhost=DEFER, {num@localhost=550 no such}, {numdsn@localhost=550 5.1.1 gone}, "
        "{num4@localhost=450 wait}, ok@localhost=OK, ra@localhost=reject, da@localhost=defer, "
        "dunno@localhost=DUNNO, {bad@localhost=frobnicate}}, "
        "check_sender_access inline:{srej@example.org=REJECT}"
    ),
    # ETRN: sites eligible for a flush, and a restriction on the site named
    "fast_flush_domains": "flush.example, .parent.example",
    "smtpd_etrn_restrictions": (
        "check_etrn_access inline:{nope.flush.example=REJECT, {why.flush.example=550 not you}}, "
        "permit"
    ),
}


@pytest.fixture(scope="module")
def postfix() -> Iterator[LivePostfix | None]:
    # should a dialogue ever complete a message, Postfix keeps it rather than deliver it
    with LivePostfix.running({**SHARED, "defer_transports": "local"}) as live:
        yield live


@pytest.fixture
async def ours() -> AsyncIterator[int]:
    async def never(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        raise AssertionError("comparison dialogues must not queue")

    server = SmtpServer(make_config(**SHARED), never, listener="compare")
    bound = await server.start("127.0.0.1", 0)
    yield bound[0][1]
    await server.stop(grace=1.0)


DIALOGUES: dict[str, list[Line]] = {
    "sequence": [
        "EHLO", "EHLO client.example", "FOO", "RCPT TO:<a@localhost>", "DATA",
        "MAIL FROM:<a@b.example>", "MAIL FROM:<a@b.example>", "DATA",
        "RCPT TO:<x@elsewhere.example>", "DATA", "HELP", "EXPN root", "RSET x", "RSET",
        "NOOP x", "STARTTLS", "AUTH PLAIN", "QUIT",
    ],
    "mail_syntax": [
        "HELO", "HELO x", "MAIL FROM:<a@b.example", "MAIL FROM:", "MAIL", "MAIL TO:<a@b.example>",
        "MAIL FROM :<a@b.example>", "MAIL FROM:<a b@c.example>", "MAIL FROM:<a@b.example> FOO=bar",
        "MAIL FROM:<a@b.example> BODY=FOO", "MAIL FROM:<a@b.example> SIZE=abc",
        "MAIL FROM:<a@b.example> RET=bad", "MAIL FROM:<a@b.example> RET=FULL RET=HDRS",
        "MAIL FROM:<a@b.example> ENVID=a ENVID=b", "MAIL FROM:<a@b.example> SMTPUTF8=x",
        "MAIL FROM:a@b.example", "RSET",
        "MAIL FROM: <a@b.example> SIZE=12 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=x AUTH=<>", "RSET",
        "MAIL FROM:<a@b.example> SIZE=20001", "QUIT",
    ],
    "rcpt_syntax": [
        "EHLO c", "MAIL FROM:<>", "RCPT TO:<>", "RCPT TO:", "RCPT FROM:<a@b>",
        "RCPT TO:<root@localhost> FOO=bar", "RCPT TO:<nosuchuser@localhost>",
        "RCPT TO:<root@localhost> NOTIFY=BOGUS", "RCPT TO:<root@localhost> NOTIFY=NEVER,DELAY",
        "RCPT TO:<root@localhost> ORCPT=bad", "RCPT TO:<root@localhost> ORCPT=;x",
        "RCPT TO:<root@localhost> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;root@localhost",
        "RCPT TO:root@localhost", "RCPT TO:<@a,@b:root@localhost>", "RCPT TO:<a b@localhost>",
        'RCPT TO:<"a b"@localhost>', 'RCPT TO:<"x\\"y"@localhost>', "RCPT TO:<root@[300.1.1.1]>",
        "RCPT TO:<root@[1.2.3]>", "RCPT TO:<root@[127.0.0.1]>", "RCPT TO:<root@>",
        "RCPT TO:<root@@localhost>", "RCPT TO:<root@a..b>", "RCPT TO:<root@1.2.3.4>",
        "RCPT TO:<root@-a.example>", "RCPT TO:<a(b)@localhost>", "RCPT TO:<root@localhost> <x>",
        "RCPT TO:<root@LOCALHOST.>", "RCPT TO:<root%x@localhost>", "RCPT TO:<root>",
        "RCPT TO:< root@localhost >", "RCPT TO:<<root@localhost>", "RCPT TO:<a,b@localhost>",
        "VRFY", "VRFY root@localhost", "VRFY <root@localhost>", "VRFY nosuchuser@localhost",
        "VRFY root@localhost x", "VRFY root", "QUIT",
    ],
    "access_maps": [
        "EHLO c", "MAIL FROM:<s@example.org>",
        *[f"RCPT TO:<{u}@localhost>" for u in
          ["rej", "rejtxt", "def", "num", "numdsn", "num4", "ok", "ra", "da", "dunno", "bad"]],
        "RSET", "MAIL FROM:<srej@example.org>", "RCPT TO:<root@localhost>", "QUIT",
    ],
    "etrn": [
        "ETRN", "EHLO c", "ETRN", "ETRN example.com", "MAIL FROM:<a@b.example>", "ETRN x",
        "EHLO d", "RCPT TO:<root@localhost>", "ETRN a b", "ETRN -bad-.example", "ETRN 1.2.3.4",
        "ETRN @", "ETRN [300.1.1.1]", "ETRN a..b", "ETRN nope.flush.example",
        "ETRN @why.flush.example", "ETRN #x.parent.example.", "QUIT",
    ],
    "bdat_errors": [
        b"BDAT 5\r\nhello", READ, "MAIL FROM:<a@b.example>", "RSET", "EHLO c",
        "MAIL FROM:<a@b.example>", b"BDAT 3\r\nabc", READ, b"BDAT 4 LAST\r\nabcd", READ,
        "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>", b"BDAT 0\r\n", READ,
        b"BDAT 1 last\r\nz", READ, "RSET",
        "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>", b"BDAT 10\r\n0123456789", READ,
        "DATA", "RCPT TO:<root@localhost>", "MAIL FROM:<x@y.example>",
        b"BDAT 30000\r\n" + b"y" * 30000, READ, b"BDAT 2 LAST\r\nxy", READ,
        "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>",
        b"BDAT 19990\r\n" + (b"x" * 8 + b"\n") * 2221 + b"x", READ,
        b"BDAT 5 LAST\r\nhello", READ, "RSET", "QUIT",
    ],
    "bdat_bad_count": ["EHLO c", "MAIL FROM:<a@b.example>", "BDAT 10 NOTLAST"],
    "bdat_no_count": ["EHLO c", "BDAT"],
    "bdat_negative": ["BDAT -1"],
    "bdat_huge": ["BDAT 99999999999999999999"],
    "bdat_lost_in_chunk": [
        "EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>",
        b"BDAT 100\r\nSubject: x\r\n\r\nline\r\npart",
    ],
    "bdat_lost_after_chunk": [
        "EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>",
        b"BDAT 19\r\nSubject: x\r\n\r\nab\r\nc", READ,
    ],
    "bdat_chunk_shorter_than_count": [
        "EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>",
        b"BDAT 10\r\nabc\r\nQUIT\r\n", READ, READ, "RSET", "QUIT",
    ],
    "bdat_chunk_longer_than_count": [
        "EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>",
        b"BDAT 3\r\nabcdef\r\n", READ, READ, b"BDAT 2\r\nxy", READ, "RSET", "QUIT",
    ],
    "bdat_pipelined": [
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<root@localhost>\r\n"
        b"BDAT 6\r\nline\r\nBDAT 3\r\nab\nRSET\r\nQUIT\r\n",
        READ_ALL,
    ],
    "long_lines": [
        "EHLO c", "NOOP " + "x" * 5000, "MAIL FROM:<" + "a" * 3000 + "@b.example>", "QUIT",
    ],
    "too_big_at_data": [
        "EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>", "DATA",
        b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 400, ".", "QUIT",
    ],
    "pipelined": [
        b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<root@localhost>\r\n"
        b"RCPT TO:<x@elsewhere.example>\r\nRSET\r\nNOOP\r\nQUIT\r\n",
        READ_ALL,
    ],
    "too_many_errors": ["EHLO c", *["FOO"] * 101],
    "blank_commands": ["", " ", "\t", "\x00NOOP", "NOOP", "QUIT"],
    "lost_in_data": [
        "EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>", "DATA",
        b"Subject: x\r\n\r\npartial", "NOOP",
    ],
}


@pytest.mark.parametrize("name", list(DIALOGUES))
async def test_same_replies_and_log_as_postfix(
    name: str, postfix: LivePostfix | None, ours: int, caplog: pytest.LogCaptureFixture
) -> None:
    lines = DIALOGUES[name]
    if name == "lost_in_data":  # the client hangs up in the middle of DATA
        lines = lines[:-1]
    expected, got = await compare(RECORDING, name, lines, ours, postfix, caplog)
    assert got["replies"] == expected["replies"]
    diff = "\n".join(difflib.unified_diff(expected["log"], got["log"], "postfix", "postbus",
                                          lineterm=""))
    assert got["log"] == expected["log"], diff


def test_replies_module_matches_what_postfix_said() -> None:
    """A few recorded constants, spelled out, so a typo in replies.py cannot hide."""
    assert r.UNRECOGNIZED == "500 5.5.2 Error: command not recognized"
    assert r.NO_VALID_RECIPIENTS == "554 5.5.1 Error: no valid recipients"
    assert r.EHLO_SYNTAX == "501 Syntax: EHLO hostname"
