"""A finished session is freed by reference counting, not left for the garbage collector:
with one message per connection, a session in a reference cycle made every collection
walk all the objects of the sessions since the last one."""

from __future__ import annotations

import asyncio
import gc
import re

import pytest

from ingress_smtpd.session import Session
from postbus.smtp import replies as r
from tests.integration.ingress.conftest import StartSmtpd

pytestmark = pytest.mark.integration


def _sessions() -> list[Session]:
    return [o for o in gc.get_objects() if isinstance(o, Session)]


async def test_a_finished_session_is_freed_without_a_collection(smtpd: StartSmtpd) -> None:
    run = await smtpd()
    gc.collect()
    gc.disable()
    try:
        client = await run.client()
        assert await client.cmd("HELO client.example") == "250 mx.postbus.test"
        assert await client.cmd("MAIL FROM:<a@example.com>") == r.MAIL_OK
        assert await client.cmd("RCPT TO:<b@postbus.test>") == r.RCPT_OK
        assert await client.cmd("DATA") == r.DATA_GO_AHEAD
        await client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        assert re.fullmatch(r"250 2\.0\.0 Ok: queued as \w+", await client.reply())
        assert len(_sessions()) == 1  # alive while the client is connected
        assert await client.cmd("QUIT") == r.BYE
        await client.close()
        async with asyncio.timeout(15):
            while run.server.sessions:
                await asyncio.sleep(0.01)
        assert _sessions() == []
    finally:
        gc.enable()
