"""What our smtpd queues, against what a real Postfix queues, for the same dialogue:
BDAT chunks and DATA over STARTTLS, an SMTPUTF8 envelope, smtpd_tls_received_header.
And ETRN for an eligible site, where Postfix's flush daemon answers and ours is the
qmgr's flush service on the bus.

Postfix keeps the mail (``defer_transports = local``) and ``postcat`` reads its queue
file; ours goes into the real queue on a real nats-server. The Received: headers are
compared with queue IDs and dates taken out; the replies with queue IDs taken out.
"""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import orjson
import pytest

from ingress_smtpd.etrn import flush_over_bus
from ingress_smtpd.server import SmtpServer
from postbus.bus import subjects
from postbus.bus.jetstream import connect
from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry
from postbus.servers import ServerProcess
from tests.integration.ingress.conftest import BASE_MAIN_CF, make_config
from tests.integration.postfix_dialogue import READ, Line, LivePostfix, Tls, dialogue
from tests.recorded import Recording
from tests.tls_certs import Pki

pytestmark = pytest.mark.integration

RECORDING = Recording("smtpd_queue")
_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)")
_DATE = re.compile(r"(;\s*|\t)[A-Z][a-z]{2}, +\d+ [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}"
                   r"( \([A-Z]+\))?")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def settings(pki: Pki) -> dict[str, str]:
    cert, key = pki.server("server")
    return {
        **BASE_MAIN_CF,
        "mail_name": "Postbus",
        "mydestination": "localhost",
        "local_recipient_maps": "",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": str(cert),
        "smtpd_tls_key_file": str(key),
        "smtpd_tls_received_header": "yes",
        "smtpd_tls_ask_ccert": "yes",
        "smtpd_tls_CAfile": str(pki.ca_file),
        "fast_flush_domains": "flush.example",
    }


@pytest.fixture(scope="module")
def postfix(settings: dict[str, str]) -> Iterator[LivePostfix | None]:
    with LivePostfix.running({**settings, "defer_transports": "local"}) as live:
        yield live


@pytest.fixture
async def ours(
    settings: dict[str, str], store: Bus, nats: ServerProcess
) -> AsyncIterator[tuple[int, Bus]]:
    async def write(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        return await store.queue.enqueue(entry, b"", False, build=build)

    nc = await connect(nats.url, "smtpd")
    server = SmtpServer(make_config(**settings), write, listener="compare",
                        flush=flush_over_bus(nc))
    port = (await server.start("127.0.0.1", 0))[0][1]
    yield port, store
    await server.stop(grace=1.0)
    await nc.close()


def received(content: str) -> str:
    """The first Received: header, queue ID and date taken out."""
    lines = content.replace("\r\n", "\n").split("\n")
    out = [lines[0]]
    for line in lines[1:]:
        if line[:1] not in (" ", "\t"):
            break
        out.append(line)
    text = "\n".join(out)
    text = re.sub(r" id [0-9A-Za-z]+", " id QUEUEID", text)
    return _DATE.sub(r"\1DATE", text)


def body(content: str) -> str:
    """The message body (after the header block), with LF line ends."""
    return content.replace("\r\n", "\n").partition("\n\n")[2]


def postcat(live: LivePostfix, queue_id: str) -> str:
    done = subprocess.run(["postcat", "-c", str(live.instance.etc), "-h", "-b", "-q", queue_id],
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout


def steps(pki: Pki) -> list[Line]:
    client = pki.client_context(pki.client("trusted", "client.postbus.test"))
    body = b"Subject: chunks\r\n\r\nfirst line\nsecond line\r\n.dot line\r\n"
    return [
        "EHLO c", "STARTTLS", Tls(client), "EHLO c2",
        "MAIL FROM:<s\u00e9nder@b.example> SMTPUTF8", "RCPT TO:<root@localhost>",
        b"BDAT %d\r\n" % len(body) + body, READ, b"BDAT 11 LAST\r\nno line end", READ,
        "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>", "RCPT TO:<postmaster@localhost>",
        "DATA", b"Subject: data\r\n\r\n..dot\r\n", ".",
        "QUIT",
    ]


async def test_queued_messages_as_postfix_queues_them(
    pki: Pki, postfix: LivePostfix | None, ours: tuple[int, Bus],
) -> None:
    lines = steps(pki)

    async def play(port: int, read: Callable[[str], Any]) -> dict[str, list[str]]:
        replies = await dialogue(port, lines)
        ids = [m.group(1) for reply in replies for m in _QUEUED.finditer(reply)]
        contents = [await read(qid) for qid in ids]
        return {"replies": [_QUEUED.sub("queued as QUEUEID", x) for x in replies],
                "received": [received(c) for c in contents], "bodies": [body(c) for c in contents]}

    answer = None
    if postfix is not None:
        live = postfix
        answer = await play(live.port, lambda qid: asyncio.to_thread(postcat, live, qid))
    expected = RECORDING.answer("bdat_and_data_over_tls", None if answer is None else
                                lambda: answer)
    port, store = ours

    async def ours_content(qid: str) -> str:
        return (await store.queue.content(qid)).decode("utf-8")

    got = await play(port, ours_content)
    assert got["replies"] == expected["replies"]
    assert got["received"] == expected["received"]
    assert got["bodies"] == expected["bodies"]
    assert got["bodies"] == ["first line\nsecond line\n.dot line\nno line end\n", ".dot\n"]


async def test_etrn_of_an_eligible_site_asks_the_qmgr_and_says_what_postfix_says(
    postfix: LivePostfix | None, ours: tuple[int, Bus], nats: ServerProcess,
    caplog: pytest.LogCaptureFixture,
) -> None:
    lines: list[Line] = ["EHLO c", "ETRN flush.example", "ETRN @flush.example", "QUIT"]
    answer = await postfix.dialogue(lines) if postfix is not None else None
    expected = RECORDING.answer("etrn_flush", None if answer is None else lambda: answer)
    nc = await connect(nats.url, "qmgr-standin")  # the qmgr's side of postbus.cmd.send_site
    asked: list[Any] = []

    async def serve(msg: Any) -> None:
        asked.append(orjson.loads(msg.data))
        await msg.respond(orjson.dumps({"status": "ok"}))

    await nc.subscribe(subjects.command_subject("send_site"), cb=serve)
    await nc.flush()
    caplog.set_level(logging.INFO, "postbus.smtpd")
    replies = await dialogue(ours[0], lines)
    await nc.close()
    assert replies == expected["replies"]
    assert "ETRN flush.example -> 250 Queuing started" in replies
    assert asked == [{"site": "flush.example"}, {"site": "flush.example"}]
