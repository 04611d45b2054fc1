"""Talking to our smtpd and to a private real Postfix with the same dialogue.

:class:`LivePostfix` runs Debian's Postfix on a loopback port (see
``tests/postfix_instance.py``) when it is installed and we are root;
:func:`compare` plays one dialogue against our server and gives Postfix's
replies and smtpd log lines: live where Postfix runs (checked against the
recording), else from the recording (``tests/recorded.py``), so the
comparison runs everywhere.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from postbus.servers import free_port, wait_port
from tests import postfix_instance
from tests.integration.ingress.conftest import Client
from tests.recorded import Recording

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



Line = str | bytes


class LivePostfix:
    """A private Postfix with the given main.cf settings, ready for dialogues."""

    def __init__(self, settings: dict[str, str]) -> None:
        self.port = free_port()
        self.instance = postfix_instance.PostfixInstance(self.port, settings)
        self.maillog = self.instance.maillog

    @classmethod
    @contextmanager
    def running(cls, settings: dict[str, str]) -> Iterator[LivePostfix | None]:
        """The instance, or None where Postfix cannot run here (recordings are used)."""
        if not postfix_instance.available():
            yield None
            return
        live = cls(settings)
        live.instance.start()
        try:
            wait_port("127.0.0.1", live.port, 20)
            deadline = time.monotonic() + 10  # let the port probe's session end in the log
            while time.monotonic() < deadline and (
                not live.maillog.exists()
                or "disconnect from" not in live.maillog.read_text(errors="replace")
            ):
                time.sleep(0.05)
            yield live
        finally:
            live.instance.stop()

    async def dialogue(self, lines: list[Line]) -> dict[str, list[str]]:
        start = self.maillog.stat().st_size if self.maillog.exists() else 0
        replies = await dialogue(self.port, lines)
        log = await asyncio.to_thread(postfix_log, self.maillog, start)
        return {"replies": replies, "log": log}


async def compare(
    recording: Recording,
    case: str,
    lines: list[Line],
    ours: int,
    live: LivePostfix | None,
    caplog: pytest.LogCaptureFixture,
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(Postfix's replies and log, ours) for one dialogue."""
    answer = await live.dialogue(lines) if live is not None else None
    expected = recording.answer(case, None if answer is None else lambda: answer)
    caplog.clear()
    caplog.set_level(logging.INFO, "postbus.smtpd")
    replies = await dialogue(ours, lines)
    for _ in range(250):
        if any(rec.getMessage().startswith("disconnect from") for rec in caplog.records):
            break
        await asyncio.sleep(0.02)
    log = [
        ("warning: " if rec.levelno == logging.WARNING else "") + rec.getMessage()
        for rec in caplog.records
        if rec.name == "postbus.smtpd"
    ]
    return expected, {"replies": replies, "log": log}
