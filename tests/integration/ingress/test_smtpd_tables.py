"""Lookup tables in smtpd restrictions: Redis-backed tables, and what happens when
Redis is gone (a temporary error: 451 4.3.0, never a silent accept or reject)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from postbus.config.conv import ConfigError
from postbus.maps import context as maps_context
from postbus.servers import ServerProcess
from tests.integration.ingress.conftest import Client, StartSmtpd

pytestmark = pytest.mark.integration


def postmap(tmp_path: Path, redis: ServerProcess, spec: str) -> None:
    conf = tmp_path / "etc"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text(f"postbus_redis_url = {redis.url}/0\n")
    subprocess.run(
        [sys.executable, "-m", "postbus.cli.main", "-c", str(conf), "postmap", spec],
        check=True, capture_output=True, timeout=60,
    )


async def test_access_table_in_redis_rejects_then_redis_down_defers(
    tmp_path: Path, redis: ServerProcess, smtpd: StartSmtpd
) -> None:
    access = tmp_path / "access"
    access.write_text("spammer@example.org REJECT go away\n")
    postmap(tmp_path, redis, f"hash:{access}")
    maps_context.configure(f"{redis.url}/0")
    try:
        run = await smtpd(
            mynetworks="127.0.0.0/8",
            smtpd_recipient_restrictions=f"check_sender_access hash:{access}, "
            "permit_mynetworks, reject_unauth_destination",
        )
        client = await run.client()
        await client.cmd("HELO c")
        await client.cmd("MAIL FROM:<spammer@example.org>")
        reply = await client.cmd("RCPT TO:<bob@postbus.test>")
        assert reply.startswith("554 5.7.1 <spammer@example.org>: Sender address rejected: go away")
        await client.cmd("RSET")
        await client.cmd("MAIL FROM:<friend@example.org>")
        assert (await client.cmd("RCPT TO:<bob@postbus.test>")).startswith("250 2.1.5")
        redis.stop()
        await client.cmd("RSET")
        await client.cmd("MAIL FROM:<other@example.org>")
        reply = await client.cmd("RCPT TO:<bob@postbus.test>")
        assert reply.startswith("451 4.3.0 <bob@postbus.test>: Temporary lookup failure"), reply
        assert (await client.cmd("DATA")).startswith("554 5.5.1 Error: no valid recipients")
    finally:
        await maps_context.aclose()


async def test_unknown_restriction_stops_the_server_from_starting(smtpd: StartSmtpd) -> None:
    with pytest.raises(ConfigError, match="frobnicate_everything"):
        await smtpd(smtpd_recipient_restrictions="permit_mynetworks, frobnicate_everything, "
                    "reject_unauth_destination")


@pytest.mark.parametrize(("relay_first", "reply"), [
    ("yes", "554 5.7.1 <u@remote.test>: Relay access denied"),
    ("no", "550 5.7.1 <u@remote.test>: Recipient address rejected: listed"),
])
async def test_relay_before_recipient_restrictions_orders_the_lists(
    smtpd: StartSmtpd, relay_first: str, reply: str
) -> None:
    """Both lists reject: the one evaluated first answers."""
    run = await smtpd(
        smtpd_relay_before_recipient_restrictions=relay_first,
        smtpd_relay_restrictions="reject_unauth_destination",
        smtpd_recipient_restrictions="check_recipient_access inline:{{u@remote.test=550 listed}}",
    )
    client = await run.client()
    await client.cmd("HELO c")
    await client.cmd("MAIL FROM:<a@example.org>")
    assert await client.cmd("RCPT TO:<u@remote.test>") == reply


async def test_forbidden_command_tables_are_refused(smtpd: StartSmtpd) -> None:
    """Command names are honoured; pattern tables are not yet, so they stop the start."""
    with pytest.raises(ConfigError, match=r"regexp:/\^PUT/ is not supported yet by Postbus"):
        await smtpd(smtpd_forbidden_commands="CONNECT GET POST regexp:/^PUT/")
    run = await smtpd(smtpd_forbidden_commands="CONNECT GET POST PUT")
    client = await run.client()
    assert (await client.cmd("PUT /")).startswith("221 2.7.0 Error: I can break rules, too")


async def test_discard_ehlo_keyword_map_in_redis_then_redis_down(
    tmp_path: Path, redis: ServerProcess, smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture
) -> None:
    """Per client address, as Postfix; a table that cannot answer ends EHLO with 421
    (Postfix's "don't know what EHLO features to announce"), HELO still works."""
    discard = tmp_path / "discard"
    discard.write_text("127.0.0.1 chunking, starttls\n")
    postmap(tmp_path, redis, f"hash:{discard}")
    maps_context.configure(f"{redis.url}/0")
    try:
        run = await smtpd(smtpd_discard_ehlo_keyword_address_maps=f"hash:{discard}",
                          smtpd_discard_ehlo_keywords="pipelining")
        client = await run.client()
        ehlo = await client.cmd("EHLO c")
        assert "250-PIPELINING" in ehlo and "CHUNKING" not in ehlo
        redis.stop()  # and a client whose address is not in the lookup cache yet
        reader, writer = await asyncio.open_connection("127.0.0.1", run.port,
                                                       local_addr=("127.0.0.2", 0))
        other = Client(reader, writer)
        run.clients.append(other)
        assert (await other.reply()).startswith("220 ")
        assert await other.cmd("EHLO c") == "421 4.3.0 mx.postbus.test Server local data error"
        assert await other.reply() == "<EOF>"
        assert "don't know what EHLO features to announce to unknown[127.0.0.2]" in caplog.text
        client = await run.client()
        assert await client.cmd("HELO c") == "250 mx.postbus.test"
    finally:
        await maps_context.aclose()
