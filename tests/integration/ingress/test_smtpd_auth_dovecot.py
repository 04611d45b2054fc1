"""smtpd_sasl_type = dovecot against a real Dovecot (Debian's dovecot-core, started by the
test with its own configuration on loopback): inet and unix sockets, a path relative to
queue_directory, a Dovecot that goes away or never answers."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
from collections.abc import Iterator

import pytest

from postbus.sasl.dovecot import DovecotBackend
from postbus.smtp import replies as r
from tests.dovecot_instance import DOVECOT, Dovecot
from tests.integration.ingress.conftest import StartSmtpd, make_config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(DOVECOT is None, reason="dovecot (Debian's dovecot-core) is not installed"),
]

PLAIN_ALICE = "AUTH PLAIN " + base64.b64encode(b"\0alice\0s3cret").decode()


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    server = Dovecot({"alice": "s3cret"}).start()
    yield server
    server.stop()


def cf(path: str, **extra: str) -> dict[str, str]:
    return {"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": path, **extra}


async def test_inet_unix_and_relative_paths(
    smtpd: StartSmtpd, dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postbus.smtpd")
    for path, extra in ((f"inet:127.0.0.1:{dovecot.port}", {}),
                        (f"unix:{dovecot.socket_path}", {}),
                        (str(dovecot.socket_path), {}),
                        ("auth", {"queue_directory": str(dovecot.root)})):
        run = await smtpd(**cf(path, **extra))
        c = await run.client()
        assert "250-AUTH PLAIN LOGIN\n" in await c.cmd("EHLO c.example"), path
        assert await c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
        assert await c.cmd(base64.b64encode(b"alice").decode()) == "334 UGFzc3dvcmQ6"
        assert await c.cmd(base64.b64encode(b"nope").decode()) == \
            "535 5.7.8 Error: authentication failed: (reason unavailable)"
        assert await c.cmd(PLAIN_ALICE) == r.AUTH_OK, path
        await c.cmd("QUIT")
    assert "SASL LOGIN authentication failed: (reason unavailable), sasl_username=alice" \
        in caplog.text


async def test_dovecot_gone_is_a_temporary_failure_and_never_there_offers_nothing(
    smtpd: StartSmtpd, dovecot: Dovecot, caplog: pytest.LogCaptureFixture
) -> None:
    run = await smtpd(**cf(f"inet:127.0.0.1:{dovecot.port}"))
    c = await run.client()
    assert "250-AUTH PLAIN LOGIN\n" in await c.cmd("EHLO c.example")
    dovecot.stop()
    # the open connection is lost (seen at once, or only when the request meets it)
    assert await c.cmd(PLAIN_ALICE) in (
        "454 4.7.0 Temporary authentication failure: Can't connect to authentication server",
        "454 4.7.0 Temporary authentication failure: Connection lost to authentication server")
    c = await run.client()
    await c.cmd("EHLO c.example")
    assert await c.cmd(PLAIN_ALICE) == \
        "454 4.7.0 Temporary authentication failure: Can't connect to authentication server"
    assert f"SASL: Connect to Dovecot auth socket 'inet:127.0.0.1:{dovecot.port}' failed" \
        in caplog.text
    assert await c.cmd("NOOP") == r.OK
    missing = await smtpd(**cf(str(dovecot.root / "no-such-socket")))
    d = await missing.client()
    assert "AUTH" not in await d.cmd("EHLO c.example")
    assert await d.cmd(PLAIN_ALICE) == r.AUTH_NOT_ENABLED
    assert "no-such-socket' failed: No such file or directory" in caplog.text


async def test_challenge_response_mechanism_passes_through(smtpd: StartSmtpd) -> None:
    """CRAM-MD5 from Dovecot: offered, kept by noplaintext, its challenge and response
    carried through untouched."""
    server = Dovecot({"alice": "s3cret"}, mechanisms="plain login cram-md5")
    server.start()
    try:
        run = await smtpd(**cf(f"inet:127.0.0.1:{server.port}",
                               smtpd_sasl_security_options="noanonymous, noplaintext"))
        c = await run.client()
        assert "250-AUTH CRAM-MD5\n" in await c.cmd("EHLO c.example")
        assert await c.cmd(PLAIN_ALICE) == \
            "535 5.7.8 Error: authentication failed: Invalid authentication mechanism"
        reply = await c.cmd("AUTH CRAM-MD5")
        assert reply.startswith("334 ")
        challenge = base64.b64decode(reply[4:])
        digest = hmac.new(b"s3cret", challenge, hashlib.md5).hexdigest()
        assert await c.cmd(base64.b64encode(f"alice {digest}".encode()).decode()) == r.AUTH_OK
        filtered = await smtpd(**cf(f"inet:127.0.0.1:{server.port}",
                                    smtpd_sasl_mechanism_filter="!plain, static:rest"))
        d = await filtered.client()
        assert "250-AUTH LOGIN CRAM-MD5\n" in await d.cmd("EHLO c.example")
        assert await d.cmd(PLAIN_ALICE) == r.AUTH_OK  # hidden, not refused (as Postfix)
    finally:
        server.stop()


async def test_concurrent_sessions_share_one_dovecot_connection(
    smtpd: StartSmtpd, dovecot: Dovecot
) -> None:
    """Twenty sessions authenticate at once (right and wrong passwords, LOGIN's two steps
    in between): each gets its own answer."""
    run = await smtpd(**cf(f"inet:127.0.0.1:{dovecot.port}"))

    async def one(i: int) -> tuple[str, str]:
        c = await run.client()
        await c.cmd("EHLO c.example")
        password = "s3cret" if i % 2 == 0 else "bad"
        if i % 3 == 0:
            await c.cmd("AUTH LOGIN")
            await c.cmd(base64.b64encode(b"alice").decode())
            reply = await c.cmd(base64.b64encode(password.encode()).decode())
        else:
            reply = await c.cmd("AUTH PLAIN " + base64.b64encode(
                f"\0alice\0{password}".encode()).decode())
        await c.cmd("QUIT")
        return password, reply

    for password, reply in await asyncio.gather(*(one(i) for i in range(20))):
        expected = r.AUTH_OK if password == "s3cret" else \
            "535 5.7.8 Error: authentication failed: (reason unavailable)"
        assert reply == expected


async def test_reload_keeps_the_same_backend_and_closes_a_replaced_one(
    smtpd: StartSmtpd, dovecot: Dovecot
) -> None:
    settings = cf(f"inet:127.0.0.1:{dovecot.port}")
    run = await smtpd(**settings)
    c = await run.client()
    await c.cmd("EHLO c.example")
    assert await c.cmd(PLAIN_ALICE) == r.AUTH_OK
    backend = run.server.settings.auth.backend
    assert isinstance(backend, DovecotBackend) and backend._conn is not None
    run.server.reconfigure(make_config(**settings))
    assert run.server.settings.auth.backend is backend
    run.server.reconfigure(make_config(**cf(f"unix:{dovecot.socket_path}")))
    assert run.server.settings.auth.backend is not backend
    deadline = asyncio.get_running_loop().time() + 10
    while backend._conn is not None:  # closed by a task of its own
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    d = await run.client()
    await d.cmd("EHLO c.example")
    assert await d.cmd(PLAIN_ALICE) == r.AUTH_OK
