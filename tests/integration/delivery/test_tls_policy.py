"""smtp_tls_policy_maps against a real STARTTLS peer (aiosmtpd with a certificate from a
test CA): verify and secure deliver only to a trusted server whose certificate names a
match pattern, never in clear text; Postfix's log lines say how far the trust went."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
import time
from pathlib import Path

import pytest

from delivery_smtp.__main__ import main
from postbus.servers import free_port, wait_port
from tests import postfix_instance
from tests.recorded import Recording
from tests.tls_certs import Pki

from .conftest import Bus, RunAgent
from .peers import Peer

pytestmark = pytest.mark.integration

FAST = {"smtp_connection_cache_on_demand": "no", "myhostname": "mail.postbus.test"}


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki.create(tmp_path / "pki")


def _tls_peer(pki: Pki, tls13: bool = False) -> Peer:
    cert, key = pki.server("mx", cn="mx.remote.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if tls13:
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    return Peer(tls_context=context)


async def _send(bus: Bus, run_agent: RunAgent, peer: Peer, policy: str, age: float = 0.0,
                **settings: str) -> tuple[str, str, str]:
    nexthop = f"[127.0.0.1]:{peer.port}"
    await run_agent(main, "smtp", {
        **FAST, "smtp_tls_policy_maps": f"inline:{{ {{{nexthop} = {policy}}} }}", **settings,
    })
    job = await bus.submit("smtp", nexthop, ["bob@remote.test"], age=age)
    [result] = (await bus.status(job.queue_id)).results
    await run_agent.stop()
    return result.status, result.dsn, result.reason


def _lines(caplog: pytest.LogCaptureFixture, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if words in r.getMessage()]


async def test_verify_with_a_matching_trusted_certificate_is_verified(
    bus: Bus, run_agent: RunAgent, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with _tls_peer(pki) as peer:
        got = await _send(bus, run_agent, peer, "verify match=mx.remote.test",
                          smtp_tls_CAfile=str(pki.ca_file), smtp_tls_loglevel="1")
    assert got[0] == "sent"
    assert peer.handler.tls == [True]
    [line] = _lines(caplog, "TLS connection established")
    assert line.startswith(f"Verified TLS connection established to 127.0.0.1[127.0.0.1]:"
                           f"{peer.port}: TLSv1.3 with cipher TLS_")


async def test_secure_matches_a_parent_domain_pattern(
    bus: Bus, run_agent: RunAgent, pki: Pki
) -> None:
    with _tls_peer(pki) as peer:
        got = await _send(bus, run_agent, peer, "secure match=.remote.test:nowhere.test",
                          smtp_tls_CAfile=str(pki.ca_file))
    assert got[0] == "sent"
    assert peer.handler.tls == [True]


async def test_a_name_that_does_not_match_defers_and_sends_nothing(
    bus: Bus, run_agent: RunAgent, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with _tls_peer(pki) as peer:
        got = await _send(bus, run_agent, peer, "verify match=other.test",
                          smtp_tls_CAfile=str(pki.ca_file), smtp_tls_loglevel="1")
    assert got == ("deferred", "4.7.5", "Server certificate not verified")
    assert peer.handler.messages == []
    relay = f"127.0.0.1[127.0.0.1]:{peer.port}"
    assert _lines(caplog, "verification failed") == [
        f"server certificate verification failed for {relay}: num=62:hostname mismatch"]
    [line] = _lines(caplog, "TLS connection established")
    assert line.startswith(f"Untrusted TLS connection established to {relay}: ")


async def test_an_untrusted_issuer_defers_at_secure_but_not_at_encrypt(
    bus: Bus, run_agent: RunAgent, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.delivery")
    with _tls_peer(pki) as peer:  # no smtp_tls_CAfile: nothing is trusted
        secure = await _send(bus, run_agent, peer, "secure match=mx.remote.test")
        encrypt = await _send(bus, run_agent, peer, "encrypt", smtp_tls_loglevel="1")
    assert secure == ("deferred", "4.7.5", "Server certificate not verified")
    [why] = _lines(caplog, "verification failed")
    assert why.startswith(f"certificate verification failed for 127.0.0.1[127.0.0.1]:{peer.port}"
                          ": untrusted issuer ")
    assert why.endswith("CN=Postbus Test CA")
    assert encrypt[0] == "sent"
    assert peer.handler.tls == [True]
    [line] = _lines(caplog, "TLS connection established")
    assert line.startswith("Untrusted TLS connection established to ")


async def test_policy_none_overrides_a_global_level_and_encrypt_needs_starttls(
    bus: Bus, run_agent: RunAgent, pki: Pki
) -> None:
    with _tls_peer(pki) as peer:
        plain = await _send(bus, run_agent, peer, "none", smtp_tls_security_level="encrypt")
    assert plain[0] == "sent"
    assert peer.handler.tls == [False]
    with Peer() as clear:  # no STARTTLS offered
        got = await _send(bus, run_agent, clear, "encrypt protocols=>=TLSv1.2 ciphers=high")
    assert got == ("deferred", "4.7.4",
                   "TLS is required, but was not offered by host 127.0.0.1[127.0.0.1]")
    assert clear.handler.messages == []


async def test_an_invalid_entry_defers_with_postfix_words(
    bus: Bus, run_agent: RunAgent, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    with Peer() as peer:
        got = await _send(bus, run_agent, peer, "verify foo=bar")
    assert got == ("deferred", "4.7.5", "client TLS configuration problem")
    assert peer.handler.messages == []
    assert _lines(caplog, "invalid attribute name") == [
        f'smtp_tls_policy_maps, next-hop destination "[127.0.0.1]:{peer.port}": '
        'invalid attribute name: "foo"']


# -- the same two policies under a real Postfix ----------------------------------------

RECORDING = Recording("smtp_tls_policy")
_PORT = re.compile(r"(127\.0\.0\.1\[127\.0\.0\.1\]):\d+")


def _normal(line: str) -> str:
    return _PORT.sub(r"\1:PORT", line)


def _postfix_logs(pki: Pki) -> dict[str, list[str]]:
    """What Postfix logs for a matching and a mismatching verify policy, ports normalized."""
    with _tls_peer(pki) as good, _tls_peer(pki) as bad:
        port = free_port()
        instance = postfix_instance.PostfixInstance(port, {
            "myhostname": "mx.postbus.test", "smtp_tls_loglevel": "1",
            "smtp_tls_CAfile": str(pki.ca_file),
            "transport_maps": f"inline:{{ {{good.test=smtp:[127.0.0.1]:{good.port}}}, "
                              f"{{bad.test=smtp:[127.0.0.1]:{bad.port}}} }}",
            "smtp_tls_policy_maps": f"inline:{{ {{[127.0.0.1]:{good.port} = verify "
                                    f"match=mx.remote.test}}, {{[127.0.0.1]:{bad.port} = "
                                    "verify match=other.test} }",
        })
        pki.root.chmod(0o755)  # Postfix's smtp runs as user postfix
        instance.start()
        try:
            wait_port("127.0.0.1", port, 20)
            out: dict[str, list[str]] = {}
            for name in ("good", "bad"):
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    client.sendmail("alice@client.test", [f"bob@{name}.test"],
                                    b"Subject: tls\r\n\r\nbody\r\n")
                deadline = time.monotonic() + 30
                while True:
                    text = instance.maillog.read_text() if instance.maillog.exists() else ""
                    mine = [line for line in text.splitlines() if "postfix/smtp[" in line]
                    if any(f"to=<bob@{name}.test>" in line for line in mine):
                        break
                    assert time.monotonic() < deadline, text
                    time.sleep(0.05)
                out[name] = [_normal(line.split(": ", 1)[1]) for line in mine
                             if "TLS connection" in line or "verification failed" in line]
                out[name] += [line[line.index("dsn="):] for line in mine
                              if f"to=<bob@{name}.test>" in line]
                instance.maillog.write_text("")
        finally:
            instance.stop()
    return out


async def test_log_lines_and_reason_as_postfix(
    bus: Bus, run_agent: RunAgent, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    live = (lambda: _postfix_logs(pki)) if postfix_instance.available() else None
    postfix = RECORDING.answer("verify", live)
    caplog.set_level(logging.INFO, "postbus.delivery")
    ours: dict[str, list[str]] = {}
    for name, match in (("good", "mx.remote.test"), ("bad", "other.test")):
        caplog.clear()
        with _tls_peer(pki) as peer:
            await _send(bus, run_agent, peer, f"verify match={match}",
                        smtp_tls_CAfile=str(pki.ca_file), smtp_tls_loglevel="1")
        ours[name] = [_normal(r.getMessage()) for r in caplog.records
                      if "TLS connection" in r.getMessage()
                      or "verification failed" in r.getMessage()]
    # Postfix's lines, and the outcome its delivery line gives
    assert ours == {name: lines[:-1] for name, lines in postfix.items()}
    assert postfix["bad"][-1] == "dsn=4.7.5, status=deferred (Server certificate not verified)"
    assert postfix["good"][-1].startswith("dsn=2.0.0, status=sent ")


async def test_a_failed_handshake_defers_and_may_retries_older_mail_in_clear(
    bus: Bus, run_agent: RunAgent, pki: Pki
) -> None:
    """A server that wants TLS 1.3 and a client that offers at most 1.2: no handshake."""
    old = {"smtp_tls_protocols": "<=TLSv1.2", "minimal_backoff_time": "300s"}
    with _tls_peer(pki, tls13=True) as peer:
        encrypt = await _send(bus, run_agent, peer, "encrypt protocols=<=TLSv1.2", age=3600)
        fresh = await _send(bus, run_agent, peer, "may", **old)
        assert peer.handler.messages == []
        retried = await _send(bus, run_agent, peer, "may", age=3600, **old)
    failed = ("deferred", "4.7.5", "Cannot start TLS: handshake failure")
    assert encrypt == failed  # never in clear text
    assert fresh == failed  # a first attempt defers, as Postfix's does
    assert retried[0] == "sent"  # mail that has waited goes without TLS to the same server
    assert peer.handler.tls == [False]


async def test_sni_only_when_configured(bus: Bus, run_agent: RunAgent, pki: Pki) -> None:
    """Postfix sends no SNI by default; servername= (or smtp_tls_servername) sends one."""
    seen: list[str | None] = []
    cert, key = pki.server("mx", cn="mx.remote.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.sni_callback = lambda _sock, name, _ctx: seen.append(name)  # type: ignore[assignment]
    with Peer(tls_context=context) as peer:
        assert (await _send(bus, run_agent, peer, "may"))[0] == "sent"
        assert (await _send(bus, run_agent, peer, "may servername=mx.remote.test"))[0] == "sent"
    assert seen == [None, "mx.remote.test"]
    assert peer.handler.tls == [True, True]


async def test_a_client_certificate_for_a_server_that_asks(
    bus: Bus, run_agent: RunAgent, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "postbus.delivery")
    cert, key = pki.server("mx", cn="mx.remote.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca_file))
    context.load_cert_chain(cert, key)
    context.verify_mode = ssl.CERT_REQUIRED  # no certificate, no session
    client_cert, client_key = pki.client("relay", "relay.postbus.test")
    with Peer(tls_context=context) as peer:
        without = await _send(bus, run_agent, peer, "encrypt")
        assert peer.handler.messages == []
        shown = await _send(bus, run_agent, peer, "encrypt", smtp_tls_cert_file=str(client_cert),
                            smtp_tls_key_file=str(client_key))
        broken = await _send(bus, run_agent, peer, "encrypt",
                             smtp_tls_cert_file=str(pki.root / "missing.pem"))
    assert without[0] == "deferred"  # TLS 1.3: refused after the client's handshake ends
    assert shown[0] == "sent"
    assert peer.handler.tls == [True]
    assert broken == ("deferred", "4.7.5", "client TLS configuration problem")
    assert any(r.getMessage().startswith("cannot load certificate and key from ")
               for r in caplog.records)
