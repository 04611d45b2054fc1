"""smtpd_milters, our smtpd against a real Postfix: both talk to a scripted milter of their
own (the same script), run the same dialogues, and must give the same SMTP replies, the
same smtpd log lines and send the milter the same events and macros. Where Postfix is
not installed the recordings in ``tests/data/postfix/smtpd_milter.json`` stand in."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator

import pytest

from tests.integration.ingress.conftest import BASE_MAIN_CF, StartSmtpd
from tests.integration.postfix_dialogue import Line, LivePostfix, compare
from tests.milter_server import (
    CONTINUE,
    DISCARD,
    REJECT,
    TEMPFAIL,
    ScriptedMilter,
    milter_thread,
    pkt,
    quarantine,
    replycode,
)
from tests.recorded import LogMasked

pytestmark = pytest.mark.integration

RECORDING = LogMasked("smtpd_milter", lambda log: normal(log))  # defined below

BY_LOCAL = {
    "rej": [REJECT], "temp": [TEMPFAIL], "code": [replycode("553 5.1.8 sender refused")],
    "multi": [replycode("550-5.7.1 first line\r\n550 5.7.1 second line")],
    "pct": [replycode("550 5.7.1 100%% sure")], "bad": [replycode("250 2.0.0 fine")],
    "disc": [DISCARD], "quar": [quarantine("look at it"), CONTINUE],
    "shut": [pkt(b"4")], "junk": [pkt(b"c", b"x")],
}


def local(data: bytes) -> str:
    return data.split(b"\0")[0].decode().strip("<>").partition("@")[0]


def script(milter: ScriptedMilter) -> ScriptedMilter:
    def stage(prefix: str) -> object:
        def decide(data: bytes) -> list[bytes] | str:
            name = local(data)
            return BY_LOCAL[name[len(prefix):]] if name.startswith(prefix) else [CONTINUE]
        return decide

    def eom(data: bytes) -> list[bytes] | str:
        name = local(milter.last_sender.encode())
        return BY_LOCAL[name[1:]] if name.startswith("e") and name[1:] in BY_LOCAL \
            else [CONTINUE]

    milter.replies.update({"H": stage("h"), "M": stage("m"), "R": stage("r"), "E": eom})
    return milter


def settings(milter: ScriptedMilter) -> dict[str, str]:
    return {**BASE_MAIN_CF, "mail_name": "Postbus", "mydestination": "localhost",
            "mynetworks": "127.0.0.0/8", "smtpd_hard_error_limit": "100",
            "smtpd_milters": milter.name, "milter_macro_v": "Postbus"}


MSG = b"Subject: x\r\nFrom: a@example.org\r\n\r\nbody\r\n"


def message(sender: str) -> list[Line]:
    return [f"MAIL FROM:<{sender}@example.org>", "RCPT TO:<ok@localhost>", "DATA", MSG, "."]


DIALOGUES: dict[str, list[Line]] = {
    "envelope": [
        "EHLO c", "MAIL FROM:<mrej@example.org>", "MAIL FROM:<mtemp@example.org>",
        "MAIL FROM:<mcode@example.org>", "MAIL FROM:<mmulti@example.org>",
        "MAIL FROM:<mpct@example.org>", "MAIL FROM:<s@example.org>",
        "RCPT TO:<rrej@localhost>", "RCPT TO:<rtemp@localhost>", "RCPT TO:<rcode@localhost>",
        "RCPT TO:<ok@localhost>", "RSET", "QUIT",
    ],
    "end_of_message": [
        "EHLO c", *message("erej"), "RSET", *message("etemp"), "RSET", *message("ecode"),
        "RSET", *message("emulti"), "RSET", *message("edisc"), *message("equar"),
        *message("s"), "QUIT",
    ],
    "bad_reply": ["EHLO c", "MAIL FROM:<mbad@example.org>", "MAIL FROM:<s@example.org>",
                  "QUIT"],
    "bad_packet": ["EHLO c", "MAIL FROM:<mjunk@example.org>", "MAIL FROM:<s@example.org>",
                   "QUIT"],
    "shutdown": ["EHLO c", "MAIL FROM:<mshut@example.org>", "NOOP"],
    # a reject at HELO/EHLO is not sent (Sendmail): it persists for what follows
    "helo_reject": ["EHLO hrej", "VRFY root@localhost", "ETRN example.com",
                    "MAIL FROM:<s@example.org>", "STARTTLS", "AUTH PLAIN", "EHLO c",
                    "MAIL FROM:<s@example.org>", "QUIT"],
    "helo_tempfail": ["HELO htemp", "VRFY root@localhost", "STARTTLS",
                      "MAIL FROM:<s@example.org>", "QUIT"],
    "helo_shutdown": ["EHLO hshut", "NOOP"],
    "unknown_command": ["EHLO c", "FOO bar", "QUIT"],
}

_STABLE = re.compile(r"^(i|_|\{daemon_addr\}|\{client_port\})$")


def events(milter: ScriptedMilter) -> list[str]:
    """What the milter was sent: event, data and macros (varying values masked)."""
    out = []
    for event, data, macros in milter.events:
        if event == "C":  # the port
            data = data[:data.index(b"\0") + 2] + b"PORT" + data[data.index(b"\0") + 4:]
        if event == "L" and data.split(b"\0")[0] in (b"Message-Id", b"Date"):
            data = data.split(b"\0")[0] + b"\0VALUE\0"
        shown = {k: ("X" if _STABLE.match(k) else v) for k, v in sorted(macros.items())}
        out.append(f"{event} {data!r} {shown}")
    return out


@pytest.fixture(scope="module")
def their_milter() -> Iterator[ScriptedMilter]:
    with milter_thread(script(ScriptedMilter())) as milter:
        yield milter


@pytest.fixture(scope="module")
def postfix(their_milter: ScriptedMilter) -> Iterator[LivePostfix | None]:
    with LivePostfix.running({**settings(their_milter), "defer_transports": "local",
                              "smtpd_peername_lookup": "no"}) as pf:
        yield pf


def normal(lines: list[str]) -> list[str]:
    lines = [re.sub(r"^[0-9A-F]{6,}: ", "NOQUEUE: ", line) for line in lines]
    return [re.sub(r"inet:127\.0\.0\.1:\d+", "inet:127.0.0.1:PORT", line) for line in lines]


@pytest.mark.parametrize("name", list(DIALOGUES))
async def test_milter_replies_as_postfix(
    name: str, postfix: LivePostfix | None, their_milter: ScriptedMilter, smtpd: StartSmtpd,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ours = script(await ScriptedMilter().start())
    try:
        run = await smtpd(**{k: v for k, v in settings(ours).items()
                             if BASE_MAIN_CF.get(k) != v})
        their_milter.events.clear()
        expected, got = await compare(RECORDING, name, DIALOGUES[name], run.port, postfix,
                                      caplog)
        assert got["replies"] == expected["replies"]
        want, have = normal(expected["log"]), normal(got["log"])
        assert have == want, "\n".join(difflib.unified_diff(want, have, "postfix", "postbus",
                                                            lineterm=""))
        theirs = RECORDING.answer(f"{name}:events",
                                  None if postfix is None else lambda: events(their_milter))
        mine = events(ours)
        assert mine == theirs, "\n".join(difflib.unified_diff(theirs, mine, "postfix",
                                                             "postbus", lineterm=""))
    finally:
        await ours.stop()
