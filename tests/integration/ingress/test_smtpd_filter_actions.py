"""What smtpd queues for after-queue filtering (≈ smtpd's REC_TYPE_FILT and
cleanup's FILTER): content_filter marks every message; an access table's
FILTER overrides it, header_checks' FILTER overrides both (the last one
wins); a listener's ``-o content_filter=`` and
``-o receive_override_options=no_header_body_checks`` turn them off."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from postbus.smtp import replies as r
from tests.integration.ingress.conftest import Running, StartSmtpd

pytestmark = pytest.mark.integration

QUEUED = re.compile(r"^250 2\.0\.0 Ok: queued as (\S+)$")


@pytest.fixture
def tables(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "access").write_text("scan@postbus.test FILTER scan:[127.0.0.1]:10030\n"
                                     "held@postbus.test HOLD\n"
                                     "copy@postbus.test BCC archive@postbus.test\n")
    (tmp_path / "header_checks").write_text("/^Subject: last/ FILTER last:\n")
    return {"content_filter": "smtp:[127.0.0.1]:10024",
            "header_checks": f"regexp:{tmp_path}/header_checks",
            "smtpd_recipient_restrictions":
                f"check_recipient_access texthash:{tmp_path}/access, permit"}


async def _send(run: Running, rcpt: str, subject: str) -> tuple[str, str]:
    client = await run.client()
    await client.cmd("EHLO client.example")
    assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await client.cmd(f"RCPT TO:<{rcpt}>") == r.RCPT_OK
    assert await client.cmd("DATA") == r.DATA_GO_AHEAD
    await client.send(f"Subject: {subject}\r\n\r\nbody\r\n.\r\n")
    match = QUEUED.match(await client.reply())
    assert match
    await client.cmd("QUIT")
    got = await run.store.queue.get(match.group(1))
    assert got is not None
    return got[0].filter, got[0].queue


async def test_the_last_filter_wins(smtpd: StartSmtpd, tables: dict[str, str]) -> None:
    run = await smtpd(**tables)
    assert await _send(run, "u@postbus.test", "x") == ("smtp:[127.0.0.1]:10024", "incoming")
    assert await _send(run, "scan@postbus.test", "x") == ("scan:[127.0.0.1]:10030", "incoming")
    assert await _send(run, "scan@postbus.test", "last") == ("last:", "incoming")
    assert await _send(run, "held@postbus.test", "x") == ("smtp:[127.0.0.1]:10024", "hold")


async def test_a_reinjection_listener_filters_nothing(
        smtpd: StartSmtpd, tables: dict[str, str]) -> None:
    run = await smtpd(**{**tables, "content_filter": "",
                         "receive_override_options": "no_header_body_checks,no_milters"})
    assert await _send(run, "u@postbus.test", "last") == ("", "incoming")
    # an access table is smtpd's own: FILTER still applies there
    assert await _send(run, "scan@postbus.test", "last") == ("scan:[127.0.0.1]:10030",
                                                            "incoming")


async def test_bcc_adds_a_recipient_that_never_notifies(
        smtpd: StartSmtpd, tables: dict[str, str]) -> None:
    run = await smtpd(**tables)
    client = await run.client()
    await client.cmd("EHLO client.example")
    await client.cmd("MAIL FROM:<s@example.org>")
    assert await client.cmd("RCPT TO:<copy@postbus.test>") == r.RCPT_OK
    await client.cmd("DATA")
    await client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    match = QUEUED.match(await client.reply())
    assert match
    got = await run.store.queue.get(match.group(1))
    assert got is not None
    assert [(x.address, x.notify) for x in got[0].recipients] == [
        ("copy@postbus.test", ""), ("archive@postbus.test", "NEVER")]
