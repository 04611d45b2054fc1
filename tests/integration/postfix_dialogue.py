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
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from postbus.servers import free_port, wait_port
from tests import postfix_instance
from tests.integration.ingress.conftest import Client
from tests.recorded import Recording

READ_ALL = "<read all replies until the server closes>"
READ = "<read one reply>"
NO_BANNER = "<first step: do not wait for the banner>"


@dataclass(frozen=True)
class Tls:
    """A dialogue step: the client's TLS handshake (after STARTTLS's 220) with this context."""

    context: ssl.SSLContext


@dataclass(frozen=True)
class Wait:
    """A dialogue step: send nothing and wait for the server to end the session."""

    seconds: float


Line = str | bytes | Tls | Wait


async def dialogue(port: int, lines: list[Line], tls: ssl.SSLContext | None = None) -> list[str]:
    """Banner, then one reply per str line; bytes are sent without waiting for a reply.
    ``tls``: TLS from the start (wrapper mode)."""
    try:
        client = await Client.connect(port, tls)
    except (ssl.SSLError, ConnectionError) as exc:
        return [f"<TLS handshake failed: {exc.__class__.__name__}>"]
    out = []
    if lines[:1] == [NO_BANNER]:
        lines = lines[1:]
    else:
        out.append(await client.reply())
    for line in lines:
        if line == READ_ALL:
            while not out or not out[-1].endswith("<EOF>"):
                try:
                    out.append(await client.reply())
                except ConnectionResetError:  # unread input makes a close a reset
                    out.append("<EOF>")
            break
        if line == READ:
            out.append(f"<read> -> {await client.reply()}")
            continue
        if isinstance(line, Tls):
            try:
                await client.starttls(line.context)
                out.append("<TLS handshake done>")
            except (ssl.SSLError, ConnectionError, OSError) as exc:
                out.append(f"<TLS handshake failed: {exc.__class__.__name__}>")
                break
            continue
        if isinstance(line, Wait):
            try:
                out.append(f"<wait> -> {await client.reply(timeout=line.seconds)}")
            except ConnectionResetError:  # unread input makes a close a reset
                out.append("<wait> -> <EOF>")
            continue
        if isinstance(line, bytes):
            await client.send(line)
            continue
        try:
            await client.send(line + "\r\n")
            reply = await client.reply()
        except (ConnectionResetError, BrokenPipeError):  # closed with this line unread
            reply = "<EOF>"
        out.append(f"{line[:60]} -> {reply}")
        if out[-1].endswith("<EOF>") or out[-1].split("-> ")[1][:3] in ("221", "421", "521"):
            break
    await client.close()
    return out


_PREFIX = re.compile(r"^.*? postfix/smtpd\[(\d+)\]: ")
_QID = re.compile(r"^[0-9A-F]{6,}: ")
_QUEUED_AS = re.compile(r"queued as [0-9A-Za-z]+$")
#: OpenSSL's error queue gives Postfix the source file and line of an error; Python's
#: ssl module does not give them to us: compared without them.
_LIBRARY_PROBLEM = re.compile(r"^(warning: TLS library problem: error:[0-9A-F]{8}:[^:]*::[^:]*)"
                              r":[^:]*:\d+:.*$")


def normalize(lines: list[str]) -> list[str]:
    """What differs between two faithful servers: queue IDs, OpenSSL source lines."""
    out = []
    for line in lines:
        if re.match(r"^[0-9A-Za-z]{6,}: client=", line):
            continue  # Postfix opens its queue file at the first accepted RCPT; we at the end
        line = _LIBRARY_PROBLEM.sub(r"\1", line)
        out.append(_QUEUED_AS.sub("queued as QUEUEID", line))
    return out


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
        lines.append(_QID.sub("NOQUEUE: ", msg.removeprefix("warning: ")))
        if msg.startswith("warning: "):
            lines[-1] = "warning: " + lines[-1]
    return normalize(lines)




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

    async def dialogue(
        self, lines: list[Line], tls: ssl.SSLContext | None = None
    ) -> dict[str, list[str]]:
        start = self.maillog.stat().st_size if self.maillog.exists() else 0
        replies = normalize(await dialogue(self.port, lines, tls))
        log = await asyncio.to_thread(postfix_log, self.maillog, start)
        return {"replies": replies, "log": log}


async def compare(
    recording: Recording,
    case: str,
    lines: list[Line],
    ours: int,
    live: LivePostfix | None,
    caplog: pytest.LogCaptureFixture,
    tls: ssl.SSLContext | None = None,
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """(Postfix's replies and log, ours) for one dialogue (``tls``: wrapper mode)."""
    answer = await live.dialogue(lines, tls) if live is not None else None
    expected = recording.answer(case, None if answer is None else lambda: answer)
    caplog.clear()
    caplog.set_level(logging.INFO, "postbus.smtpd")
    replies = normalize(await dialogue(ours, lines, tls))
    for _ in range(250):
        if any(rec.getMessage().startswith("disconnect from") for rec in caplog.records):
            break
        await asyncio.sleep(0.02)
    log = normalize([
        ("warning: " if rec.levelno == logging.WARNING else "") + rec.getMessage()
        for rec in caplog.records
        if rec.name == "postbus.smtpd"
    ])
    return expected, {"replies": replies, "log": log}
