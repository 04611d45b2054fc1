"""Client limits held across replicas (anvil in Redis): two smtpd servers, each with its own
:class:`Anvil` as two ingress processes have, share one real redis-server; the counts and
rates of one client add up over both. Replies and log lines are Postfix's (compared with a
real Postfix in tests/integration/test_smtpd_limits_vs_postfix.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from ingress_smtpd.server import SmtpServer
from postbus.anvil import PREFIX, Anvil
from postbus.queue.entry import QueueEntry
from postbus.servers import ServerProcess, free_port
from postbus.smtp import replies as r
from tests.integration.ingress.conftest import Client, make_config
from tests.tls_certs import Pki

pytestmark = pytest.mark.integration

HOST = "mx.postbus.test"
TOO_MANY = f"421 4.7.0 {HOST} Error: too many connections from 127.0.0.1"

Start = Callable[..., Awaitable[list[int]]]


@pytest.fixture
async def replicas(redis: ServerProcess) -> AsyncIterator[Start]:
    """``start(**main_cf)``: two servers (two replicas) of service "smtp" on one Redis."""
    clients: list[Redis] = []
    servers: list[SmtpServer] = []

    async def never(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        raise AssertionError("limit tests do not queue")

    async def start(redis_url: str = f"{redis.url}/0", **main_cf: str) -> list[int]:
        cfg = make_config(**main_cf)
        ports = []
        for _ in range(2):
            client = Redis.from_url(redis_url)
            clients.append(client)
            anvil = Anvil("smtp", cfg.time("anvil_rate_time_unit"),
                          redis=lambda c=client: c, timeout=2.0)  # type: ignore[misc]
            server = SmtpServer(cfg, never, listener="smtp", anvil=anvil)
            servers.append(server)
            ports.append((await server.start("127.0.0.1", 0))[0][1])
        return ports

    yield start
    for server in servers:
        await server.stop(grace=1.0)
    for client in clients:
        await client.aclose()


async def _open(port: int) -> tuple[Client, str]:
    client = await Client.connect(port)
    return client, await client.reply()


async def _warnings(caplog: pytest.LogCaptureFixture, count: int) -> list[str]:
    for _ in range(500):
        found = [rec.getMessage() for rec in caplog.records
                 if rec.name == "postbus.smtpd" and rec.levelno == logging.WARNING]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {count} warnings: {caplog.records}")


async def test_connection_count_is_shared_by_replicas(
    replicas: Start, caplog: pytest.LogCaptureFixture, redis: ServerProcess
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    a, b = await replicas(smtpd_client_connection_count_limit="2")
    first, banner = await _open(a)
    assert banner.startswith("220 ")
    second, banner = await _open(b)
    assert banner.startswith("220 ")
    third, reply = await _open(a)
    assert reply == TOO_MANY
    assert await third.reply() == "<EOF>"
    await third.close()
    assert await _warnings(caplog, 1) == [
        "Connection concurrency limit exceeded: 3 from unknown[127.0.0.1] for service smtp"]
    assert await first.cmd("QUIT") == r.BYE
    await first.close()
    client = Redis.from_url(f"{redis.url}/0")
    for _ in range(500):  # the QUIT's disconnect event leaves one connection counted
        if await client.zcard(PREFIX + "smtp:127.0.0.1:conns") == 1:
            break
        await asyncio.sleep(0.01)
    await client.aclose()
    fourth, banner = await _open(b)
    assert banner.startswith("220 ")
    for c in (second, fourth):
        await c.close()


async def test_connection_rate(replicas: Start, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    a, b = await replicas(smtpd_client_connection_rate_limit="3",
                          smtpd_client_connection_count_limit="0")
    for port in (a, b, a):
        client, banner = await _open(port)
        assert banner.startswith("220 ")
        await client.close()
    client, reply = await _open(b)
    assert reply == TOO_MANY
    await client.close()
    assert await _warnings(caplog, 1) == [
        "Connection rate limit exceeded: 4 from unknown[127.0.0.1] for service smtp"]


async def test_message_and_recipient_rates(
    replicas: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    a, b = await replicas(smtpd_client_message_rate_limit="2",
                          smtpd_client_recipient_rate_limit="2")
    one, _ = await _open(a)
    two, _ = await _open(b)
    assert await one.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await one.cmd("RCPT TO:<u@postbus.test>") == r.RCPT_OK
    assert await two.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await two.cmd("RCPT TO:<u@postbus.test>") == r.RCPT_OK
    assert await two.cmd("RCPT TO:<v@postbus.test>") == \
        "450 4.7.1 Error: too many recipients from 127.0.0.1"
    assert await one.cmd("VRFY u@postbus.test") == \
        "450 4.7.1 Error: too many recipients from 127.0.0.1"
    assert await one.cmd("RSET") == r.OK
    assert await one.cmd("MAIL FROM:<s@example.org>") == \
        "450 4.7.1 Error: too much mail from 127.0.0.1"
    assert (await one.cmd("MAIL FROM:")).startswith("501 ")  # syntax first, not counted
    assert await _warnings(caplog, 3) == [
        "Recipient address rate limit exceeded: 3 from unknown[127.0.0.1] for service smtp",
        "Recipient address rate limit exceeded: 4 from unknown[127.0.0.1] for service smtp",
        "Message delivery request rate limit exceeded: 3 from unknown[127.0.0.1] "
        "for service smtp",
    ]
    for c in (one, two):
        await c.close()


async def test_exceptions_are_not_limited(replicas: Start) -> None:
    a, b = await replicas(smtpd_client_connection_rate_limit="1",
                          smtpd_client_event_limit_exceptions="10.0.0.0/8, !127.0.0.2, "
                                                              "127.0.0.0/8")
    for port in (a, b, a, b):
        client, banner = await _open(port)
        assert banner.startswith("220 ")
        await client.close()


async def test_rate_period_ends_after_anvil_rate_time_unit(replicas: Start) -> None:
    a, b = await replicas(smtpd_client_connection_rate_limit="1", anvil_rate_time_unit="1s")
    client, banner = await _open(a)
    assert banner.startswith("220 ")
    await client.close()
    client, reply = await _open(b)
    assert reply == TOO_MANY
    await client.close()
    await asyncio.sleep(2.1)  # the period itself is what is tested
    client, banner = await _open(b)
    assert banner.startswith("220 ")
    await client.close()


async def test_new_tls_sessions(
    replicas: Start, caplog: pytest.LogCaptureFixture, tmp_path_factory: pytest.TempPathFactory
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    pki = Pki.create(tmp_path_factory.mktemp("pki"))
    cert, key = pki.server("server")
    a, b = await replicas(smtpd_client_new_tls_session_rate_limit="1",
                          smtpd_tls_security_level="may", smtpd_tls_cert_file=str(cert),
                          smtpd_tls_key_file=str(key))
    first, _ = await _open(a)
    assert await first.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    await first.starttls(pki.client_context())
    assert (await first.cmd("EHLO c")).startswith("250-")
    second, _ = await _open(b)
    assert await second.cmd("STARTTLS") == "220 2.0.0 Ready to start TLS"
    await second.starttls(pki.client_context())
    assert await second.reply() == f"421 4.7.0 {HOST} Error: too many new TLS sessions from " \
                                   "unknown[127.0.0.1]"
    third, _ = await _open(a)
    assert await third.cmd("STARTTLS") == \
        "454 4.7.0 Error: too many new TLS sessions from unknown[127.0.0.1]"
    assert await _warnings(caplog, 2) == [
        "New TLS session rate limit exceeded: 2 from unknown[127.0.0.1] for service smtp",
        "Refusing STARTTLS request from unknown[127.0.0.1] for service smtp",
    ]
    for c in (first, second, third):
        await c.close()


async def test_redis_down_fails_open_and_logs_once(
    replicas: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    a, _ = await replicas(redis_url=f"redis://127.0.0.1:{free_port()}/0",
                          smtpd_client_connection_rate_limit="1",
                          smtpd_client_message_rate_limit="1")
    for port in (a, a, a):
        client, banner = await _open(port)
        assert banner.startswith("220 ")
        assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
        assert await client.cmd("QUIT") == r.BYE
        await client.close()
    warnings = await _warnings(caplog, 1)
    assert len(warnings) == 1  # server a's anvil: once, not per session
    assert warnings[0].startswith("problem talking to server anvil (Redis): ")


async def test_connections_of_a_dead_process_stop_counting(redis: ServerProcess) -> None:
    """Each process refreshes the leases of its open connections; a process that died
    (here: stopped refreshing) has its connections dropped after one lease."""
    client = Redis.from_url(f"{redis.url}/0")
    key = PREFIX + "smtp:192.0.2.1:conns"

    async def live_members() -> int:
        seconds, micros = await client.time()
        return int(await client.zcount(key, seconds * 1000 + micros // 1000, "+inf"))

    dead = Anvil("smtp", 60, redis=lambda: client, lease=0.6)
    alive = Anvil("smtp", 60, redis=lambda: client, lease=0.6)
    try:
        assert (await dead.connect("192.0.2.1") or ("", 0, 0))[1] == 1
        assert (await alive.connect("192.0.2.1") or ("", 0, 0))[1] == 2
        await dead.close()  # its process is gone: nobody refreshes its lease
        for _ in range(1000):
            if await live_members() == 1:
                break
            await asyncio.sleep(0.01)
        assert await live_members() == 1
        started = asyncio.get_running_loop().time()
        while asyncio.get_running_loop().time() - started < 1.5:  # 2.5 leases
            assert await live_members() == 1  # alive's connection is kept
            await asyncio.sleep(0.05)
        got = await alive.connect("192.0.2.1")
        assert got is not None and got[1] == 2
    finally:
        await alive.close()
        await client.aclose()
