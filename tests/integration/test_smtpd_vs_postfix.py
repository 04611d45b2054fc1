"""Our smtpd against a real Postfix: the same dialogues must get the same replies and log lines.

A private Postfix (the Debian package's binaries) runs on a loopback port
from a temporary directory with the same main.cf settings as our server.
Only dialogues that never complete a DATA phase are compared (ours has a
queue writer that fails the test if called); queueing is tested against
the real bus elsewhere.  Skipped when no ``postfix`` binary is installed
or when not running as root (Postfix's master must start as root).
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from ingress_smtpd.server import SmtpServer
from postbus.queue.entry import QueueEntry
from postbus.servers import free_port, wait_port
from postbus.smtp import replies as r
from tests.integration.ingress.conftest import BASE_MAIN_CF, Client, make_config
from tests.postfix_instance import PostfixInstance

pytestmark = pytest.mark.integration

POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if os.path.exists("/usr/sbin/postfix")
                                      else None)

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
}


@pytest.fixture(scope="module")
def postfix() -> Iterator[tuple[int, Path]]:
    if POSTFIX is None:
        pytest.skip("the postfix binary is not installed: cannot compare with a real Postfix")
    port = free_port()
    instance = PostfixInstance(port, {
        **SHARED,
        "smtpd_discard_ehlo_keywords": "chunking",  # we do not offer BDAT
    })
    instance.start()
    try:
        wait_port("127.0.0.1", port, 20)
        maillog = instance.maillog
        deadline = time.monotonic() + 10  # let the port probe's session end in the log
        while time.monotonic() < deadline and (
            not maillog.exists() or "disconnect from" not in maillog.read_text(errors="replace")
        ):
            time.sleep(0.05)
        yield port, maillog
    finally:
        instance.stop()


@pytest.fixture
async def ours() -> AsyncIterator[int]:
    async def never(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        raise AssertionError("comparison dialogues must not queue")

    server = SmtpServer(make_config(**SHARED), never, listener="compare")
    bound = await server.start("127.0.0.1", 0)
    yield bound[0][1]
    await server.stop(grace=1.0)


READ_ALL = "<read all replies until the server closes>"


async def dialogue(port: int, lines: list[str | bytes]) -> list[str]:
    """Banner, then one reply per str line; bytes are sent without waiting for a reply."""
    client = await Client.connect(port)
    out = [await client.reply()]
    for line in lines:
        if line == READ_ALL:
            while not out[-1].endswith("<EOF>"):
                out.append(await client.reply())
            break
        if isinstance(line, bytes):
            await client.send(line)
            continue
        await client.send(line + "\r\n")
        out.append(f"{line[:60]} -> {await client.reply()}")
        if out[-1].endswith("<EOF>") or out[-1].split("-> ")[1][:3] in ("221", "421"):
            break
    await client.close()
    return out


_PREFIX = re.compile(r"^.*? postfix/smtpd\[(\d+)\]: ")
_QID = re.compile(r"^[0-9A-F]{6,}: ")


def postfix_log(maillog: Path, start: int) -> list[str]:
    """smtpd lines since offset ``start``, as message texts; queue IDs read NOQUEUE."""
    deadline = time.monotonic() + 10
    while True:
        text = maillog.read_text(errors="replace")[start:]
        if "disconnect from" in text[text.rfind("connect from") - 3 :] or (
            time.monotonic() > deadline
        ):
            break
        time.sleep(0.05)
    lines: list[str] = []
    pid = ""
    for line in text.splitlines():
        prefix = _PREFIX.match(line)
        if prefix is None:
            continue
        msg = line[prefix.end() :]
        if msg.startswith("connect from"):
            lines, pid = [], prefix.group(1)  # the last session: not the fixture's port probe
        if prefix.group(1) != pid:
            continue
        if re.match(r"^[0-9A-F]{6,}: client=", msg):
            continue  # Postfix opens its queue file at the first accepted RCPT; we at the end
        if msg.startswith("discarding EHLO keywords"):
            continue  # from smtpd_discard_ehlo_keywords = chunking, set for Postfix only
        lines.append(_QID.sub("NOQUEUE: ", msg.replace("warning: ", "", 1)))
        if msg.startswith("warning: "):
            lines[-1] = "warning: " + lines[-1]
    return lines


DIALOGUES: dict[str, list[str | bytes]] = {
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
        "EHLO d", "RCPT TO:<root@localhost>", "QUIT",
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
    "lost_in_data": [
        "EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>", "DATA",
        b"Subject: x\r\n\r\npartial", "NOOP",
    ],
}


@pytest.mark.parametrize("name", list(DIALOGUES))
async def test_same_replies_and_log_as_postfix(
    name: str, postfix: tuple[int, Path], ours: int, caplog: pytest.LogCaptureFixture
) -> None:
    pf_port, maillog = postfix
    lines = DIALOGUES[name]
    if name == "lost_in_data":  # the client hangs up in the middle of DATA
        lines = lines[:-1]
    start = maillog.stat().st_size if maillog.exists() else 0
    expected = await dialogue(pf_port, lines)
    caplog.set_level(logging.INFO, "postbus.smtpd")
    got = await dialogue(ours, lines)
    for _ in range(100):
        if any(rec.getMessage().startswith("disconnect from") for rec in caplog.records):
            break
        await asyncio.sleep(0.02)
    assert got == expected
    pf_lines = await asyncio.to_thread(postfix_log, maillog, start)
    our_lines = [
        ("warning: " if rec.levelno == logging.WARNING else "") + rec.getMessage()
        for rec in caplog.records
        if rec.name == "postbus.smtpd"
    ]
    diff = "\n".join(difflib.unified_diff(pf_lines, our_lines, "postfix", "postbus", lineterm=""))
    assert our_lines == pf_lines, diff


def test_replies_module_matches_what_postfix_said() -> None:
    """A few recorded constants, spelled out, so a typo in replies.py cannot hide."""
    assert r.UNRECOGNIZED == "500 5.5.2 Error: command not recognized"
    assert r.NO_VALID_RECIPIENTS == "554 5.5.1 Error: no valid recipients"
    assert r.EHLO_SYNTAX == "501 Syntax: EHLO hostname"
