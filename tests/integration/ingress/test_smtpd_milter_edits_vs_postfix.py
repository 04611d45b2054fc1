"""Milter modifications, our smtpd against a real Postfix: the same milter edits reach
both; the queued envelope and content must be the same (``postcat`` reads Postfix's
queue file). Where Postfix is not installed the recording in
``tests/data/postfix/smtpd_milter_edits.json`` stands in."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.ingress.conftest import BASE_MAIN_CF, StartSmtpd
from tests.integration.ingress.test_smtpd_milter import queued
from tests.integration.postfix_dialogue import LivePostfix, dialogue
from tests.milter_server import (
    CONTINUE,
    ScriptedMilter,
    addheader,
    addrcpt,
    chgfrom,
    chgheader,
    delrcpt,
    insheader,
    milter_thread,
    replbody,
)
from tests.recorded import Recording

pytestmark = pytest.mark.integration

RECORDING = Recording("smtpd_milter_edits")

EDITS = {
    "headers": [insheader(0, "X-Top", "first"), insheader(2, "X-Third", "third"),
                addheader("X-Added", "yes"), addheader("X-Multi", "one\n\ttwo"),
                chgheader(1, "Subject", "changed"), chgheader(2, "X-Dup", ""),
                chgheader(1, "Received", "not ours"), chgheader(3, "X-Dup", "added?"),
                CONTINUE],
    "envelope": [addrcpt("<extra@localhost>"), delrcpt("<b@localhost>"),
                 chgfrom("<new@example.org>"), CONTINUE],
    "body": [replbody(b"new body\r\n"), replbody(b"second part\nbare lf\r\n"), CONTINUE],
}

MSG = (b"From: a@example.org\r\nSubject: x\r\nX-Dup: 1\r\nX-Dup: 2\r\n"
       b"Message-Id: <m@example.org>\r\nDate: Mon, 30 Nov 2026 09:00:00 +0000\r\n\r\n"
       b"old body\r\n")


def script(milter: ScriptedMilter) -> ScriptedMilter:
    milter.replies["E"] = lambda data: EDITS[milter.last_sender.strip("<>").partition("@")[0]]
    return milter


def settings(milter: ScriptedMilter) -> dict[str, str]:
    return {**BASE_MAIN_CF, "mail_name": "Postbus", "mydestination": "localhost",
            "mynetworks": "127.0.0.0/8", "smtpd_milters": milter.name}


@pytest.fixture(scope="module")
def their_milter() -> Iterator[ScriptedMilter]:
    with milter_thread(script(ScriptedMilter())) as milter:
        yield milter


@pytest.fixture(scope="module")
def postfix(their_milter: ScriptedMilter) -> Iterator[LivePostfix | None]:
    with LivePostfix.running({**settings(their_milter), "defer_transports": "local",
                              "smtpd_peername_lookup": "no"}) as pf:
        yield pf


def lines(case: str) -> list[str | bytes]:
    return ["EHLO c", f"MAIL FROM:<{case}@example.org>", "RCPT TO:<a@localhost>",
            "RCPT TO:<b@localhost>", "DATA", MSG, ".", "QUIT"]


def normal(content: str) -> str:
    """Our Received: and Postfix's differ in the name and queue ID only."""
    content = re.sub(r"(?m)^(Received: from c \(unknown \[127\.0\.0\.1\]\)\n\tby "
                     r"mx\.postbus\.test \(Postbus\) with ESMTP id )\w+(;\n\t).*$",
                     r"\1QUEUEID\2DATE", content)
    return content


async def postfix_queued(live: LivePostfix, case: str) -> dict[str, object]:
    replies = await dialogue(live.port, lines(case))
    qid = re.search(r"queued as (\w+)", "\n".join(replies))
    assert qid, replies
    out = await asyncio.to_thread(
        subprocess.run, ["postcat", "-c", str(live.instance.etc), "-e", "-h", "-b", "-q",
                         qid.group(1)], capture_output=True, text=True, check=True)
    text = out.stdout
    sender = re.search(r"(?m)^sender: (.*)$", text)
    rcpts = re.findall(r"(?m)^recipient: (.*)$", text)
    content = text.split("*** MESSAGE CONTENTS", 1)[1].split("\n", 1)[1]
    content = content.split("*** HEADER EXTRACTED", 1)[0].split("*** MESSAGE FILE END", 1)[0]
    return {"sender": sender.group(1) if sender else None, "recipients": rcpts,
            "content": normal(content)}


@pytest.mark.parametrize("case", list(EDITS))
async def test_milter_edits_as_postfix(case: str, postfix: LivePostfix | None,
                                       their_milter: ScriptedMilter,
                                       smtpd: StartSmtpd) -> None:
    live = await postfix_queued(postfix, case) if postfix is not None else None
    expected = RECORDING.answer(case, None if live is None else lambda: live)
    ours = script(await ScriptedMilter().start())
    try:
        run = await smtpd(**{k: v for k, v in settings(ours).items()
                             if BASE_MAIN_CF.get(k) != v})
        replies = await dialogue(run.port, lines(case))
        reply = next(x for x in replies if "queued as" in x).split("-> ")[1]
        entry, content = await queued(run, reply)
        got = {"sender": entry.sender,  # type: ignore[attr-defined]
               "recipients": [r.address for r in entry.recipients],  # type: ignore[attr-defined]
               "content": normal(content.decode().replace("\r\n", "\n"))}
        assert got == expected
    finally:
        await ours.stop()
