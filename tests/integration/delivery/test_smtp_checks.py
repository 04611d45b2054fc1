"""smtp_header_checks and smtp_body_checks in delivery-smtp: the message the
next hop receives, and the smtp client's log lines (≈ smtp_proto.c's hbc call-backs)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from delivery_smtp.__main__ import main

from .conftest import MESSAGE, Bus, RunAgent
from .peers import Peer

pytestmark = pytest.mark.integration


async def test_smtp_checks_edit_what_is_sent(
    bus: Bus, run_agent: RunAgent, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "hc").write_text(
        "/^Received:/ IGNORE\n/^Subject: (.*)/ REPLACE Subject: [ext] $1\n"
        "/^To:/ PREPEND X-Relayed: yes\n/^From:/ REJECT not here\n")
    (tmp_path / "bc").write_text("/^Hello Bob/ WARN greeting seen\n")
    caplog.set_level(logging.INFO, "postbus.delivery")
    with Peer() as peer:
        await run_agent(main, "smtp", {
            "myhostname": "mail.postbus.test",
            "smtp_header_checks": f"regexp:{tmp_path}/hc",
            "smtp_body_checks": f"regexp:{tmp_path}/bc"})
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"])
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert result.status == "sent"
    [(_, _, content)] = peer.handler.messages
    assert content == (
        b"From: alice@postbus.test\r\nX-Relayed: yes\r\nTo: bob@remote.test\r\n"
        b"Subject: [ext] hello\r\nMessage-ID: <1@postbus.test>\r\n\r\n"
        + MESSAGE.split(b"\r\n\r\n", 1)[1])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith(job.queue_id)
             and ": to=<" not in r.getMessage()]
    qid = job.queue_id
    assert lines == [
        f"{qid}: prepend: header To: bob@remote.test: X-Relayed: yes",
        f"{qid}: replace: header Subject: hello: Subject: [ext] hello",
        f"{qid}: warning: body Hello Bob.: greeting seen",
    ]
    assert "unsupported command in smtp_header_checks map: REJECT not here" in [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_smtp_checks_table_down_defers(bus: Bus, run_agent: RunAgent) -> None:
    with Peer() as peer:
        await run_agent(main, "smtp", {"smtp_header_checks": "hash:/nonexistent/table"})
        job = await bus.submit("smtp", f"[127.0.0.1]:{peer.port}", ["bob@remote.test"])
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert (result.status, result.dsn, result.reason) == (
        "deferred", "4.3.0", "smtp header checks lookup error")
    assert peer.handler.messages == []
