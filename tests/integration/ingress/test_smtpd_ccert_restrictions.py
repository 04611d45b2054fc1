"""Client certificates in smtpd restrictions, over real TLS with certificates made
here: permit_tls_all_clientcerts, permit_tls_clientcerts with relay_clientcerts,
check_ccert_access, and what a policy server is told of the certificate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.ingress.conftest import Client, Running, StartSmtpd
from tests.integration.policy_recorder import PolicyRecorder
from tests.tls_certs import Pki, der_fingerprint, pkey_fingerprint

pytestmark = pytest.mark.integration

RELAY = "u@elsewhere.example"  # relaying needs a permit: mynetworks does not hold us


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def settings(pki: Pki, restrictions: str, **extra: str) -> dict[str, str]:
    cert, key = pki.server("server")
    return {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key), "smtpd_tls_ask_ccert": "yes",
            "smtpd_tls_CAfile": str(pki.ca_file), "mynetworks": "10.0.0.0/8",
            "smtpd_relay_restrictions": f"{restrictions}, reject_unauth_destination", **extra}


async def relay(run: Running, pki: Pki, cert: tuple[Path, Path] | None) -> str:
    client = await Client.connect(run.port)
    run.clients.append(client)
    await client.reply()
    await client.cmd("EHLO c")
    assert (await client.cmd("STARTTLS")).startswith("220")
    await client.starttls(pki.client_context(cert))
    await client.cmd("EHLO c")
    await client.cmd("MAIL FROM:<a@example.org>")
    return await client.cmd(f"RCPT TO:<{RELAY}>")


DENIED = f"554 5.7.1 <{RELAY}>: Relay access denied"


async def test_permit_tls_all_clientcerts(smtpd: StartSmtpd, pki: Pki) -> None:
    run = await smtpd(**settings(pki, "permit_tls_all_clientcerts"))
    assert await relay(run, pki, pki.client("trusted", "one.example")) == "250 2.1.5 Ok"
    assert await relay(run, pki, pki.client("self", "two.example", self_signed=True)) == DENIED
    assert await relay(run, pki, None) == DENIED


async def test_relay_clientcerts_by_certificate_or_key(
    smtpd: StartSmtpd, pki: Pki, tmp_path: Path
) -> None:
    listed = pki.client("listed", "three.example", self_signed=True)
    by_key = pki.client("bykey", "four.example", self_signed=True)
    other = pki.client("other", "five.example")
    table = tmp_path / "relay_clientcerts"
    table.write_text(f"{der_fingerprint(listed[0])} three\n{pkey_fingerprint(by_key[0])} four\n")
    run = await smtpd(**settings(pki, "permit_tls_clientcerts",
                                 relay_clientcerts=f"texthash:{table}"))
    assert await relay(run, pki, listed) == "250 2.1.5 Ok"
    assert await relay(run, pki, by_key) == "250 2.1.5 Ok"
    assert await relay(run, pki, other) == DENIED  # trusted, but not listed


async def test_check_ccert_access_and_policy_attributes(
    smtpd: StartSmtpd, pki: Pki, tmp_path: Path
) -> None:
    bad = pki.client("bad", "bad.example")
    table = tmp_path / "ccert_access"
    table.write_text(f"{der_fingerprint(bad[0])} REJECT revoked here\n")
    server = await PolicyRecorder(lambda req: "DUNNO").start()
    try:
        run = await smtpd(**settings(
            pki, f"check_ccert_access texthash:{table}, "
            f"check_policy_service inet:127.0.0.1:{server.port}, permit_tls_all_clientcerts"))
        assert await relay(run, pki, bad) == \
            "554 5.7.1 <bad.example>: Client certificate rejected: revoked here"
        good = pki.client("good", "good.example")
        assert await relay(run, pki, good) == "250 2.1.5 Ok"
        req = server.requests[-1]
        assert (req["ccert_subject"], req["ccert_issuer"]) == ("good.example",
                                                               "Postbus+20Test+20CA")
        assert req["ccert_fingerprint"] == der_fingerprint(good[0])
        assert req["ccert_pubkey_fingerprint"] == pkey_fingerprint(good[0])
        assert req["encryption_protocol"].startswith("TLSv1.")
        assert int(req["encryption_keysize"]) >= 128 and req["encryption_cipher"]
    finally:
        await server.stop()
