"""The policy server bounds its input: a real process, real sockets.

Each bad client (a line too long, too many attributes, a request without
its empty line, a silent client, garbage, non-UTF-8) is answered correctly
or disconnected with one warning line, and the next client is served.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from postbus.policy_protocol import MAX_ATTRIBUTES, MAX_LINE, MAX_REQUEST
from tests.integration.policy.policy_process import PolicyProcess, start_policy

REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    b"client_address=192.0.2.1\nclient_name=client.example\nhelo_name=client.example\n"
    b"sender=alice@example.com\nrecipient=bob@example.net\nrecipient_count=0\n\n"
)
DUNNO = b"action=DUNNO\n\n"


@pytest.fixture(scope="module")
def policy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PolicyProcess]:
    server = start_policy(tmp_path_factory.mktemp("policy"),
                          "postbus_policy_max_idle = 1s\npostbus_policy_timeout = 2s\n")
    yield server
    server.stop()


def exchange(port: int, data: bytes, *, shut: bool = False) -> tuple[bytes, float]:
    """Send ``data``; everything the server sends until it closes, and how long that took."""
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        try:
            s.sendall(data)
            if shut:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may already have closed on a huge request
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass  # closed with our unread data in its buffer
    return out, time.monotonic() - start


def still_serves(policy: PolicyProcess) -> None:
    out, _ = exchange(policy.port, REQUEST, shut=True)
    assert out == DUNNO


def test_requests_on_one_connection(policy: PolicyProcess) -> None:
    out, _ = exchange(policy.port, REQUEST + REQUEST + b"request=x\r\n\r\n", shut=True)
    assert out == DUNNO * 3


def test_line_too_long(policy: PolicyProcess) -> None:
    out, _ = exchange(policy.port, b"sender=" + b"a" * MAX_LINE + b"\n\n")
    assert out == b""
    line = policy.wait_log(f"string length > {MAX_LINE} characters")
    assert "warning: string length > 8192 characters from 127.0.0.1:" in line
    still_serves(policy)


def test_line_at_the_limit_is_served(policy: PolicyProcess) -> None:
    line = b"sender=" + b"a" * (MAX_LINE - len(b"sender=") - 1) + b"\n"
    assert len(line) == MAX_LINE
    out, _ = exchange(policy.port, line + b"\n", shut=True)
    assert out == DUNNO


def test_too_many_attributes(policy: PolicyProcess) -> None:
    attrs = b"".join(b"a%d=x\n" % i for i in range(MAX_ATTRIBUTES + 1))
    out, _ = exchange(policy.port, attrs + b"\n")
    assert out == b""
    line = policy.wait_log("attribute count exceeds limit")
    assert "warning: attribute count exceeds limit 100 in input from 127.0.0.1:" in line
    still_serves(policy)


def test_endless_request_without_empty_line(policy: PolicyProcess) -> None:
    """Long lines, few attributes, no end: closed at the request size limit, not buffered."""
    value = b"v" * (MAX_LINE - 100)
    lines = b"".join(b"a%d=%s\n" % (i, value) for i in range(MAX_REQUEST // len(value) + 2))
    out, _ = exchange(policy.port, lines)
    assert out == b""
    line = policy.wait_log("request size exceeds limit")
    assert "warning: request size exceeds limit 65536 in input from 127.0.0.1:" in line
    still_serves(policy)


def test_silent_in_the_middle_of_a_request(policy: PolicyProcess) -> None:
    out, took = exchange(policy.port, b"request=smtpd_access_policy\nsender=a@b")
    assert out == b""
    assert took >= 1.5  # postbus_policy_timeout = 2s, counted from the first byte
    line = policy.wait_log("while reading input attribute")
    assert "warning: timeout on 127.0.0.1:" in line
    still_serves(policy)


def test_silent_client_is_disconnected(policy: PolicyProcess) -> None:
    start = time.monotonic()
    with socket.create_connection(("127.0.0.1", policy.port), timeout=20) as s:
        assert s.recv(100) == b""  # closed by the server after postbus_policy_max_idle
    assert time.monotonic() - start >= 0.5
    line = policy.wait_log("idle timeout after 1s")
    assert "warning" not in line
    still_serves(policy)


def test_idle_between_requests_then_disconnected(policy: PolicyProcess) -> None:
    with socket.create_connection(("127.0.0.1", policy.port), timeout=20) as s:
        s.sendall(REQUEST)
        out = b""
        while len(out) < len(DUNNO):
            out += s.recv(100)
        assert out == DUNNO
        assert s.recv(100) == b""


@pytest.mark.parametrize("garbage, warning", [
    (b"\x00\xff\xfe\x80 no equals sign here\n\n",
     "warning: missing value for string attribute ?\ufffd\ufffd\ufffd no equals sign here"),
    (b"GET / HTTP/1.0\r\n\r\n", "warning: missing value for string attribute GET / HTTP/1.0"),
    (b"request=smtpd_access_policy\nsender=a@b", "warning: premature end-of-input on"),
])
def test_garbage_is_refused(policy: PolicyProcess, garbage: bytes, warning: str) -> None:
    out, _ = exchange(policy.port, garbage, shut=True)
    assert out == b""
    policy.wait_log(warning)
    still_serves(policy)


def test_non_utf8_values_are_answered(policy: PolicyProcess) -> None:
    request = REQUEST.replace(b"alice@example.com", b"\xe9l\xe8ve\xff@exa\xc3mple.com")
    out, _ = exchange(policy.port, request + b"=\n\n" + b"\xff=\xfe\n\n", shut=True)
    assert out == DUNNO * 3  # "=" alone: an empty name and value, still a request
    still_serves(policy)
