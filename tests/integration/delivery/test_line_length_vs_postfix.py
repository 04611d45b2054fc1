"""smtp_line_length_limit: long lines broken as Postfix 3.7's smtp client breaks them.

A private Postfix relays a message with long header and body lines to an
aiosmtpd peer (which, as RFC 5321 allows, refuses a line over 1,000
octets with ``500 Line too long``); what arrives, less the Received:
header Postfix adds, and Postfix's ``breaking line`` log line are
recorded in ``tests/data/postfix/smtp_line_length.json``. delivery-smtp
then delivers the same message to the same kind of peer, which must
receive the same octets. Where Postfix cannot run, the recording is used.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from delivery_smtp.__main__ import main
from tests import postfix_instance
from tests.recorded import Recording

from .conftest import Bus, RunAgent
from .peers import Handler, Peer, postfix_relays

pytestmark = pytest.mark.integration

RECORDING = Recording("smtp_line_length")

MESSAGE = (
    b"From: alice@client.test\r\nTo: bob@remote.test\r\n"
    b"Subject: " + b"S" * 1200 + b"\r\n"
    b"Message-ID: <long@client.test>\r\nDate: Mon, 30 Nov 2026 05:00:00 +0000\r\n\r\n"
    b"short line\r\n"
    + b"a" * 1500 + b"\r\n"
    + b"." + b"b" * 998 + b"\r\n"  # 999 octets, the first a dot
    + b"c" * 998 + b"\r\n"  # exactly the limit
    + b"d" * 1995 + b"\r\n"  # the limit and one full continuation
    + b"".join(b"%04d" % i + b"e" * 96 for i in range(50)) + b"\r\n"  # 5,000 octets
    + b"the end\r\n"
)


def _postfix_relays() -> dict[str, Any]:
    """Postfix's output for MESSAGE: the lines after its Received: header, and its log line."""
    lines, line = postfix_relays(Handler(), MESSAGE, log_pattern=r"\w+: breaking line > .*$")
    return {"content": lines, "log": re.sub(r"^\w+:", "QID:", line)}


async def test_long_lines_are_sent_as_postfix_sends_them(
    bus: Bus, run_agent: RunAgent, caplog: pytest.LogCaptureFixture
) -> None:
    live = _postfix_relays if postfix_instance.available() else None
    postfix = RECORDING.answer("fold", live)
    caplog.set_level(logging.INFO, "postbus.delivery")
    with Peer() as peer:
        await run_agent(main, "smtp", {"myhostname": "mail.postbus.test"})
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"],
                               content=MESSAGE, sender="alice@client.test")
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert (result.status, result.reason) == ("sent", "250 2.0.0 Ok: queued as REMOTE1")
    [(_, _, content)] = peer.handler.messages
    assert content.decode("ascii").split("\r\n") == postfix["content"]
    ours = [r.getMessage() for r in caplog.records if "breaking line" in r.getMessage()]
    assert ours == [postfix["log"].replace("QID", job.queue_id)]
    assert postfix["log"] == "QID: breaking line > 998 bytes with <CR><LF>SPACE"


async def test_without_a_limit_a_long_line_goes_as_is_and_the_peer_refuses_it(
    bus: Bus, run_agent: RunAgent
) -> None:
    with Peer() as peer:
        await run_agent(main, "smtp", {"myhostname": "mail.postbus.test",
                                       "smtp_line_length_limit": "0"})
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"],
                               content=MESSAGE)
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert (result.status, result.dsn) == ("bounced", "5.0.0")
    assert result.reason == ("host 127.0.0.1[127.0.0.1] said: 500 Line too long "
                             "(see RFC5321 4.5.3.1.6) (in reply to end of DATA command)")
    assert peer.handler.messages == []
