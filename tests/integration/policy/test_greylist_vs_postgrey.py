"""Our greylisting against Debian's postgrey 1.37, step by step on the same requests.

postgrey takes its clock from the ``policy_test_time`` attribute (its own test hook), our
check from an injected clock, so a scenario of days runs at once: new triplets, early
retries, the pass and its X-Greylist header, a repeated pass, VERP senders and /24
neighbours, the client auto-whitelist (counted at most once an hour), the retry window.
postgrey's answers are recorded in tests/data/postfix/postgrey_greylist.json for machines
without it (refresh with POSTBUS_RECORD_POSTFIX=1 where it is installed).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from policy.checks import Checks
from policy.store import Store
from postbus.config.loader import Config
from postbus.servers import ServerProcess, free_port, wait_port
from tests.recorded import Recording

pytestmark = pytest.mark.integration

T0 = 1_700_000_000
A = {"client_address": "192.0.2.10", "client_name": "mx.example.org",
     "sender": "alice@example.org", "recipient": "bob@example.net"}
STEPS: list[tuple[int, dict[str, str]]] = [
    (0, A),
    (100, A),  # early retry
    (301, A),  # passes, with the header
    (302, A),  # passed before: no header
    (400, A | {"recipient": "carol@example.net"}),
    (700, A | {"recipient": "carol@example.net", "client_address": "192.0.2.77"}),  # /24
    (4000, A | {"recipient": "dave@example.net"}),
    (4300, A | {"recipient": "dave@example.net"}),  # second pass an hour later: AWL (2)
    (4400, A | {"recipient": "erin@example.net"}),  # whitelisted client
    (4401, A | {"recipient": "erin@example.net", "client_address": "192.0.2.11"}),
    (4500, {"client_address": "198.51.100.5", "client_name": "lists.example",
            "sender": "news-123+abc@lists.example", "recipient": "bob@example.net"}),
    (4800, {"client_address": "198.51.100.5", "client_name": "lists.example",
            "sender": "news-456@lists.example", "recipient": "bob@example.net"}),  # VERP
    (5000, A | {"client_address": "203.0.113.1"}),
    (5000 + 2 * 86400 + 1, A | {"client_address": "203.0.113.1"}),  # beyond retry window
    (5000 + 2 * 86400 + 301, A | {"client_address": "203.0.113.1"}),
]
RECORDING = Recording("postgrey_greylist")


def _normalize(action: str) -> str:
    return re.sub(r"; [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \S+$", "; DATE",
                  action)


def _request(n: int, attrs: dict[str, str], now: int | None) -> dict[str, str]:
    req = {"request": "smtpd_access_policy", "protocol_state": "RCPT", "etrn_domain": "",
           "instance": f"i{n}", **attrs}
    if now is not None:
        req["policy_test_time"] = str(now)
    return req


def postgrey_answers(tmp: Path) -> list[str] | None:
    exe = shutil.which("postgrey") or ("/usr/sbin/postgrey"
                                       if os.path.exists("/usr/sbin/postgrey") else None)
    if exe is None:
        return None
    port = free_port()
    dbdir = tmp / "postgrey"
    dbdir.mkdir()
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    proc = subprocess.Popen(
        [exe, f"--inet=127.0.0.1:{port}", f"--dbdir={dbdir}", "--delay=300",
         "--auto-whitelist-clients=2", f"--user={user}", "--hostname=postbus.test"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port, 30)
        out = []
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            for n, (offset, attrs) in enumerate(STEPS):
                req = _request(n, attrs, T0 + offset)
                s.sendall("".join(f"{k}={v}\n" for k, v in req.items()).encode() + b"\n")
                reply = b""
                while not reply.endswith(b"\n\n"):
                    chunk = s.recv(4096)
                    assert chunk, reply
                    reply += chunk
                out.append(_normalize(reply.decode().strip().removeprefix("action=")))
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def test_greylisting_answers_as_postgrey(redis: ServerProcess, tmp_path: Path) -> None:
    live = postgrey_answers(tmp_path) if shutil.which("postgrey") or os.path.exists(
        "/usr/sbin/postgrey") else None
    expected: Any = RECORDING.answer("steps", (lambda: live) if live is not None else None)
    now = [0.0]
    client = Redis.from_url(f"{redis.url}/0")
    try:
        checks = Checks(Config.from_text(
            "myhostname = postbus.test\npostbus_policy_checks = greylist\n"
            "postbus_policy_greylist_auto_whitelist_clients = 2\n"
            "postbus_policy_greylist_header = X-Greylist: delayed %t seconds by "
            "postgrey-1.37 at %h; %d\n"), Store(lambda: client), clock=lambda: now[0])
        ours = []
        for n, (offset, attrs) in enumerate(STEPS):
            now[0] = T0 + offset
            ours.append(_normalize(await checks.answer(_request(n, attrs, None))))
    finally:
        await client.aclose()
    assert ours == expected
