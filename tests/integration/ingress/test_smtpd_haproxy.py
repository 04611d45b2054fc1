"""smtpd behind a PROXY-protocol load balancer, with the real queue: the proxied client is the
one queued and named in Received:, a header split over packets works, a peer that goes away
or lies gets a clean end and the server stays up. (Replies and log lines against a real
Postfix: tests/integration/test_smtpd_haproxy_vs_postfix.py.)"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import ssl
from collections.abc import Callable
from typing import TypeVar

import pytest

from postbus.config.conv import ConfigError
from postbus.haproxy import encode_v1, encode_v2
from postbus.smtp import replies as r
from tests.integration.ingress.conftest import Client, StartSmtpd, make_config
from tests.tls_certs import Pki

pytestmark = pytest.mark.integration

T = TypeVar("T")
PROXY = {"smtpd_upstream_proxy_protocol": "haproxy", "smtpd_upstream_proxy_timeout": "3s",
         "mynetworks": "192.0.2.0/24"}


async def _logged(caplog: pytest.LogCaptureFixture, start: str) -> str:
    for _ in range(500):
        for rec in caplog.records:
            if rec.getMessage().startswith(start):
                return rec.getMessage()
        await asyncio.sleep(0.01)
    raise AssertionError(f"no log line {start!r}")


@pytest.mark.parametrize("header", [
    encode_v1(("192.0.2.7", 40001), ("198.51.100.25", 25)),
    encode_v2(("192.0.2.7", 40001), ("198.51.100.25", 25)),
], ids=["v1", "v2"])
async def test_proxied_client_is_queued_and_in_received(
    smtpd: StartSmtpd, header: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    run = await smtpd(**PROXY)
    client = await Client.connect(run.port)
    run.clients.append(client)
    await client.send(header[:9])  # a header split over two packets
    await asyncio.sleep(0.05)
    await client.send(header[9:] + b"EHLO proxied.example\r\n")
    assert (await client.reply()).startswith("220 ")
    assert (await client.reply()).startswith("250-mx.postbus.test")
    assert await client.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    # relaying is allowed: 192.0.2.7 is in mynetworks, the proxy's 127.0.0.1 is not
    assert await client.cmd("RCPT TO:<x@example.com>") == r.RCPT_OK
    assert await client.cmd("DATA") == r.DATA_GO_AHEAD
    await client.send(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
    reply = await client.reply()
    match = re.match(r"^250 2\.0\.0 Ok: queued as (\S+)$", reply)
    assert match, reply
    got = await run.store.queue.get(match.group(1))
    assert got is not None
    entry, _ = got
    assert (entry.client_name, entry.client_addr) == ("unknown", "192.0.2.7")
    content = await run.store.queue.content(match.group(1), entry.chunks)
    assert content.startswith(b"Received: from proxied.example (unknown [192.0.2.7])\r\n")
    assert await _logged(caplog, "connect from") == "connect from unknown[192.0.2.7]"


async def test_peer_that_goes_away_or_lies_ends_cleanly(
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    run = await smtpd(**PROXY)
    client = await Client.connect(run.port)
    await client.send(b"PROXY TCP4 192.0.2.7")
    await client.close()  # half a header, then EOF
    assert (await _logged(caplog, "haproxy read")) == ("haproxy read: missing protocol header "
                                                       "terminator: PROXY TCP4 192.0.2.7")
    caplog.clear()
    client = await Client.connect(run.port)
    await client.close()  # nothing at all
    assert await _logged(caplog, "haproxy read") == "haproxy read: EOF"
    for junk in (bytes(range(256)), b"PROXY TCP4 " + b"\xff" * 2000, b"\r\n\r\n\x00" * 300):
        client = await Client.connect(run.port)
        await client.send(junk)
        assert await client.reply() == "421 4.3.0 mx.postbus.test Server local error"
        assert await client.reply() == "<EOF>"
        await client.close()
    assert not any(rec.exc_info for rec in caplog.records)
    client = await run.client(banner=False)  # still serving
    await client.send(encode_v1(("192.0.2.8", 1), ("192.0.2.1", 25)))
    assert (await client.reply()).startswith("220 ")


def test_other_proxy_protocols_are_refused_at_start() -> None:
    from ingress_smtpd.server import Settings

    with pytest.raises(ConfigError, match="unsupported smtpd_upstream_proxy_protocol value"):
        Settings.from_config(make_config(smtpd_upstream_proxy_protocol="nginx"))


def _wrapped_client(port: int, header: bytes, context: ssl.SSLContext) -> list[str]:
    """PROXY header and ClientHello in one packet, then TLS: the banner and an EHLO reply."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="mx.postbus.test")

    def pump(step: Callable[[], T]) -> T:
        while True:
            try:
                result = step()
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError("server closed") from None
                incoming.write(data)
                continue
            sock.sendall(outgoing.read())
            return result

    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()  # writes the ClientHello into ``outgoing``
    sock.sendall(header + outgoing.read())  # one write: the server must not eat the hello
    pump(tls.do_handshake)
    banner = pump(lambda: tls.read(4096)).decode()
    tls.write(b"EHLO c\r\n")
    reply = pump(lambda: tls.read(4096)).decode()
    sock.close()
    return [banner, reply]


@pytest.mark.parametrize("header", [
    encode_v1(("192.0.2.7", 40001), ("198.51.100.25", 465)),
    encode_v2(("192.0.2.7", 40001), ("198.51.100.25", 465)),
], ids=["v1", "v2"])
async def test_tls_on_connect_after_the_header(
    smtpd: StartSmtpd, header: bytes, tmp_path_factory: pytest.TempPathFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    pki = Pki.create(tmp_path_factory.mktemp("pki"))
    cert, key = pki.server("server")
    run = await smtpd(**PROXY, smtpd_tls_wrappermode="yes", smtpd_tls_cert_file=str(cert),
                      smtpd_tls_key_file=str(key))
    banner, reply = await asyncio.to_thread(_wrapped_client, run.port, header,
                                            pki.client_context())
    assert banner.startswith("220 mx.postbus.test ESMTP")
    assert reply.startswith("250-mx.postbus.test")
    assert await _logged(caplog, "connect from") == "connect from unknown[192.0.2.7]"
