"""header_checks, mime_header_checks, nested_header_checks and body_checks: our
smtpd against a real Postfix with the same tables, message by message.

Compared: the reply at the end of DATA; what is queued (the header lines after
PREPEND, REPLACE and IGNORE, and the body), in which queue (hold or not); and
cleanup's log lines (reject, warning, info, hold, discard, replace, prepend,
redirect, bcc), with queue IDs and dates taken out. Postfix keeps its mail
(``defer_transports = local``); ``postcat`` reads its queue files.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingress_smtpd.server import SmtpServer
from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry
from tests.integration.ingress.conftest import BASE_MAIN_CF, make_config
from tests.integration.postfix_dialogue import LivePostfix, dialogue
from tests.recorded import Recording

pytestmark = pytest.mark.integration

RECORDING = Recording("content_checks")
HEADER_CHECKS = r"""
/^Subject: reject me/ REJECT go away
/^Subject: default reject/ REJECT
/^Subject: later/ REJECT 4.7.0 try later
/^Subject: own code/ REJECT 5.7.9 with its own code
/^Subject: discard me/ DISCARD gone
/^Subject: hold me/ HOLD look at it
/^Subject: warn me/ WARN careful
/^Subject: info me/ INFO noted
/^Subject: redirect me/ REDIRECT other@localhost
/^Subject: copy me/ BCC archive@localhost
/^Subject: (tag me)$/ REPLACE Subject: [tagged] $1
/^X-Secret:/ IGNORE
/^X-Mailer:/ PREPEND X-Flagged: yes
/^X-Fold: first.*second$/ WARN folded header seen whole
/^Content-Disposition:.*\.exe/ REJECT no executables
/^Subject: nested bad/ REJECT nested subject
/broken(/ REJECT never
/^X-After-Broken:/ WARN rules after a broken line apply
"""
BODY_CHECKS = r"""
/^viagra/ REJECT spam body
/^drop this line$/ IGNORE
/^old text$/ REPLACE new text
/^warn body/ WARN body looked at
"""
_QID = re.compile(r"\b[0-9A-F]{10,12}\b")
_DATE = re.compile(r"[A-Z][a-z]{2}, +\d+ [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}"
                   r"( \([A-Z]+\))?")
_ACTION = re.compile(r"^\S+: (reject|warning|info|hold|discard|replace|prepend|redirect|bcc)"
                     r": (header|body|mime-error) ")
_CLEANUP = re.compile(r"^.*? postfix/cleanup\[\d+\]: (.*)$")
_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")
_DEEP = b"".join(b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)
                 for i in range(105))

MESSAGES: list[tuple[str, bytes]] = [
    ("reject", b"Subject: reject me\r\n\r\nhi\r\n"),
    ("default_reject", b"Subject: default reject\r\n\r\nhi\r\n"),
    ("defer", b"Subject: later\r\n\r\nhi\r\n"),
    ("own_code", b"Subject: own code\r\n\r\nhi\r\n"),
    ("discard", b"Subject: discard me\r\n\r\nhi\r\n"),
    ("hold", b"Subject: hold me\r\n\r\nhi\r\n"),
    ("warn_info", b"Subject: warn me\r\nX-Fold: first\r\n\tsecond\r\n\r\nwarn body\r\n"),
    ("info", b"Subject: info me\r\nX-After-Broken: 1\r\n\r\nhi\r\n"),
    ("redirect", b"Subject: redirect me\r\n\r\nhi\r\n"),
    ("bcc", b"Subject: copy me\r\n\r\nhi\r\n"),
    ("edits", b"Subject: tag me\r\nX-Secret: one\r\n\ttwo\r\nX-Mailer: m\r\n\r\n"
              b"keep\r\ndrop this line\r\nold text\r\nX-Secret: body\r\n"),
    ("body_reject", b"Subject: fine\r\n\r\nfirst\r\nviagra now\r\n"),
    ("mime_part", b"Subject: parts\r\nMIME-Version: 1.0\r\n"
                  b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n"
                  b"Content-Type: application/octet-stream\r\n"
                  b"Content-Disposition: attachment; filename=\"a.exe\"\r\n\r\nAAAA\r\n"
                  b"--XX--\r\n"),
    ("nested", b"Subject: outer\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n"
               b"Content-Type: message/rfc822\r\n\r\nSubject: nested bad\r\n\r\ninner\r\n"
               b"--XX--\r\n"),
    ("mime_bomb", b"Subject: deep\r\nMIME-Version: 1.0\r\n" + _DEEP + b"\r\nend\r\n"),
    ("huge_header", b"Subject: " + b"x" * 110 * 1024 + b"\r\nX-Mailer: after\r\n\r\nhi\r\n"),
    ("huge_folded_header", b"X-Long: start\r\n" + b"\tfold fold fold fold\r\n" * 6000
                           + b"Subject: warn me\r\n\r\nhi\r\n"),
    ("wide_mime", b"Subject: wide\r\nMIME-Version: 1.0\r\n"
                  b"Content-Type: multipart/mixed; boundary=w\r\n\r\n"
                  + b"".join(b"--w\r\nX-Part: %d\r\n\r\nbody\r\n" % i for i in range(2000))
                  + b"--w--\r\n"),
]


@pytest.fixture(scope="module")
def settings() -> Iterator[dict[str, str]]:
    tables = Path(tempfile.mkdtemp(prefix="postbus-checks-"))
    tables.chmod(0o755)
    (tables / "header_checks").write_text(HEADER_CHECKS)
    (tables / "body_checks").write_text(BODY_CHECKS)
    yield {**BASE_MAIN_CF, "mail_name": "Postbus", "mydestination": "localhost",
           "local_recipient_maps": "", "header_checks": f"regexp:{tables}/header_checks",
           "body_checks": f"regexp:{tables}/body_checks"}
    shutil.rmtree(tables, ignore_errors=True)


@pytest.fixture(scope="module")
def postfix(settings: dict[str, str]) -> Iterator[LivePostfix | None]:
    with LivePostfix.running({**settings, "defer_transports": "local"}) as live:
        yield live


@pytest.fixture
async def ours(settings: dict[str, str], store: Bus) -> AsyncIterator[tuple[int, Bus]]:
    async def write(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        return await store.queue.enqueue(entry, b"", False, build=build,
                                         queue_id=entry.queue_id)

    server = SmtpServer(make_config(**settings), write, listener="compare")
    port = (await server.start("127.0.0.1", 0))[0][1]
    yield port, store
    await server.stop(grace=1.0)


def steps(message: bytes) -> list[Any]:
    return ["EHLO client.example", "MAIL FROM:<s@example.org>", "RCPT TO:<root@localhost>",
            "DATA", message, ".", "QUIT"]


def kept_headers(content: str) -> list[str]:
    """The header lines a check may change: all but the Received: header and the
    ones cleanup adds (Message-Id:, Date:, From:)."""
    out: list[str] = []
    skip = False
    for line in content.replace("\r\n", "\n").partition("\n\n")[0].split("\n"):
        if line[:1] in (" ", "\t"):
            if not skip:
                out.append(line)
            continue
        skip = line.split(":")[0].lower() in ("received", "message-id", "date", "from")
        if not skip:
            out.append(line)
    return out


def normalized(line: str) -> str:
    return _DATE.sub("DATE", _QID.sub("QUEUEID", line))


def shortened(lines: list[str]) -> list[str]:
    """Long header lines as their start and length (the recordings stay small)."""
    short = [f"{x[:40]}...({len(x)})" if len(x) > 200 else x for x in lines]
    return [*short[:20], f"({len(lines)} lines)"]


def postfix_cleanup_log(maillog: Path, start: int, qid: str | None) -> list[str]:
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline:
        text = maillog.read_text(errors="replace")[start:]
        lines = [m.group(1) for m in map(_CLEANUP.match, text.splitlines()) if m]
        if qid is None and any(_ACTION.match(x) for x in lines):
            break  # refused: its action's line (postlogd writes it a little later)
        if qid is not None and any(f"{qid}: message-id=" in x or "reject" in x for x in lines):
            break
        time.sleep(0.05)
    return [normalized(x) for x in lines if _ACTION.match(x)]


def postfix_queued(live: LivePostfix, qid: str) -> dict[str, Any] | None:
    etc = str(live.instance.etc)
    try:
        content = subprocess.run(["postcat", "-c", etc, "-h", "-b", "-q", qid],
                                 capture_output=True, text=True, timeout=30, check=True).stdout
    except subprocess.CalledProcessError:
        return None  # discarded: no queue file
    deadline = time.monotonic() + 20
    while True:  # once its qmgr has deferred it (or it waits on hold): a settled listing
        listing = subprocess.run(["postqueue", "-c", etc, "-j"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout
        mine = [json.loads(x) for x in listing.splitlines() if json.loads(x)["queue_id"] == qid]
        if (mine and mine[0]["queue_name"] in ("deferred", "hold")) \
                or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert mine, f"{qid} is not in Postfix's queue"
    queue = mine[0]["queue_name"]
    recipients = [r["address"] for r in mine[0]["recipients"]]
    return {"headers": shortened(kept_headers(content)), "body": content.replace("\r\n", "\n")
            .partition("\n\n")[2], "hold": queue == "hold", "recipients": sorted(recipients)}


async def postfix_answer(live: LivePostfix, message: bytes) -> dict[str, Any]:
    start = live.maillog.stat().st_size if live.maillog.exists() else 0
    replies = await dialogue(live.port, steps(message))
    reply = replies[5].split("-> ", 1)[1]
    m = _QUEUED.search(reply)
    queued = None
    if m:
        queued = await asyncio.to_thread(postfix_queued, live, m.group(1))
    log = await asyncio.to_thread(postfix_cleanup_log, live.maillog, start,
                                  m.group(1) if m else None)
    return {"reply": _QUEUED.sub("queued as QUEUEID", reply), "queued": queued, "log": log}


async def our_answer(port: int, store: Bus, message: bytes,
                     caplog: pytest.LogCaptureFixture) -> dict[str, Any]:
    caplog.clear()
    caplog.set_level(logging.INFO, "postbus.cleanup")
    replies = await dialogue(port, steps(message))
    reply = replies[5].split("-> ", 1)[1]
    m = _QUEUED.search(reply)
    queued = None
    if m:
        got = await store.queue.get(m.group(1))
        if got is not None:
            entry = got[0]
            content = (await store.queue.content(entry.queue_id, entry.chunks)).decode()
            queued = {"headers": shortened(kept_headers(content)),
                      "body": content.replace("\r\n", "\n").partition("\n\n")[2],
                      "hold": entry.queue == "hold",
                      "recipients": sorted(r.address for r in entry.recipients)}
    log = [normalized(rec.getMessage()) for rec in caplog.records
           if rec.name == "postbus.cleanup" and _ACTION.match(rec.getMessage())]
    return {"reply": _QUEUED.sub("queued as QUEUEID", reply), "queued": queued, "log": log}


@pytest.mark.parametrize(("case", "message"), MESSAGES, ids=[c for c, _ in MESSAGES])
async def test_checks_as_postfix(case: str, message: bytes, postfix: LivePostfix | None,
                                 ours: tuple[int, Bus],
                                 caplog: pytest.LogCaptureFixture) -> None:
    answer = await postfix_answer(postfix, message) if postfix is not None else None
    expected = json.loads(json.dumps(
        RECORDING.answer(case, None if answer is None else lambda: answer)))
    got = await our_answer(*ours, message, caplog)
    if case == "redirect":
        # Postfix keeps the original recipient and a redirect record in the queue file
        # (its qmgr delivers to the redirect address); Postbus's cleanup puts the
        # redirect address in the recipient's place, the original as its orig_rcpt
        assert "other@localhost" in expected["queued"].pop("recipients")
        assert got["queued"].pop("recipients") == ["other@localhost"]
    assert got == expected


#: mime_header_checks and nested_header_checks set apart from header_checks
SPLIT_HEADER = ("/^Subject: / WARN primary subject\n"
                "/^Content-Type: text/ WARN never: a MIME header\n")
SPLIT_MIME = "/^Content-Type: / INFO mime header\n/^X-Part: / WARN part header\n"
SPLIT_MESSAGES: list[tuple[str, bytes]] = [
    ("split_classes", b"Subject: outer\r\nMIME-Version: 1.0\r\n"
                      b"Content-Type: multipart/mixed; boundary=\"XX\"\r\n\r\n--XX\r\n"
                      b"Content-Type: text/plain\r\nX-Part: 1\r\n\r\nbody\r\n--XX\r\n"
                      b"Content-Type: message/rfc822\r\n\r\nSubject: inner\r\n"
                      b"X-Part: inner\r\n\r\ninner body\r\n--XX--\r\n"),
]


@pytest.fixture(scope="module")
def split_settings(settings: dict[str, str]) -> Iterator[dict[str, str]]:
    tables = Path(tempfile.mkdtemp(prefix="postbus-checks-"))
    tables.chmod(0o755)
    (tables / "header").write_text(SPLIT_HEADER)
    (tables / "mime").write_text(SPLIT_MIME)
    yield {**settings, "header_checks": f"regexp:{tables}/header",
           "mime_header_checks": f"pcre:{tables}/mime", "nested_header_checks": "",
           "body_checks": ""}
    shutil.rmtree(tables, ignore_errors=True)


@pytest.fixture(scope="module")
def split_postfix(split_settings: dict[str, str]) -> Iterator[LivePostfix | None]:
    with LivePostfix.running({**split_settings, "defer_transports": "local"}) as live:
        yield live


@pytest.fixture
async def split_ours(split_settings: dict[str, str],
                     store: Bus) -> AsyncIterator[tuple[int, Bus]]:
    async def write(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        return await store.queue.enqueue(entry, b"", False, build=build,
                                         queue_id=entry.queue_id)

    server = SmtpServer(make_config(**split_settings), write, listener="compare")
    port = (await server.start("127.0.0.1", 0))[0][1]
    yield port, store
    await server.stop(grace=1.0)


@pytest.mark.parametrize(("case", "message"), SPLIT_MESSAGES, ids=[c for c, _ in SPLIT_MESSAGES])
async def test_header_classes_as_postfix(case: str, message: bytes,
                                         split_postfix: LivePostfix | None,
                                         split_ours: tuple[int, Bus],
                                         caplog: pytest.LogCaptureFixture) -> None:
    answer = await postfix_answer(split_postfix, message) if split_postfix else None
    expected = RECORDING.answer(case, None if answer is None else lambda: answer)
    got = await our_answer(*split_ours, message, caplog)
    assert got == expected
    # primary Subject, three Content-Type (mime_header_checks), the part's X-Part; none of
    # the attachment's headers (nested_header_checks is empty)
    assert len(got["log"]) == 5
