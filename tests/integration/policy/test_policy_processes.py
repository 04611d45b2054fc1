"""Policy service processes: a changed main.cf taken without a restart (the last good
configuration kept when the new one is bad), several processes on one address."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from postbus.servers import ServerProcess
from tests.integration.policy.policy_process import start_policy

pytestmark = pytest.mark.integration

REQUEST = (b"request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=192.0.2.1\n"
           b"client_name=c.example\nsender=a@example.com\nrecipient=b@example.net\n\n")


def ask(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(REQUEST)
        out = b""
        while not out.endswith(b"\n\n"):
            chunk = s.recv(4096)
            assert chunk, out
            out += chunk
    return out


def test_reload(redis: ServerProcess, tmp_path: Path) -> None:
    base = f"postbus_redis_url = {redis.url}/0\n"
    policy = start_policy(tmp_path, base)
    try:
        assert ask(policy.port) == b"action=DUNNO\n\n"
        main_cf = tmp_path / "policy" / "main.cf"
        main_cf.write_text(main_cf.read_text() + "postbus_policy_checks = greylist\n")
        policy.wait_log("reload -- configuration")
        assert ask(policy.port) == (b"action=DEFER_IF_PERMIT Greylisted, see "
                                    b"http://postgrey.schweikert.ch/help/example.net.html\n\n")
        main_cf.write_text(main_cf.read_text() + "postbus_policy_checks = postgrey\n")
        line = policy.wait_log("reload of policy failed")
        assert "unknown check 'postgrey'" in line
        assert ask(policy.port).startswith(b"action=DEFER_IF_PERMIT Greylisted")
    finally:
        policy.stop()


def test_processes_of_one_line_share_its_port(redis: ServerProcess, tmp_path: Path) -> None:
    """maxproc 2: two processes on one address (SO_REUSEPORT), one greylist in Redis."""
    main_cf = f"postbus_redis_url = {redis.url}/0\npostbus_policy_checks = greylist\n"
    a = start_policy(tmp_path, main_cf, "a", maxproc="2")
    b = start_policy(tmp_path, main_cf, "b", port=a.port, maxproc="2")
    try:
        answers = {ask(a.port) for _ in range(40)}  # new connections: the kernel spreads them
        assert answers == {b"action=DEFER_IF_PERMIT Greylisted, see "
                           b"http://postgrey.schweikert.ch/help/example.net.html\n\n"}
        a.wait_log("action=greylist, reason=")
        b.wait_log("action=greylist, reason=")  # both served, from the one triplet
    finally:
        a.stop()
        b.stop()
