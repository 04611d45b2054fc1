"""Our policy service behind real Postfix and behind our smtpd: the same answers.

A private Debian Postfix with ``check_policy_service inet:127.0.0.1:PORT`` asks our
policy service (SPF against a loopback DNS server, a rate limit, greylisting); our
smtpd, with the same restrictions, asks another policy process of the same
configuration (its own Redis database: greylisting and rate counters start afresh).
The same dialogues must get the same replies, and the message accepted after the
greylisting delay must carry the same header lines (the Received-SPF: header the
policy service had prepended) in what Postfix relays and what our smtpd queues.

Postfix's answer is live where Postfix runs (``tests/postfix_instance.py``: installed,
and root, which its daemons need to start) and must equal the recording
``tests/data/postfix/policy_service.json``; elsewhere that recording stands in
(``tests/recorded.py``), so the comparison runs everywhere.
"""

from __future__ import annotations

import asyncio
import re
import smtplib
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from ingress_smtpd.server import SmtpServer
from postbus.queue.admin import Bus
from postbus.queue.entry import QueueEntry
from postbus.servers import ServerProcess, free_port, wait_port
from tests import postfix_instance
from tests.integration.delivery.peers import DnsServer, Peer
from tests.integration.ingress.conftest import make_config
from tests.integration.policy.policy_process import start_policy
from tests.recorded import Recording

pytestmark = pytest.mark.integration

RECORDING = Recording("policy_service")
CASE = "spf, rate limit, greylisting"
POLICY_CF = ("postbus_policy_checks = spf, ratelimit, greylist\n"
             "postbus_policy_spf_skip_addresses =\n"
             "postbus_policy_ratelimit_limits = sender 2/1h\n"
             "postbus_policy_greylist_delay = 2s\n")
DNS = {("ok.test", "TXT"): ['"v=spf1 ip4:127.0.0.0/8 -all"'],
       ("bad.test", "TXT"): ['"v=spf1 ip4:192.0.2.1 -all"']}
_QUEUED = re.compile(r"queued as ([0-9A-Za-z]+)$")
#: what both servers add to any message, whatever the policy said
_ADDED = ("received", "message-id", "date", "from", "to")


def settings(policy_port: int) -> dict[str, str]:
    return {"myhostname": "mx.postbus.test", "mydestination": "localhost",
            "mynetworks": "127.0.0.0/8",
            "smtpd_recipient_restrictions":
                f"check_policy_service inet:127.0.0.1:{policy_port}, permit_mynetworks, "
                "reject_unauth_destination"}


def _session(port: int, sender: str, *rcpts: str, data: bytes = b"") -> list[str]:
    """The RCPT replies, and the reply to the message when the last RCPT is accepted."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("client.example")
        client.mail(sender)
        replies = []
        for rcpt in rcpts:
            code, text = client.rcpt(rcpt)
            replies.append(f"{code} {text.decode()}")
        if data and replies[-1].startswith("250"):
            code, text = client.data(data)
            replies.append(f"{code} {text.decode()}")
    return replies


def policy_headers(content: bytes) -> list[str]:
    """The header lines, less those every message gets (Received:, and what cleanup adds)."""
    kept: list[str] = []
    skip = False
    head = content.decode().replace("\r\n", "\n").partition("\n\n")[0]
    for line in head.split("\n"):
        if line[:1] not in (" ", "\t"):
            skip = line.partition(":")[0].lower() in _ADDED
        if not skip:
            kept.append(line)
    return kept


async def play(port: int, queued: Callable[[str], Awaitable[bytes]]) -> dict[str, Any]:
    """The dialogues against the server on ``port``; ``queued(reply)``: the content of
    the message that ``reply`` (to the end of DATA) accepted, as the server passed it on."""
    def session(sender: str, *rcpts: str, data: bytes = b"") -> Awaitable[list[str]]:
        return asyncio.to_thread(_session, port, sender, *rcpts, data=data)

    answer: dict[str, Any] = {"spf fail": await session("a@bad.test", "bob@remote.test")}
    started = time.monotonic()
    answer["greylisted"] = await session("a@ok.test", "bob@remote.test")
    # the rate limit (sender 2/1h, before greylisting) on another sender
    answer["rate limited"] = await session("r@ok.test", *["bob@remote.test"] * 3)
    # the retry after the delay passes, with the Received-SPF header
    await asyncio.sleep(max(0.0, started + 3.1 - time.monotonic()))
    retry = await session("a@ok.test", "bob@remote.test", data=b"Subject: hi\r\n\r\nbody\r\n")
    answer["retry after the delay"] = [_QUEUED.sub("queued as QUEUEID", r) for r in retry]
    answer["headers"] = policy_headers(await queued(retry[-1])) if len(retry) == 2 else None
    return answer


async def postfix_answer(dns_port: int, redis_url: str, tmp_path: Path) -> dict[str, Any]:
    """Postfix's answer, live, relaying to an aiosmtpd peer."""
    policy = start_policy(tmp_path, f"postbus_redis_url = {redis_url}/0\n"
                          f"postbus_dns_servers = 127.0.0.1:{dns_port}\n{POLICY_CF}", "postfix")
    port = free_port()
    with Peer() as peer:
        instance = postfix_instance.PostfixInstance(
            port, {**settings(policy.port), "relayhost": f"[127.0.0.1]:{peer.port}"})
        instance.start()
        try:
            wait_port("127.0.0.1", port, 30)

            async def relayed(reply: str) -> bytes:
                deadline = time.monotonic() + 60
                while not peer.handler.messages:
                    assert time.monotonic() < deadline, f"Postfix relayed nothing ({reply})"
                    await asyncio.sleep(0.05)
                return peer.handler.messages[0][2]

            return await play(port, relayed)
        finally:
            instance.stop()
            policy.stop()


async def test_postfix_and_our_smtpd_give_the_policy_answers_alike(
    redis: ServerProcess, nats: ServerProcess, store: Bus, tmp_path: Path
) -> None:
    dns = await DnsServer(DNS).start()
    try:
        answer = (await postfix_answer(dns.port, redis.url, tmp_path)
                  if postfix_instance.available() else None)
        expected = RECORDING.answer(CASE, None if answer is None else lambda: answer)

        policy = start_policy(tmp_path, f"postbus_redis_url = {redis.url}/1\n"
                              f"postbus_dns_servers = 127.0.0.1:{dns.port}\n{POLICY_CF}", "ours")

        async def write(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
            return await store.queue.enqueue(entry, b"", False, build=build,
                                             queue_id=entry.queue_id)

        server = SmtpServer(make_config(**settings(policy.port)), write, listener="policy")
        port = (await server.start("127.0.0.1", 0))[0][1]

        async def queued(reply: str) -> bytes:
            found = _QUEUED.search(reply)
            assert found, reply
            got = await store.queue.get(found.group(1))
            assert got is not None, reply
            return await store.queue.content(got[0].queue_id, got[0].chunks)

        try:
            ours = await play(port, queued)
        finally:
            await server.stop(grace=1.0)
            policy.stop()
    finally:
        dns.close()
    assert ours == expected
