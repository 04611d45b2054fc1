"""STARTTLS and TLS on connect with real clients (swaks, smtplib) into the real queue:
certificates rotated on disk, RSA and ECDSA keys side by side, chain files, protocol and
cipher settings, certificate files missing at start, handshakes that never finish."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import smtplib
import ssl
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from postbus import tls as tls_module
from postbus.smtp import replies as r
from tests.integration.ingress.conftest import Client, Running, StartSmtpd, make_config
from tests.tls_certs import Pki, cert_pem, der_fingerprint, issue, key_pem, new_key

pytestmark = pytest.mark.integration

SWAKS = shutil.which("swaks")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


def tls_settings(pki: Pki, name: str = "server", **extra: str) -> dict[str, str]:
    cert, key = pki.server(name)
    return {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key), **extra}


async def queued(run: Running) -> list[bytes]:
    return [await run.store.queue.content(e.queue_id) async for e in run.store.queue.entries()]


async def swaks(*args: str) -> tuple[int, str]:
    assert SWAKS is not None
    proc = await asyncio.create_subprocess_exec(
        SWAKS, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode("utf-8", "replace")


def peer_fingerprint(client: Client) -> str:
    sslobj = client.writer.get_extra_info("ssl_object")
    der = sslobj.getpeercert(binary_form=True)
    cert = x509.load_der_x509_certificate(der)
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


async def starttls(run: Running, context: ssl.SSLContext) -> Client:
    c = await run.client()
    assert "250-STARTTLS" in await c.cmd("EHLO c")
    assert await c.cmd("STARTTLS") == r.STARTTLS_READY
    await c.starttls(context)
    return c


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed")
async def test_swaks_starttls_and_tls_on_connect(smtpd: StartSmtpd, pki: Pki) -> None:
    run = await smtpd(**tls_settings(pki, smtpd_tls_received_header="yes"))
    wrapped = await smtpd(**tls_settings(pki, smtpd_tls_wrappermode="yes"))
    common = ["--server", "127.0.0.1", "--from", "s@example.org", "--to", "u@postbus.test",
              "--header", "Subject: over TLS"]
    code, out = await swaks(*common, "--port", str(run.port), "--tls")
    assert code == 0, out
    assert "<-  220 2.0.0 Ready to start TLS" in out, out
    assert "TLS started with cipher TLSv1.3" in out
    [content] = await queued(run)
    assert b"\r\n\t(using TLSv1.3 with cipher " in content
    assert b"\r\n\t(No client certificate requested)\r\n\tby mx.postbus.test (Postbus) with " \
           b"ESMTPS id " in content
    code, out = await swaks(*common, "--port", str(wrapped.port), "--tls-on-connect")
    assert code == 0, out
    assert "<~  220 mx.postbus.test ESMTP" in out
    second = [c for c in await queued(run) if c != content]
    assert len(second) == 1
    assert b"(using " not in second[0]  # smtpd_tls_received_header = no there
    assert b"\r\n\tby mx.postbus.test (Postbus) with ESMTPS id " in second[0]


async def test_smtplib_starttls_with_a_client_certificate(smtpd: StartSmtpd, pki: Pki) -> None:
    run = await smtpd(**tls_settings(pki, smtpd_tls_ask_ccert="yes",
                                     smtpd_tls_CAfile=str(pki.ca_file),
                                     smtpd_tls_received_header="yes"))
    context = pki.client_context(pki.client("c1", "client.postbus.test"))

    def send() -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", run.port, timeout=30) as smtp:
            smtp.ehlo("client.postbus.test")
            smtp.starttls(context=context)
            _, text = smtp.ehlo("client.postbus.test")
            assert b"STARTTLS" not in text
            return smtp.sendmail("s@example.org", ["u@postbus.test"], "Subject: c\r\n\r\nhi\r\n")

    assert await asyncio.to_thread(send) == {}
    [content] = await queued(run)
    assert b'\t(Client CN "client.postbus.test", Issuer "Postbus Test CA" (verified OK))\r\n' \
        in content


def rotate(live: Path, cert: Path, key: Path) -> None:
    """Replace the files the way the kubelet updates a mounted Secret: a new directory,
    then one atomic rename of the ``..data`` symlink."""
    stamp = live / f"..{time.monotonic_ns()}"
    stamp.mkdir()
    shutil.copy(cert, stamp / "tls.crt")
    shutil.copy(key, stamp / "tls.key")
    tmp = live / "..data_tmp"
    tmp.symlink_to(stamp.name)
    os.replace(tmp, live / "..data")
    for name in ("tls.crt", "tls.key"):
        if not (live / name).is_symlink():
            (live / name).symlink_to(f"..data/{name}")


async def test_rotated_certificates_serve_new_sessions_and_keep_old_ones(
    smtpd: StartSmtpd, pki: Pki, tmp_path: Path
) -> None:
    first, second = pki.server("first"), pki.server("second")
    live = tmp_path / "secret"
    live.mkdir()
    rotate(live, *first)
    run = await smtpd(smtpd_tls_security_level="may", smtpd_tls_cert_file=str(live / "tls.crt"),
                      smtpd_tls_key_file=str(live / "tls.key"))
    context = pki.client_context()
    old = await starttls(run, context)
    assert peer_fingerprint(old) == der_fingerprint(first[0])
    rotate(live, *second)
    deadline = time.monotonic() + 15
    while True:
        new = await starttls(run, context)
        if peer_fingerprint(new) == der_fingerprint(second[0]):
            break
        assert peer_fingerprint(new) == der_fingerprint(first[0])
        assert time.monotonic() < deadline, "the new certificate was never served"
        await new.cmd("QUIT")
        await asyncio.sleep(0.2)
    # the session that began before the rotation goes on, on its old keys
    assert (await old.cmd("EHLO c")).startswith("250-")
    assert await old.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK
    assert await old.cmd("RCPT TO:<u@postbus.test>") == r.RCPT_OK
    assert await old.cmd("DATA") == r.DATA_GO_AHEAD
    assert (await old.cmd("Subject: x\r\n\r\nbody\r\n.")).startswith("250 2.0.0 Ok: queued as ")
    assert len(await queued(run)) == 1


async def test_missing_certificate_means_454_until_the_files_appear(
    smtpd: StartSmtpd, pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "postbus.tls")
    cert, key = tmp_path / "late.crt", tmp_path / "late.key"
    run = await smtpd(smtpd_tls_security_level="may", smtpd_tls_cert_file=str(cert),
                      smtpd_tls_key_file=str(key))
    assert f'cannot get RSA certificate from file "{cert}": disabling TLS support' in caplog.text
    c = await run.client()
    assert "250-STARTTLS" in await c.cmd("EHLO c")  # offered, as Postfix offers it
    assert await c.cmd("STARTTLS") == r.TLS_NOT_AVAILABLE
    assert await c.cmd("MAIL FROM:<s@example.org>") == r.MAIL_OK  # the session goes on
    made = pki.server("late")
    shutil.copy(made[0], cert)
    shutil.copy(made[1], key)
    deadline = time.monotonic() + 15
    while (reply := await c.cmd("STARTTLS")) == r.TLS_NOT_AVAILABLE:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.2)
    assert reply == r.STARTTLS_READY
    await c.starttls(pki.client_context())
    assert peer_fingerprint(c) == der_fingerprint(made[0])
    assert "reloaded TLS keys and certificates from" in caplog.text


async def test_mismatched_key_is_refused_in_postfix_words(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    cert, _ = pki.server("a")
    _, other_key = pki.server("b")
    settings = tls_module.ServerTlsSettings.from_config(
        make_config(
            smtpd_tls_security_level="may", smtpd_tls_cert_file=str(cert),
            smtpd_tls_key_file=str(other_key)))
    caplog.set_level(logging.WARNING, "postbus.tls")
    assert tls_module.ServerTls(settings).context() is None
    assert f"RSA private key in {other_key} does not match public key in {cert}: disabling " \
           "TLS support" in caplog.text


def _tls12(ciphers: str, pki: Pki) -> ssl.SSLContext:
    context = pki.client_context()
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(ciphers)
    return context


def _key_of(client: Client) -> object:
    der = client.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).public_key()


async def test_rsa_and_ecdsa_side_by_side(smtpd: StartSmtpd, pki: Pki) -> None:
    rsa_cert, rsa_key = pki.server("rsa")
    ec_cert, ec_key = pki.server("ecdsa", kind="ec")
    run = await smtpd(smtpd_tls_security_level="may", smtpd_tls_cert_file=str(rsa_cert),
                      smtpd_tls_key_file=str(rsa_key), smtpd_tls_eccert_file=str(ec_cert),
                      smtpd_tls_eckey_file=str(ec_key))
    c = await starttls(run, _tls12("ECDHE-ECDSA-AES128-GCM-SHA256", pki))
    assert isinstance(_key_of(c), ec.EllipticCurvePublicKey)
    c = await starttls(run, _tls12("ECDHE-RSA-AES128-GCM-SHA256", pki))
    assert isinstance(_key_of(c), rsa.RSAPublicKey)


async def test_chain_files_key_first_in_one_file_or_split(
    smtpd: StartSmtpd, pki: Pki, tmp_path: Path
) -> None:
    rsa_cert, rsa_key = pki.server("chain-rsa")
    ec_cert, ec_key = pki.server("chain-ec", kind="ec")
    combined = tmp_path / "rsa.pem"
    combined.write_bytes(rsa_key.read_bytes() + rsa_cert.read_bytes())
    run = await smtpd(smtpd_tls_security_level="may",
                      smtpd_tls_chain_files=f"{combined}, {ec_key}, {ec_cert}")
    c = await starttls(run, _tls12("ECDHE-ECDSA-AES128-GCM-SHA256", pki))
    assert isinstance(_key_of(c), ec.EllipticCurvePublicKey)
    c = await starttls(run, _tls12("ECDHE-RSA-AES128-GCM-SHA256", pki))
    assert isinstance(_key_of(c), rsa.RSAPublicKey)
    assert peer_fingerprint(c) == der_fingerprint(rsa_cert)


async def test_protocols_and_ciphers(smtpd: StartSmtpd, pki: Pki) -> None:
    only13 = await smtpd(**tls_settings(pki, smtpd_tls_protocols=">=TLSv1.3"))
    c = await only13.client()
    await c.cmd("EHLO c")
    assert await c.cmd("STARTTLS") == r.STARTTLS_READY
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await c.starttls(_tls12("ECDHE-RSA-AES128-GCM-SHA256", pki))
    no13 = await smtpd(**tls_settings(pki, smtpd_tls_protocols="!SSLv2, !SSLv3, !TLSv1.3"))
    c = await starttls(no13, pki.client_context())
    assert c.writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    # under encrypt the mandatory settings count, the opportunistic ones do not
    mandatory = await smtpd(**tls_settings(pki, smtpd_tls_security_level="encrypt",
                                           smtpd_tls_mandatory_protocols="TLSv1.2",
                                           smtpd_tls_protocols=">=TLSv1.3",
                                           smtpd_tls_mandatory_exclude_ciphers="AES128"))
    c = await starttls(mandatory, pki.client_context())
    assert c.writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    assert "AES128" not in c.writer.get_extra_info("ssl_object").cipher()[0]
    c = await mandatory.client()
    await c.cmd("EHLO c")
    await c.cmd("STARTTLS")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await c.starttls(_tls12("ECDHE-RSA-AES128-GCM-SHA256", pki))


async def test_stalled_handshakes_do_not_hold_up_other_clients(
    smtpd: StartSmtpd, pki: Pki
) -> None:
    run = await smtpd(**tls_settings(pki, smtpd_starttls_timeout="30s"))
    stalled = []
    for _ in range(30):
        c = await run.client()
        await c.cmd("EHLO c")
        assert await c.cmd("STARTTLS") == r.STARTTLS_READY
        await c.send(b"\x16\x03\x01\x02\x00")  # a record header, and then nothing
        stalled.append(c)
    started = time.monotonic()
    c = await starttls(run, pki.client_context())
    assert (await c.cmd("EHLO c")).startswith("250-")
    assert await c.cmd("QUIT") == r.BYE
    assert time.monotonic() - started < 5


async def test_certificate_made_for_another_key_type_is_not_loaded(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A chain file whose certificate comes before its key is refused, as Postfix does."""
    key = new_key("ec")
    cert = issue("mx.postbus.test", key, pki.ca_key, pki.ca)
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(cert_pem(cert) + key_pem(key))
    settings = tls_module.ServerTlsSettings.from_config(
        make_config(
            smtpd_tls_security_level="may", smtpd_tls_chain_files=str(wrong)))
    caplog.set_level(logging.WARNING, "postbus.tls")
    assert tls_module.ServerTls(settings).context() is None
    assert f"error loading chain from {wrong}: key not first" in caplog.text
