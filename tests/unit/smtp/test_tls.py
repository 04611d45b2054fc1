"""postbus.tls and postbus.tls_session without a network: Postfix's settings read as Postfix
reads them, a real handshake over memory BIOs, and what is logged and recorded of it."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.tls import ServerTls, ServerTlsSettings, TlsConfigError, build_context, protocol_range
from postbus.tls_openssl import SignatureParams
from postbus.tls_session import TlsSession, comment_sanitize, session_facts
from tests.tls_certs import Pki, der_fingerprint, pkey_fingerprint

V = ssl.TLSVersion


def settings(**main_cf: str) -> ServerTlsSettings:
    text = "compatibility_level = 3.6\n" + "".join(f"{k} = {v}\n" for k, v in main_cf.items())
    return ServerTlsSettings.from_config(Config.from_text(text))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.mark.parametrize(("plist", "low", "high", "holes"), [
    (">=TLSv1", V.TLSv1, V.TLSv1_3, set()),
    (">=TLSv1.2", V.TLSv1_2, V.TLSv1_3, set()),
    ("!SSLv2, !SSLv3", V.TLSv1, V.TLSv1_3, set()),
    ("!SSLv2:!SSLv3:!TLSv1:!TLSv1.1", V.TLSv1_2, V.TLSv1_3, set()),
    ("TLSv1.2 TLSv1.3", V.TLSv1_2, V.TLSv1_3, set()),
    ("<=TLSv1.2", V.SSLv3, V.TLSv1_2, set()),
    (">=TLSv1 !TLSv1.1", V.TLSv1, V.TLSv1_3, {"TLSv1.1"}),
    ("", V.SSLv3, V.TLSv1_3, set()),
])
def test_protocol_lists_as_tls_proto_mask_lims(
    plist: str, low: ssl.TLSVersion, high: ssl.TLSVersion, holes: set[str]
) -> None:
    assert protocol_range(plist) == (low, high, holes)


@pytest.mark.parametrize("plist", [
    "TLSv9", ">=TLSv1.4", "!TLSv1 !TLSv1.1 !TLSv1.2 !TLSv1.3 !SSLv3",
])
def test_bad_protocol_lists_disable_tls(plist: str) -> None:
    with pytest.raises(TlsConfigError, match=f'Invalid TLS protocol list "{plist}"'):
        protocol_range(plist)


def test_levels_and_the_obsolete_booleans() -> None:
    assert not settings().use_tls
    may = settings(smtpd_tls_security_level="may")
    assert (may.use_tls, may.enforce, may.protocols) == (True, False, ">=TLSv1")
    enc = settings(smtpd_tls_security_level="encrypt", smtpd_tls_mandatory_protocols=">=TLSv1.2",
                   smtpd_tls_mandatory_ciphers="high")
    assert (enc.use_tls, enc.enforce, enc.protocols) == (True, True, ">=TLSv1.2")
    assert enc.cipherlist == "aNULL:-aNULL:HIGH:@STRENGTH"
    assert settings(smtpd_use_tls="yes").use_tls
    assert settings(smtpd_enforce_tls="yes").enforce
    assert not settings(smtpd_tls_security_level="none", smtpd_use_tls="yes").use_tls
    wrapper = settings(smtpd_tls_wrappermode="yes", smtpd_tls_security_level="none")
    assert (wrapper.use_tls, wrapper.enforce) == (True, True)  # the level does not count there
    with pytest.raises(ConfigError, match='Invalid TLS level "dane"'):
        settings(smtpd_tls_security_level="dane")


def test_cipher_grade_exclusions_and_client_certificates() -> None:
    s = settings(smtpd_tls_security_level="may", smtpd_tls_exclude_ciphers="RC4, aNULL",
                 smtpd_tls_mandatory_exclude_ciphers="3DES", smtpd_tls_ask_ccert="yes")
    assert s.cipherlist == "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH:!RC4:!aNULL:!aNULL"
    assert (s.ask_ccert, s.req_ccert) == (True, False)
    req = settings(smtpd_tls_security_level="encrypt", smtpd_tls_req_ccert="yes")
    assert (req.ask_ccert, req.req_ccert) == (True, True)
    assert not settings(smtpd_tls_security_level="may", smtpd_tls_req_ccert="yes").ask_ccert
    with pytest.raises(ConfigError, match="invalid cipher grade"):
        settings(smtpd_tls_ciphers="strong")
    with pytest.raises(ConfigError, match="invalid unary"):
        settings(smtpd_tls_exclude_ciphers="!RC4")
    assert settings().fingerprint_digest == "sha256"
    assert settings(compatibility_level="3.5").fingerprint_digest == "md5"


def handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> ssl.SSLObject:
    """A complete handshake over memory BIOs; the server's SSLObject."""
    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    srv = server.wrap_bio(s_in, s_out, server_side=True)
    cli = client.wrap_bio(c_in, c_out, server_side=False)
    done = {"s": False, "c": False}
    for _ in range(20):
        for name, obj in (("c", cli), ("s", srv)):
            if not done[name]:
                try:
                    obj.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            break
    assert all(done.values())
    return srv


def test_session_facts_of_a_real_handshake(pki: Pki) -> None:
    cert, key = pki.server("unit")
    s = settings(smtpd_tls_security_level="may", smtpd_tls_cert_file=str(cert),
                 smtpd_tls_key_file=str(key), smtpd_tls_ask_ccert="yes",
                 smtpd_tls_CAfile=str(pki.ca_file))
    ctx, native = build_context(s)
    trusted = pki.client("unit-client", "client.postbus.test")
    facts = session_facts(handshake(ctx, pki.client_context(trusted)), native, "sha256", True)
    assert (facts.protocol, facts.cipher) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384")
    assert (facts.usebits, facts.algbits) == (256, 256)
    assert facts.params.text() == (" key-exchange X25519 server-signature RSA-PSS (2048 bits)"
                                   " server-digest SHA256 client-signature ECDSA (prime256v1)"
                                   " client-digest SHA256")
    assert (facts.peer_present, facts.peer_trusted) == (True, True)
    assert (facts.peer_cn, facts.issuer_cn) == ("client.postbus.test", "Postbus Test CA")
    assert facts.fingerprint == der_fingerprint(trusted[0])
    assert facts.pkey_fingerprint == pkey_fingerprint(trusted[0])
    rogue = pki.client("unit-rogue", "rogue.example", self_signed=True)
    facts = session_facts(handshake(ctx, pki.client_context(rogue)), native, "md5", True)
    assert (facts.peer_present, facts.peer_trusted, facts.verify_code) == (True, False, 18)
    assert facts.verify_error("c[1.2.3.4]") == \
        "certificate verification failed for c[1.2.3.4]: self-signed certificate"
    assert facts.fingerprint == der_fingerprint(rogue[0], "md5")
    assert facts.summary("c[1.2.3.4]").startswith(
        "Untrusted TLS connection established from c[1.2.3.4]: TLSv1.3 with cipher ")
    facts = session_facts(handshake(ctx, pki.client_context()), native, "sha256", True)
    assert facts.trust == "Anonymous"
    assert facts.received(True)[-1] == "\t(Client did not present a certificate)"


def test_received_comment_as_postfix_writes_it() -> None:
    plain = TlsSession("TLSv1.2", "ECDHE-RSA-AES256-GCM-SHA384", 256, 256)
    assert plain.received(False) == [
        "\t(using TLSv1.2 with cipher ECDHE-RSA-AES256-GCM-SHA384 (256/256 bits))",
        "\t(No client certificate requested)",
    ]
    v13 = TlsSession("TLSv1.3", "TLS_AES_128_GCM_SHA256", 128, 128, SignatureParams(
        kex_name="X25519", srvr_name="ECDSA", srvr_curve="prime256v1", srvr_dgst="SHA256"),
        peer_present=True, peer_cn="a(b", issuer_cn="CA \\ \u00e9)")
    assert v13.received(True) == [
        "\t(using TLSv1.3 with cipher TLS_AES_128_GCM_SHA256 (128/128 bits)",
        "\t key-exchange X25519 server-signature ECDSA (prime256v1) server-digest SHA256)",
        '\t(Client CN "a(b)", Issuer "CA ? ??" (not verified))',
    ]
    assert comment_sanitize("x)(y") == "x?(y)"


def test_missing_files_keep_tls_off_until_they_are_good(
    pki: Pki, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(smtpd_tls_security_level="may", smtpd_tls_cert_file=str(tmp_path / "c.pem"),
                 smtpd_tls_key_file=str(tmp_path / "k.pem"))
    tls = ServerTls(s)
    assert tls.context() is None
    assert "cannot get RSA certificate from file" in caplog.text
    none = ServerTls(settings(smtpd_tls_security_level="may"))
    assert none.context() is None
    assert "No server certs available. TLS won't be enabled" in caplog.text
