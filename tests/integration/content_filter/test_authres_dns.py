"""Authentication-Results against a real DNS server on loopback: DKIM fail and
temperror, SPF fail, DMARC fail and the organizational-domain fallback."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import dkim
import pytest

from content_filter.authres import Verifier
from postbus.cli.dkim import keygen
from postbus.config.loader import Config
from tests.integration.delivery.peers import DnsServer

MESSAGE = (b"From: Carol <carol@news.corp.test>\r\nTo: x@remote.test\r\nSubject: s\r\n"
           b"Date: Mon, 30 Nov 2026 08:00:00 +0000\r\n\r\nbody\r\n")


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Verifier, bytes]]:
    private, record = keygen("news.corp.test", "k1", 1024, tmp_path)
    txt = " ".join(f'"{s}"' for s in re.findall(r'"([^"]*)"', record))
    zone = {
        ("k1._domainkey.news.corp.test", "TXT"): [txt],
        ("corp.test", "TXT"): ['"v=spf1 ip4:192.0.2.1 -all"'],
        ("_dmarc.corp.test", "TXT"): ['"v=DMARC1; p=quarantine"'],
    }
    server = await DnsServer(zone, servfail=("k2._domainkey.news.corp.test",)).start()
    cfg = Config.from_text(f"postbus_dns_servers = 127.0.0.1:{server.port}\n"
                           "postbus_authserv_id = mx.test\n")
    signature = dkim.sign(MESSAGE, b"k1", b"news.corp.test", private.read_bytes(),
                          include_headers=[b"from", b"subject"])
    yield Verifier(cfg), signature
    server.close()


def results(header: bytes) -> list[str]:
    text = header.decode().split(":", 1)[1]
    return [re.sub(r"\s+", " ", part).strip() for part in text.split(";")][1:]


async def test_aligned_dkim_pass_passes_dmarc_through_the_org_domain(
        setup: tuple[Verifier, bytes]) -> None:
    verifier, signature = setup
    header, drop = await verifier.verify(signature + MESSAGE, "bounce@corp.test",
                                         "192.0.2.1", "mx.corp.test")
    b = re.search(rb"b=([^;]{8})", signature.replace(b"\r\n", b"").replace(b" ", b""))
    assert b is not None
    assert results(header) == [
        f"dkim=pass header.d=news.corp.test header.s=k1 header.b={b.group(1).decode()}",
        "spf=pass smtp.mailfrom=bounce@corp.test",
        "dmarc=pass (p=quarantine) header.from=news.corp.test"]
    assert drop == []


async def test_broken_signature_and_wrong_client_fail_dmarc(
        setup: tuple[Verifier, bytes]) -> None:
    verifier, signature = setup
    forged = b"Authentication-Results: MX.test; dmarc=pass\r\n"
    header, drop = await verifier.verify(forged + signature + MESSAGE.replace(b"body", b"b0dy"),
                                         "bounce@corp.test", "192.0.2.99", "mx.corp.test")
    got = results(header)
    assert got[0].startswith("dkim=fail header.d=news.corp.test header.s=k1 ")
    assert got[1:] == ["spf=fail smtp.mailfrom=bounce@corp.test",
                       "dmarc=fail (p=quarantine) header.from=news.corp.test"]
    assert drop == [0]  # the forged header with our authserv-id goes


async def test_dns_failure_is_temperror_and_local_mail_has_no_spf(
        setup: tuple[Verifier, bytes]) -> None:
    verifier, signature = setup
    header, _ = await verifier.verify(signature.replace(b"s=k1", b"s=k2") + MESSAGE,
                                      "", "", "")
    got = results(header)
    assert got[0].startswith("dkim=temperror header.d=news.corp.test header.s=k2 ")
    assert got[1:] == ["dmarc=fail (p=quarantine) header.from=news.corp.test"]
