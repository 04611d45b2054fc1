"""smtp_generic_maps: envelope and header addresses rewritten on the way out, as Postfix 3.7's
smtp client rewrites them.

A private Postfix with the same smtp_generic_maps relays each case's message
to an aiosmtpd peer; the envelope and the content it receives (less the
Received: header Postfix adds) are recorded in
``tests/data/postfix/smtp_generic.json``. delivery-smtp then sends the same
message to the same kind of peer, which must receive the same. Where
Postfix cannot run, the recording is used.
"""

from __future__ import annotations

import logging
import smtplib
import time
from typing import Any

import pytest

from delivery_smtp.__main__ import main
from postbus.queue.entry import Recipient
from postbus.servers import free_port, wait_port
from tests import postfix_instance
from tests.recorded import Recording

from .conftest import Bus, RunAgent
from .peers import Peer

pytestmark = pytest.mark.integration

RECORDING = Recording("smtp_generic")

GENERIC = (
    "inline:{ alice@client.test=alice@example.com, @local.test=@example.net, "
    "{dave@client.test=dave@example.org, dave2@example.org}, "
    "postmaster@client.test=root@example.com, frank@client.test=frank@example.com }"
)
SETTINGS = {"smtp_generic_maps": GENERIC, "myhostname": "mx.client.test",
            "mydomain": "client.test", "myorigin": "client.test",
            "propagate_unmatched_extensions": "canonical, virtual, generic",
            "recipient_delimiter": "+"}

# (sender, recipients, headers) per case; every address is fully qualified, so that
# Postfix's cleanup leaves the headers as they are and only its smtp client rewrites
CASES: dict[str, tuple[str, list[str], bytes]] = {
    "envelope_and_from": (
        "alice@client.test",
        ["bob@local.test", "carol+tag@local.test", "erin@other.test", "frank+x@client.test"],
        b"From: Alice Example <alice@client.test>\r\nTo: bob@local.test\r\n"
        b"Subject: generic\r\n",
    ),
    "lists_refolded": (
        "dave@client.test", ["bob@local.test"],
        b"From: dave@client.test\r\n"
        b"To: Bob <bob@local.test>, \"John Doe\"@local.test, frank@other.test,\r\n"
        b"  grace@other.test, \"Some One\" <someone@local.test>, henry@other.test\r\n"
        b"Cc: undisclosed-recipients:;\r\nReply-To: postmaster@client.test (the boss)\r\n"
        b"Subject: unchanged: bob@local.test\r\n",
    ),
    "nothing_listed": (
        "", ["erin@other.test"],
        b"From: erin@other.test\r\nTo:   erin@other.test\r\nSubject: as is\r\n",
    ),
}
TAIL = b"Message-ID: <{case}@client.test>\r\nDate: Mon, 30 Nov 2026 05:00:00 +0000\r\n\r\nbody\r\n"


def _message(case: str) -> bytes:
    return CASES[case][2] + TAIL.replace(b"{case}", case.encode())


def _wait(peer: Peer, count: int, timeout: float = 60.0) -> list[tuple[str, list[str], bytes]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with peer.handler.lock:
            if len(peer.handler.messages) >= count:
                return list(peer.handler.messages)
        time.sleep(0.05)
    raise AssertionError(f"the peer received {len(peer.handler.messages)} of {count}")


def _seen(sender: str, rcpts: list[str], content: bytes) -> dict[str, Any]:
    return {"sender": sender, "rcpts": sorted(rcpts),
            "content": content.decode("utf-8", "surrogateescape").split("\r\n")}


def _postfix_sends() -> dict[str, Any]:
    with Peer() as peer:
        port = free_port()
        instance = postfix_instance.PostfixInstance(port, {
            **SETTINGS, "relayhost": f"[127.0.0.1]:{peer.port}",
        })
        instance.start()
        try:
            wait_port("127.0.0.1", port, 20)
            for case, (sender, rcpts, _) in CASES.items():
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    client.ehlo("client.example")
                    client.sendmail(sender, rcpts, _message(case))
            got = _wait(peer, len(CASES))
        finally:
            instance.stop()
    out: dict[str, Any] = {}
    for sender, rcpts, content in got:
        lines = content.split(b"\r\n")
        assert lines[0].startswith(b"Received: "), lines[:3]
        rest = 1
        while lines[rest][:1] in (b" ", b"\t"):
            rest += 1
        case = next(c for c in CASES if f"<{c}@client.test>".encode() in content)
        sender = "" if sender in ("<>", "None") else sender
        out[case] = _seen(sender, rcpts, b"\r\n".join(lines[rest:]))
    return out


@pytest.fixture(scope="module")
def postfix() -> dict[str, Any]:
    live = _postfix_sends if postfix_instance.available() else None
    return RECORDING.answer("cases", live)  # type: ignore[no-any-return]


@pytest.mark.parametrize("case", list(CASES))
async def test_addresses_rewritten_as_postfix_rewrites_them(
    bus: Bus, run_agent: RunAgent, postfix: dict[str, Any], case: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    sender, rcpts, _ = CASES[case]
    with Peer() as peer:
        await run_agent(main, "smtp", SETTINGS)
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}",
                               [Recipient(r, orig_rcpt=r) for r in rcpts],
                               content=_message(case), sender=sender)
        results = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert [r.status for r in results] == ["sent"] * len(rcpts)
    [(got_sender, got_rcpts, content)] = peer.handler.messages
    got_sender = "" if got_sender in ("<>", "None") else got_sender
    assert _seen(got_sender, got_rcpts, content) == postfix[case]
    # the log names the queued addresses, as Postfix's does
    logged = [r.getMessage() for r in caplog.records if job.queue_id in r.getMessage()]
    assert [line.split(",")[0] for line in logged] == [f"{job.queue_id}: to=<{r}>" for r in rcpts]


def test_the_recording_shows_rewriting(postfix: dict[str, Any]) -> None:
    """What the cases stand for, in Postfix's own output (live or recorded)."""
    cases = postfix
    first = cases["envelope_and_from"]
    assert first["sender"] == "alice@example.com"
    assert first["rcpts"] == ["bob@example.net", "carol+tag@example.net", "erin@other.test",
                              "frank+x@example.com"]  # the extension propagated
    assert "From: Alice Example <alice@example.com>" in first["content"]
    assert cases["lists_refolded"]["sender"] == "dave@example.org"  # the first of two
    assert "To:   erin@other.test" in cases["nothing_listed"]["content"]


async def test_a_table_that_cannot_answer_defers_and_sends_nothing(
    bus: Bus, run_agent: RunAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    closed = free_port()  # nothing listens there
    with Peer() as peer:
        await run_agent(main, "smtp", {
            **SETTINGS, "smtp_generic_maps": f"socketmap:inet:127.0.0.1:{closed}:generic",
        })
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@local.test"],
                               sender="alice@client.test")
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert (result.status, result.dsn, result.reason) == (
        "deferred", "4.3.0", "unknown mail transport error"
    )
    assert peer.handler.messages == []
    assert any(r.getMessage().startswith(f"{job.queue_id}: smtp_generic_maps map lookup problem")
               for r in caplog.records)
