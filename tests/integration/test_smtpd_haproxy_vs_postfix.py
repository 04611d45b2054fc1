"""smtpd behind a load balancer (smtpd_upstream_proxy_protocol = haproxy): our smtpd against a
real Postfix 3.7, same PROXY v1/v2 headers, same replies and log lines.

The proxied client address must drive mynetworks (192.0.2.0/24 may relay, others may not)
and the log; a missing, lying or malformed header gets Postfix's ``warning: haproxy read:``
line and ``421 4.3.0 <host> Server local error``. Postfix runs where it is installed; the
recorded answers (``tests/data/postfix/smtpd_haproxy_dialogues.json``) stand in elsewhere.
Postfix logs the header warning before ``connect from``, so its log is read from the
session's first line rather than from ``connect from`` as the shared helper does.
"""

from __future__ import annotations

import asyncio
import difflib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from ingress_smtpd.server import SmtpServer
from postbus.haproxy import V2_SIGNATURE, encode_v1, encode_v2
from postbus.queue.entry import QueueEntry
from tests.integration.ingress.conftest import BASE_MAIN_CF, make_config
from tests.integration.postfix_dialogue import (
    _PREFIX,
    _QID,
    NO_BANNER,
    READ,
    Line,
    LivePostfix,
    Wait,
    dialogue,
    normalize,
)
from tests.recorded import Recording

pytestmark = pytest.mark.integration

RECORDING = Recording("smtpd_haproxy_dialogues")

SETTINGS = {
    **BASE_MAIN_CF,
    "mail_name": "Postbus",
    "mydestination": "localhost",
    "mynetworks": "192.0.2.0/24, [2001:db8:1::]/48",
    "inet_protocols": "all",
    "smtpd_hard_error_limit": "100",
    "smtpd_soft_error_limit": "100",
    "smtpd_upstream_proxy_protocol": "haproxy",
    "smtpd_upstream_proxy_timeout": "2s",
}

SERVER = ("198.51.100.25", 25)
RELAY = ["EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<x@example.com>", "QUIT"]


def _v2(ver_cmd: int, fam: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + len(body).to_bytes(2, "big") + body


CASES: dict[str, list[Line]] = {
    "v1_tcp4_in_mynetworks": [NO_BANNER, encode_v1(("192.0.2.7", 40001), SERVER), READ, *RELAY],
    "v1_tcp4_elsewhere": [NO_BANNER, encode_v1(("203.0.113.9", 40002), SERVER), READ, *RELAY],
    "v1_tcp6": [NO_BANNER, b"PROXY TCP6 2001:DB8:1:0::7 2001:db8::25 40003 25\r\n", READ,
                *RELAY],
    "v1_tcp6_v4_mapped": [NO_BANNER, b"PROXY TCP6 ::ffff:192.0.2.8 ::1 40004 25\r\n", READ,
                          *RELAY],
    "v1_extra_spaces_and_cr": [NO_BANNER, b"PROXY  TCP4 192.0.2.9\r203.0.113.1  1 25 x\r\n",
                               READ, "QUIT"],
    "v1_unknown": [NO_BANNER, b"PROXY UNKNOWN\r\n", READ],
    "v1_unknown_with_addresses": [NO_BANNER, b"PROXY UNKNOWN 192.0.2.7 1.2.3.4 1 2\r\n", READ],
    "v1_lowercase_proto": [NO_BANNER, b"PROXY tcp4 192.0.2.7 1.2.3.4 1 2\r\n", READ, "QUIT"],
    "v1_bad_client_address": [NO_BANNER, b"PROXY TCP4 192.0.2 1.2.3.4 1 2\r\n", READ],
    "v1_zero_first_octet": [NO_BANNER, b"PROXY TCP4 0.1.2.3 1.2.3.4 1 2\r\n", READ],
    "v1_ipv6_in_tcp4": [NO_BANNER, b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n", READ],
    "v1_bad_server_address": [NO_BANNER, b"PROXY TCP6 ::1 1:2:3:4:5:6:7:8:9 1 2\r\n", READ],
    "v1_port_leading_zero": [NO_BANNER, b"PROXY TCP4 192.0.2.7 1.2.3.4 01 25\r\n", READ],
    "v1_port_too_big": [NO_BANNER, b"PROXY TCP4 192.0.2.7 1.2.3.4 1 65536\r\n", READ],
    "v1_missing_port": [NO_BANNER, b"PROXY TCP4 192.0.2.7 1.2.3.4 1\r\n", READ],
    "v1_no_terminator": [NO_BANNER, b"PROXY TCP4 " + b"9" * 120, READ],
    "v1_nul_in_line": [NO_BANNER, b"PROXY TCP4 192.0.2.7\x00 1.2.3.4 1 2\r\n", READ],
    "no_header_smtp": [NO_BANNER, b"EHLO c\r\n", READ],
    "no_header_long_line": [NO_BANNER, b"EHLO a-client-that-knows-nothing-of-proxies\r\n",
                            READ],
    "no_header_timeout": [NO_BANNER, Wait(10)],
    "v2_tcp4": [NO_BANNER, encode_v2(("192.0.2.10", 40005), SERVER), READ, *RELAY],
    "v2_tcp4_elsewhere": [NO_BANNER, encode_v2(("203.0.113.10", 40006), SERVER), READ, *RELAY],
    "v2_tcp6": [NO_BANNER, encode_v2(("2001:db8:1::10", 40007), ("2001:db8::25", 25)), READ,
                *RELAY],
    "v2_tcp6_v4_mapped": [NO_BANNER, encode_v2(("::ffff:192.0.2.11", 1), ("::1", 25)), READ,
                          *RELAY],
    "v2_with_tlvs": [NO_BANNER, encode_v2(("192.0.2.12", 40008), SERVER,
                                          b"\x04\x00\x05hello\x01\x00\x04smtp"), READ, *RELAY],
    "v2_local": [NO_BANNER, encode_v2(None), READ, *RELAY],
    "v2_bad_version": [NO_BANNER, _v2(0x11, 0x11, bytes(12)), READ],
    "v2_bad_command": [NO_BANNER, _v2(0x22, 0x11, bytes(12)), READ],
    "v2_udp": [NO_BANNER, _v2(0x21, 0x12, bytes(12)), READ],
    "v2_unix": [NO_BANNER, _v2(0x21, 0x31, bytes(216)), READ],
    "v2_unspec_proxy": [NO_BANNER, _v2(0x21, 0x00, b""), READ],
    "v2_short_address": [NO_BANNER, _v2(0x21, 0x11, bytes(4)), READ],
    "v2_length_beyond_bound": [NO_BANNER, V2_SIGNATURE + b"\x21\x11\xff\xff" + bytes(64), READ],
    "v2_bad_signature": [NO_BANNER, b"\r\n\r\n\x00\r\nQUIX\n\x21\x11\x00\x0c" + bytes(12),
                         READ],
}


@pytest.fixture(scope="module")
def postfix() -> Iterator[LivePostfix | None]:
    with LivePostfix.running(SETTINGS) as live:
        yield live


@pytest.fixture
async def ours() -> AsyncIterator[int]:
    async def never(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        raise AssertionError("comparison dialogues must not queue")

    server = SmtpServer(make_config(**SETTINGS), never, listener="compare")
    port = (await server.start("127.0.0.1", 0))[0][1]
    yield port
    await server.stop(grace=1.0)


def _session_log(maillog: Path, start: int) -> list[str]:
    """The smtpd lines Postfix wrote since ``start``, the warning before connect included."""
    deadline = time.monotonic() + 15
    while True:
        text = maillog.read_text(errors="replace")[start:]
        if "disconnect from" in text or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    lines = []
    for line in text.splitlines():
        prefix = _PREFIX.match(line)
        if prefix is not None:
            lines.append(_QID.sub("NOQUEUE: ", line[prefix.end():]))
    return normalize(lines)


async def _postfix_answer(live: LivePostfix, lines: list[Line]) -> dict[str, list[str]]:
    start = live.maillog.stat().st_size if live.maillog.exists() else 0
    replies = normalize(await dialogue(live.port, lines))
    log = await asyncio.to_thread(_session_log, live.maillog, start)
    return {"replies": replies, "log": log}


@pytest.mark.parametrize("name", list(CASES))
async def test_same_replies_and_log_as_postfix(
    name: str, postfix: LivePostfix | None, ours: int, caplog: pytest.LogCaptureFixture
) -> None:
    lines = CASES[name]
    answer = await _postfix_answer(postfix, lines) if postfix is not None else None
    expected = RECORDING.answer(name, None if answer is None else lambda: answer)
    caplog.set_level(logging.INFO, "postbus.smtpd")
    caplog.clear()
    replies = normalize(await dialogue(ours, lines))
    for _ in range(250):
        if any(rec.getMessage().startswith("disconnect from") for rec in caplog.records):
            break
        await asyncio.sleep(0.02)
    log = normalize([
        ("warning: " if rec.levelno == logging.WARNING else "") + rec.getMessage()
        for rec in caplog.records if rec.name == "postbus.smtpd"
    ])
    assert replies == expected["replies"]
    diff = "\n".join(difflib.unified_diff(expected["log"], log, "postfix", "postbus",
                                          lineterm=""))
    assert log == expected["log"], diff
