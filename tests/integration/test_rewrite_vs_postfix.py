"""Address rewriting against a real Postfix: what each system queues for the same mail.

The same main.cf and tables (tests/integration/rewrite_cases.py) go to a
private Postfix and to our smtpd + cleanup on a real nats-server. Each case
is one mail transaction; compared are every reply (RCPT rejects of
relocated users, unknown virtual alias users, error: and retry:
transports; the end-of-data reply, 451 when an expansion fails) and, when
the message was queued, the envelope sender, each recipient with its
original recipient and DSN NOTIFY, and the header block (without the
Received: header; the queue ID, time stamp and date that added headers
carry are normalized).

Postfix's side: its smtpd puts every message on hold (a HOLD access
action, set for Postfix only), so nothing is delivered, and ``postcat``
reads the queue file; our side: the entry and content in the JetStream
queue. Where Postfix is not installed its recorded answers
(``tests/data/postfix/rewrite.json``) stand in.
"""

from __future__ import annotations

import difflib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ingress_smtpd.server import SmtpServer
from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry
from tests.integration.ingress.conftest import Client, make_config
from tests.integration.postfix_dialogue import LivePostfix
from tests.integration.rewrite_cases import CASES, Txn, variants, write_tables
from tests.recorded import Recording

pytestmark = pytest.mark.integration

RECORDING = Recording("rewrite")
POSTFIX_ONLY = {"smtpd_client_restrictions": "check_client_access static:HOLD"}
NOTIFY_BITS = {"NEVER": 1, "SUCCESS": 2, "FAILURE": 4, "DELAY": 8}
_QUEUED = re.compile(r"^(250 2\.0\.0 Ok: queued as )(\w+)$")


@pytest.fixture(scope="module")
def tables() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="postbus-rewrite-"))
    directory.chmod(0o755)
    write_tables(directory)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module", params=sorted({variant for variant, _ in CASES.values()}))
def variant(request: pytest.FixtureRequest, tables: Path) -> Iterator[tuple[str, Any]]:
    settings = variants(tables)[request.param]
    with LivePostfix.running({**settings, **POSTFIX_ONLY}) as live:
        yield request.param, live


async def transaction(port: int, txn: Txn) -> tuple[list[str], str | None]:
    """Replies to one transaction, and the queue ID when it was queued."""
    client = await Client.connect(port)
    replies = [await client.reply(), await client.cmd("EHLO client.example")]
    for line in txn.lines():
        replies.append(f"{line[:70]} -> {await client.cmd(line)}")
    queue_id = None
    data = await client.cmd("DATA")
    replies.append(f"DATA -> {data}")
    if data.startswith("354"):
        done = await client.cmd(txn.content() + ".")
        match = _QUEUED.match(done)
        if match:
            queue_id = match.group(2)
            done = match.group(1) + "QID"
        replies.append(f". -> {done}")
    replies.append(f"QUIT -> {await client.cmd('QUIT')}")
    await client.close()
    return replies, queue_id


def postcat(etc: Path, queue_id: str) -> dict[str, Any]:
    """The envelope and content of a queue file, as ``postcat -q`` shows them."""
    out = subprocess.run(["postcat", "-c", str(etc), "-q", queue_id], capture_output=True,
                         text=True, check=True, errors="surrogateescape").stdout
    sender = ""
    recipients: list[list[Any]] = []
    attrs: dict[str, str] = {}
    original = ""
    section = ""
    content: list[str] = []
    for line in out.splitlines():
        if line.startswith("*** "):
            section = line.split()[1]
            continue
        if section == "ENVELOPE":
            kind, _, value = line.partition(": ")
            if kind == "sender":
                sender = value
            elif kind == "named_attribute":
                name, _, attr = value.partition("=")
                attrs[name] = attr
            elif kind == "original_recipient":
                original = value
            elif kind == "recipient":
                recipients.append([original, value, int(attrs.get("notify_flags", "0")),
                                   attrs.get("dsn_orig_rcpt", "")])
                attrs, original = {}, ""
        elif section == "MESSAGE":
            content.append(line)
    return {"sender": sender, "recipients": recipients, "content": normalize(content, queue_id)}


def normalize(lines: list[str], queue_id: str) -> list[str]:
    """Drop the Received: header; name the queue ID and the added time stamps."""
    out: list[str] = []
    skipping = True
    for line in lines:
        if skipping and (line.startswith("Received:") or line[:1] in (" ", "\t")):
            continue
        skipping = False
        line = line.replace(queue_id, "QID")
        line = re.sub(r"<\d{14}\.QID@", "<STAMP.QID@", line)
        line = re.sub(r"^((?:Resent-)?Date): \w{3}, .*$", r"\1: DATE", line)
        out.append(line)
    return out


async def ours(port: int, store: Bus, txn: Txn) -> dict[str, Any]:
    before = {entry.queue_id async for entry in store.queue.entries()}
    replies, queue_id = await transaction(port, txn)
    answer: dict[str, Any] = {"replies": replies}
    after = {entry.queue_id async for entry in store.queue.entries()}
    assert after - before == ({queue_id} if queue_id else set()), "queued, yet not 250?"
    if queue_id is not None:
        got = await store.queue.get(queue_id)
        assert got is not None
        entry = got[0]
        content = await store.queue.content(queue_id, entry.chunks)
        text = content.decode("utf-8", "surrogateescape").split("\r\n")
        answer["queued"] = {
            "sender": entry.sender,
            "recipients": [
                [r.orig_rcpt, r.address, sum(NOTIFY_BITS[w] for w in r.notify.split(",") if w)]
                for r in entry.recipients
            ],
            "content": normalize(text[:-1] if text[-1:] == [""] else text, queue_id),
        }
    return answer


def expected_ours(postfix: dict[str, Any], txn: Txn) -> dict[str, Any]:
    """What we must queue, given what Postfix queued: our Recipient.orig_rcpt is the
    client's ORCPT when it gave one, else the address as received (Postfix keeps both)."""
    answer: dict[str, Any] = {"replies": postfix["replies"]}
    if "queued" in postfix:
        queued = postfix["queued"]
        orcpts = {
            m.group(1): m.group(2)
            for r in txn.rcpts if (m := re.match(r"<([^>]*)>.*ORCPT=rfc822;(\S+)", r))
        }
        answer["queued"] = {
            "sender": queued["sender"],
            "recipients": [[orcpts.get(orig, orig), rcpt, notify]
                           for orig, rcpt, notify, _dsn in queued["recipients"]],
            "content": queued["content"],
        }
    return answer


async def test_rewriting_queues_what_postfix_queues(
    variant: tuple[str, LivePostfix | None], store: Bus, tables: Path
) -> None:
    name, live = variant
    cfg = make_config(**variants(tables)[name])

    async def write(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        return await store.queue.enqueue(entry, b"", False, build=build)

    server = SmtpServer(cfg, write, listener="rewrite")
    port = (await server.start("127.0.0.1", 0))[0][1]
    problems: list[str] = []
    try:
        for case, (case_variant, txn) in CASES.items():
            if case_variant != name:
                continue
            answer = None
            if live is not None:
                replies, queue_id = await transaction(live.port, txn)
                answer = {"replies": replies}
                if queue_id is not None:
                    answer["queued"] = postcat(live.instance.etc, queue_id)
            postfix = RECORDING.answer(case, None if answer is None else lambda a=answer: a)
            want = expected_ours(postfix, txn)
            got = await ours(port, store, txn)
            if got != want:
                diff = difflib.unified_diff(
                    json.dumps(want, indent=1).splitlines(), json.dumps(got, indent=1).splitlines(),
                    "postfix", "postbus", lineterm="")
                problems.append(f"{case}:\n" + "\n".join(diff))
    finally:
        await server.stop(grace=1.0)
    assert not problems, "\n\n".join(problems)
