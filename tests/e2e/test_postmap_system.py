"""A table built before the start is served; a rebuild reaches every replica within 1 s.

The order every Postfix administrator uses: ``postmap access`` while the
system (and its Redis) is stopped, then start; later ``postmap access``
again while it runs.  Two smtpd processes (two master.cf lines) answer
RCPT from ``check_recipient_access hash:.../access``; after the rebuild we
wait for the change event on the bus, then both must answer from the new
table within one second, although each had the old answer cached.
"""

from __future__ import annotations

import asyncio
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest
from nats.aio.msg import Msg

from postbus.bus.subjects import MAPS_CHANGED_SUBJECT
from postbus.servers import free_port
from tests.harness import MailSystem

pytestmark = pytest.mark.e2e


def postmap(conf: Path, spec: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "postbus.cli.main", "-c", str(conf),
                           "postmap", spec], capture_output=True, text=True, timeout=60)
    return proc.returncode, proc.stderr


def rcpt(port: int, address: str) -> tuple[int, str]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("client.postbus.test")
        client.mail("alice@example.com")
        code, text = client.rcpt(address)
        return code, text.decode()


async def test_postmap_before_start_then_rebuild_reaches_every_replica(tmp_path: Path) -> None:
    second_port = free_port()
    system = MailSystem(tmp_path, master_cf=(
        "127.0.0.1:{smtp_port} inet n - n - - smtpd\n"
        f"127.0.0.1:{second_port} inet n - n - - smtpd\n"
    ))
    access = system.conf / "access"
    main_cf = system.conf / "main.cf"
    main_cf.write_text(main_cf.read_text() + (
        f"smtpd_recipient_restrictions = check_recipient_access hash:{access},"
        " permit_mynetworks, reject_unauth_destination\n"
        "smtpd_error_sleep_time = 0\n"))
    access.write_text("blocked@postbus.test REJECT first\n")
    assert postmap(system.conf, f"hash:{access}") == (0, "")  # Redis is not running yet
    try:
        await asyncio.to_thread(system.start)
        ports = (system.smtp_port, second_port)
        first = "5.7.1 <blocked@postbus.test>: Recipient address rejected: first"
        for port in ports:  # served, and now cached by each replica
            assert await asyncio.to_thread(rcpt, port, "blocked@postbus.test") == (554, first)

        nc = await nats.connect(system.nats.url)
        events: asyncio.Queue[str] = asyncio.Queue()

        async def seen(msg: Msg) -> None:
            await events.put(msg.data.decode())

        await nc.subscribe(MAPS_CHANGED_SUBJECT, cb=seen)
        await nc.flush()
        access.write_text("blocked@postbus.test REJECT second\n")
        try:
            assert await asyncio.to_thread(postmap, system.conf, f"hash:{access}") == (0, "")
            assert await asyncio.wait_for(events.get(), 10) == f"hash:{access}"
        finally:
            await nc.close()
        deadline = time.monotonic() + 1.0
        second = "5.7.1 <blocked@postbus.test>: Recipient address rejected: second"
        for port in ports:
            while (reply := await asyncio.to_thread(rcpt, port, "blocked@postbus.test")) != (
                    554, second):
                assert time.monotonic() < deadline, f"port {port} still answers {reply}"
        assert await asyncio.to_thread(rcpt, system.smtp_port, "bob@postbus.test") == (
            250, "2.1.5 Ok")
    finally:
        await asyncio.to_thread(system.stop)
