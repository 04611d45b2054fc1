"""cleanup's rewriting through our smtpd into the real queue: what postqueue shows, and
a table that fails in the middle of a virtual alias expansion (Redis stopped) — 451,
as Postfix answers (tests/data/postfix/rewrite.json, "failing_expansion"), and
nothing half-expanded in the queue."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from postbus.maps import context as maps_context
from postbus.queue.admin import Bus
from postbus.servers import ServerProcess
from tests.integration.ingress.conftest import Client, StartSmtpd
from tests.recorded import Recording

pytestmark = pytest.mark.integration

VIRTUAL = """\
list@postbus.test       alice@postbus.test, bob@example.net
nested@postbus.test     list@postbus.test, carol
team@postbus.test       dave@postbus.test, erin@example.net
"""


def postbus(conf: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "postbus.cli.main", "-c", str(conf), *args],
                          capture_output=True, text=True, timeout=60, check=True)


async def send(client: Client, sender: str, rcpts: list[str], body: str = "") -> list[str]:
    replies = [await client.cmd(f"MAIL FROM:<{sender}>")]
    replies += [await client.cmd(f"RCPT TO:<{r}>") for r in rcpts]
    replies.append(await client.cmd("DATA"))
    replies.append(await client.cmd(f"{body}Subject: t\r\n\r\nbody\r\n."))
    return replies


async def queued(store: Bus) -> list[str]:
    return [entry.queue_id async for entry in store.queue.entries()]


async def test_redis_stopped_mid_expansion_queues_nothing(
    tmp_path: Path, redis: ServerProcess, smtpd: StartSmtpd, store: Bus
) -> None:
    virtual = tmp_path / "virtual"
    virtual.write_text(VIRTUAL)
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text(f"postbus_redis_url = {redis.url}/0\n")
    postbus(conf, "postmap", f"hash:{virtual}")
    maps_context.configure(f"{redis.url}/0")
    try:
        run = await smtpd(mynetworks="127.0.0.0/8", myorigin="postbus.test",
                          virtual_alias_maps=f"hash:{virtual}")
        client = await run.client()
        await client.cmd("EHLO c")
        replies = await send(client, "s@example.net", ["nested@postbus.test"])
        assert replies[-1].startswith("250 2.0.0 Ok: queued as "), replies
        qid = replies[-1].rsplit(" ", 1)[1]
        got = await store.queue.get(qid)
        assert got is not None
        # Postfix's order: a result replaces its alias in place, the others go last
        assert [(r.orig_rcpt, r.address) for r in got[0].recipients] == [
            ("nested@postbus.test", "alice@postbus.test"),
            ("nested@postbus.test", "carol@postbus.test"),
            ("nested@postbus.test", "bob@example.net"),
        ]
        before = await queued(store)
        # the RCPT lookup succeeds; Redis goes away before the expansion at end of data
        # (the members of team@ were never looked up, so no cached answer stands in)
        assert (await client.cmd("MAIL FROM:<s@example.net>")).startswith("250")
        assert (await client.cmd("RCPT TO:<team@postbus.test>")).startswith("250")
        redis.stop()
        assert (await client.cmd("DATA")).startswith("354")
        reply = await client.cmd("Subject: t\r\n\r\nbody\r\n.")
        postfix = Recording("rewrite").answers["failing_expansion"]["replies"]
        assert f". -> {reply}" in postfix
        assert reply == "451 4.3.0 Error: queue file write error"
        assert await queued(store) == before
        # the session goes on
        assert (await client.cmd("RSET")).startswith("250")
    finally:
        await maps_context.aclose()


async def test_postqueue_shows_rewritten_recipients(
    tmp_path: Path, nats: ServerProcess, smtpd: StartSmtpd, store: Bus
) -> None:
    run = await smtpd(
        mynetworks="127.0.0.0/8", myorigin="postbus.test",
        canonical_maps="inline:{{wietse=Wietse.Venema}}",
        virtual_alias_maps="inline:{{sales@postbus.test=alice, bob@example.net}}",
    )
    client = await run.client()
    await client.cmd("EHLO c")
    replies = await send(client, "wietse", ["sales@postbus.test", "wietse@postbus.test"])
    qid = replies[-1].rsplit(" ", 1)[1]
    conf = tmp_path / "etc"
    conf.mkdir()
    (conf / "main.cf").write_text(f"postbus_nats_url = {nats.url}\n")
    listing = (await asyncio.to_thread(postbus, conf, "postqueue", "-p")).stdout.splitlines()
    assert listing[1].startswith(qid) and listing[1].endswith(" Wietse.Venema@postbus.test")
    assert [line.strip() for line in listing[2:5]] == [
        "alice@postbus.test", "bob@example.net", "Wietse.Venema@postbus.test"]
    shown = json.loads((await asyncio.to_thread(postbus, conf, "postqueue", "-j")).stdout)
    assert [r["address"] for r in shown["recipients"]] == [
        "alice@postbus.test", "bob@example.net", "Wietse.Venema@postbus.test"]
    got = await store.queue.get(qid)
    assert got is not None
    assert [r.orig_rcpt for r in got[0].recipients] == [
        "sales@postbus.test", "sales@postbus.test", "wietse@postbus.test"]
    content = await store.queue.content(qid, got[0].chunks)
    assert b"\r\nFrom: Wietse.Venema@postbus.test\r\n" in content
