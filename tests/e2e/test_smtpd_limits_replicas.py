"""Two smtpd processes on one port (maxproc 2, SO_REUSEPORT) behind a PROXY-protocol balancer
share one client's limits through Redis (issue #11, items 5 and 6): the message rate of the
proxied client 192.0.2.7 adds up over both processes, and another proxied client has its own.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postbus.haproxy import encode_v1
from tests.harness import MASTER_CF, MailSystem

pytestmark = pytest.mark.e2e

SMTPD_LINE = "127.0.0.1:{smtp_port} inet n - n - - smtpd"


@pytest.fixture
def system(tmp_path: Path) -> Iterator[MailSystem]:
    assert SMTPD_LINE in MASTER_CF
    master = MASTER_CF.replace(
        SMTPD_LINE, "127.0.0.1:{smtp_port} inet n - n - 2 smtpd\n"
                    "  -o smtpd_upstream_proxy_protocol=haproxy")
    system = MailSystem(tmp_path, {"smtpd_client_message_rate_limit": "2"}, master)
    smtpd = [label for label in system.children if label.startswith("127.0.0.1:")]
    assert len(smtpd) == 2
    system.start(only=smtpd)
    yield system
    system.stop()


class Conn:
    def __init__(self, port: int, client: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.file = self.sock.makefile("rb")
        self.sock.sendall(encode_v1((client, 40000), ("127.0.0.1", port)))
        assert self.reply().startswith("220 ")

    def reply(self) -> str:
        lines = []
        while True:
            line = self.file.readline().decode().rstrip("\r\n")
            lines.append(line)
            if len(line) < 4 or line[3] != "-":
                return "\n".join(lines)

    def cmd(self, line: str) -> str:
        self.sock.sendall(line.encode() + b"\r\n")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _connects(system: MailSystem, client: str) -> list[str]:
    """The pids of the smtpd processes that logged ``connect from`` this client, in order."""
    text = system.maillog.read_text(errors="replace") if system.maillog.exists() else ""
    return re.findall(rf"\[(\d+)\]: connect from unknown\[{re.escape(client)}\]", text)


def test_message_rate_is_shared_by_two_processes(system: MailSystem) -> None:
    by_pid: dict[str, Conn] = {}
    extra: list[Conn] = []
    for _ in range(40):  # the kernel picks the process: connect until both have one
        conn = Conn(system.smtp_port, "192.0.2.7")
        seen = len(by_pid) + len(extra) + 1
        pids = system.wait_for(lambda n=seen: (p := _connects(system, "192.0.2.7"))[n - 1:]
                               and p, timeout=15)
        assert pids, system.maillog.read_text()
        pid = pids[-1]
        if pid in by_pid:
            extra.append(conn)
        else:
            by_pid[pid] = conn
        if len(by_pid) == 2:
            break
    assert len(by_pid) == 2, "SO_REUSEPORT gave every connection to one process"
    first, second = by_pid.values()
    assert first.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert second.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    assert first.cmd("RSET") == "250 2.0.0 Ok"
    # the third message of the period, whichever process sees it
    assert first.cmd("MAIL FROM:<a@example.org>") == \
        "450 4.7.1 Error: too much mail from 192.0.2.7"
    other = Conn(system.smtp_port, "192.0.2.8")
    assert other.cmd("MAIL FROM:<a@example.org>") == "250 2.1.0 Ok"
    deadline = time.monotonic() + 15
    while "Message delivery request rate limit exceeded" not in system.maillog.read_text():
        assert time.monotonic() < deadline, system.maillog.read_text()
        time.sleep(0.05)
    assert re.search(r"warning: Message delivery request rate limit exceeded: 3 from "
                     r"unknown\[192\.0\.2\.7\] for service \S+", system.maillog.read_text())
    for conn in [*by_pid.values(), *extra, other]:
        conn.close()
