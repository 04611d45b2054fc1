"""Client limits (anvil) against a real Postfix 3.7: the same dialogues over-running the
connection count, connection rate, message and recipient rates get the same replies and log
lines. Our counters are in a real redis-server. Postfix runs where it is installed; the
recorded answers (``tests/data/postfix/smtpd_limits_dialogues.json``) stand in elsewhere.

Each configuration gets its own Postfix, and both servers see the same connections before
the dialogue: the port probe (closed) that every start makes, and for the count case one
connection held open. ``for service NAME`` is compared without the name: Postfix's is
its master.cf service, ours the test listener.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import re
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis

from ingress_smtpd.server import SmtpServer
from postbus.anvil import Anvil
from postbus.queue.entry import QueueEntry
from postbus.servers import ServerProcess
from tests.integration.ingress.conftest import BASE_MAIN_CF, Client, make_config
from tests.integration.postfix_dialogue import (
    Line,
    LivePostfix,
    dialogue,
    normalize,
    postfix_log,
)
from tests.recorded import Recording

pytestmark = pytest.mark.integration

RECORDING = Recording("smtpd_limits_dialogues")

BASE = {**BASE_MAIN_CF, "mail_name": "Postbus", "mydestination": "localhost",
        "smtpd_hard_error_limit": "100", "smtpd_soft_error_limit": "100"}

CONFIGS = {
    "count": {"smtpd_client_connection_count_limit": "1"},
    "rate": {"smtpd_client_connection_rate_limit": "1"},
    "events": {"smtpd_client_message_rate_limit": "1", "smtpd_client_recipient_rate_limit": "1"},
    "auth": {"smtpd_client_auth_rate_limit": "1"},
    "exempt": {"smtpd_client_connection_rate_limit": "1",
               "smtpd_client_event_limit_exceptions": "127.0.0.1"},
}

#: (configuration, hold one connection open, dialogue)
CASES: dict[str, tuple[str, bool, list[Line]]] = {
    "connection_count": ("count", True, ["EHLO c", "QUIT"]),
    "connection_rate": ("rate", False, ["EHLO c", "QUIT"]),
    "message_and_recipient_rates": ("events", False, [
        "EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>",
        "RCPT TO:<root@localhost>", "VRFY root", "RSET", "MAIL FROM:<a@b.example>",
        "MAIL FROM:", "RCPT TO:", "QUIT",
    ]),
    "auth_rate": ("auth", False, ["EHLO c", "AUTH PLAIN", "AUTH PLAIN AGFAAGI=", "QUIT"]),
    "exempt_client": ("exempt", False, ["EHLO c", "QUIT"]),
}

_SERVICE = re.compile(r" for service \S+$")


def _same(lines: list[str]) -> list[str]:
    return [_SERVICE.sub(" for service SERVICE", line) for line in normalize(lines)]


async def _run(port: int, hold: bool, lines: list[Line]) -> tuple[list[str], Client | None]:
    held = None
    if hold:
        held = await Client.connect(port)
        assert (await held.reply()).startswith("220 ")
    return await dialogue(port, lines), held


@pytest.fixture(scope="module")
def postfix() -> Iterator[Callable[[str], LivePostfix | None]]:
    started: dict[str, LivePostfix | None] = {}
    managers = []

    def get(config: str) -> LivePostfix | None:
        if config not in started:
            manager = LivePostfix.running({**BASE, **CONFIGS[config]})
            started[config] = manager.__enter__()
            managers.append(manager)
        return started[config]

    yield get
    for manager in reversed(managers):
        manager.__exit__(None, None, None)


@pytest.fixture
async def redis_client(redis: ServerProcess) -> AsyncIterator[Redis]:
    client = Redis.from_url(f"{redis.url}/0")
    yield client
    await client.aclose()


@pytest.mark.parametrize("name", list(CASES))
async def test_same_replies_and_log_as_postfix(
    name: str, postfix: Callable[[str], LivePostfix | None], redis_client: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config, hold, lines = CASES[name]
    live = postfix(config)
    answer = None
    if live is not None:
        start = live.maillog.stat().st_size
        replies, held = await _run(live.port, hold, lines)
        log = await asyncio.to_thread(postfix_log, live.maillog, start)
        if held is not None:
            await held.close()
        answer = {"replies": _same(replies), "log": _same(log)}
    expected = RECORDING.answer(name, None if answer is None else lambda: answer)

    async def never(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        raise AssertionError("comparison dialogues must not queue")

    cfg = make_config(**{**BASE, **CONFIGS[config]})
    anvil = Anvil("compare", cfg.time("anvil_rate_time_unit"), redis=lambda: redis_client)
    server = SmtpServer(cfg, never, listener="compare", anvil=anvil)
    port = (await server.start("127.0.0.1", 0))[0][1]
    caplog.set_level(logging.INFO, "postbus.smtpd")
    try:
        probe = await Client.connect(port)  # what LivePostfix's start did to Postfix
        await probe.close()
        for _ in range(250):
            if any(r.getMessage().startswith("disconnect from") for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        held = None
        if hold:
            held = await Client.connect(port)
            assert (await held.reply()).startswith("220 ")
        caplog.clear()
        replies = await dialogue(port, lines)
        for _ in range(250):
            if any(r.getMessage().startswith("disconnect from") for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        log = [("warning: " if rec.levelno == logging.WARNING else "") + rec.getMessage()
               for rec in caplog.records if rec.name == "postbus.smtpd"]
        if held is not None:
            await held.close()
    finally:
        await server.stop(grace=1.0)
    assert _same(replies) == expected["replies"]
    got = _same(log)
    diff = "\n".join(difflib.unified_diff(expected["log"], got, "postfix", "postbus",
                                          lineterm=""))
    assert got == expected["log"], diff
