"""SMTP AUTH in the smtp client (smtp_sasl_*), against our own smtpd with AUTH (users
added with ``postbus saslpasswd`` into a real Redis) and against aiosmtpd: the lookup
keys, no password in clear text unless allowed, per-sender credentials, Postfix's texts."""

from __future__ import annotations

import hashlib
import hmac
import logging
import subprocess
import sys
from base64 import b64decode
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from delivery_smtp.__main__ import main
from delivery_smtp.sasl_auth import SaslClient
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.servers import ServerProcess
from tests.integration.ingress.conftest import Running, running_servers
from tests.tls_certs import Pki

from .conftest import Bus, RunAgent
from .peers import Handler, Peer

pytestmark = pytest.mark.integration

FAST = {"smtp_connection_cache_on_demand": "no", "myhostname": "mail.postbus.test",
        "smtp_sasl_auth_enable": "yes"}
RELAY_CF = {"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "postbus",
            "smtpd_sasl_authenticated_header": "yes",
            "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination"}


@pytest.fixture
def saslpasswd(tmp_path: Path, redis: ServerProcess) -> None:
    """alice/s3cret and bob@postbus.test/b0b, added as an administrator would."""
    (tmp_path / "main.cf").write_text(f"postbus_redis_url = {redis.url}/0\n")
    for user, password in (("alice", "s3cret"), ("bob@postbus.test", "b0b")):
        done = subprocess.run([sys.executable, "-m", "postbus.cli.main", "-c", str(tmp_path),
                               "saslpasswd", "add", user], input=password + "\n",
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr


def _maps(entries: dict[str, str]) -> str:
    return "inline:{ " + ", ".join(f"{{{k} = {v}}}" for k, v in entries.items()) + " }"


async def _deliver(bus: Bus, run_agent: RunAgent, port: int, jobs: list[str],
                   **settings: str) -> list[tuple[str, str, str]]:
    """One job per sender in ``jobs`` to [127.0.0.1]:port; each (status, dsn, reason)."""
    await run_agent(main, "smtp", {**FAST, **settings})
    out = []
    for sender in jobs:
        job = await bus.submit("smtp", f"[127.0.0.1]:{port}", ["bob@remote.test"], sender=sender)
        [result] = (await bus.status(job.queue_id)).results
        out.append((result.status, result.dsn, result.reason))
    await run_agent.stop()
    return out


async def _relayed(run: Running) -> list[bytes]:
    """What our smtpd queued (its Received: header names the SASL user)."""
    out = []
    async for entry in run.store.queue.entries():
        content = await run.store.queue.content(entry.queue_id)
        if b"by mx.postbus.test (Postbus)" in content:
            out.append(content)
    return out


async def test_no_password_in_clear_text_by_default(
    bus: Bus, run_agent: RunAgent, saslpasswd: None
) -> None:
    async with running_servers(bus.store) as smtpd:
        run = await smtpd(**RELAY_CF)
        maps = _maps({f"[127.0.0.1]:{run.port}": "alice:s3cret"})
        [got] = await _deliver(bus, run_agent, run.port, ["alice@postbus.test"],
                               smtp_sasl_password_maps=maps)
        assert got == ("deferred", "4.7.0", "SASL authentication failed; cannot authenticate "
                       "to server 127.0.0.1[127.0.0.1]: no mechanism available")
        assert await _relayed(run) == []


async def test_plaintext_allowed_logs_in_with_the_next_hop_entry(
    bus: Bus, run_agent: RunAgent, saslpasswd: None
) -> None:
    async with running_servers(bus.store) as smtpd:
        run = await smtpd(**RELAY_CF)
        maps = _maps({f"[127.0.0.1]:{run.port}": "alice:s3cret"})
        [got] = await _deliver(bus, run_agent, run.port, ["carol@postbus.test"],
                               smtp_sasl_password_maps=maps,
                               smtp_sasl_security_options="noanonymous")
        assert got[:2] == ("sent", "2.0.0")
        [content] = await _relayed(run)
        assert b"\t(Authenticated sender: alice)\r\n" in content


async def test_over_tls_with_the_tls_options_and_the_host_entry(
    bus: Bus, run_agent: RunAgent, saslpasswd: None, tmp_path: Path
) -> None:
    pki = Pki.create(tmp_path / "pki")
    cert, key = pki.server("server")
    async with running_servers(bus.store) as smtpd:
        run = await smtpd(**RELAY_CF, smtpd_tls_security_level="may", smtpd_tls_auth_only="yes",
                          smtpd_tls_cert_file=str(cert), smtpd_tls_key_file=str(key))
        maps = _maps({"127.0.0.1": "bob@postbus.test:b0b"})
        [got] = await _deliver(bus, run_agent, run.port, ["carol@postbus.test"],
                               smtp_sasl_password_maps=maps, smtp_tls_security_level="encrypt",
                               smtp_sasl_tls_security_options="noanonymous")
        assert got[:2] == ("sent", "2.0.0")
        [content] = await _relayed(run)
        assert b"\t(Authenticated sender: bob@postbus.test)\r\n" in content
        assert b"with ESMTPSA id " in content


async def test_a_refused_login_defers_or_bounces_with_postfix_words(
    bus: Bus, run_agent: RunAgent, saslpasswd: None
) -> None:
    async with running_servers(bus.store) as smtpd:
        run = await smtpd(**RELAY_CF)
        maps = _maps({f"[127.0.0.1]:{run.port}": "alice:wrong"})
        settings = {"smtp_sasl_password_maps": maps, "smtp_sasl_security_options": ""}
        [soft] = await _deliver(bus, run_agent, run.port, ["a@postbus.test"], **settings)
        [hard] = await _deliver(bus, run_agent, run.port, ["a@postbus.test"], **settings,
                                smtp_sasl_auth_soft_bounce="no")
        said = ("SASL authentication failed; server 127.0.0.1[127.0.0.1] said: "
                "535 5.7.8 Error: authentication failed: (reason unavailable)")
        assert soft == ("deferred", "4.7.8", said)
        assert hard == ("bounced", "5.7.8", said)
        assert await _relayed(run) == []


async def test_a_cached_failure_spares_the_server_until_the_password_changes(
    bus: Bus, run_agent: RunAgent, saslpasswd: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    cache = {"smtp_sasl_auth_cache_name": "proxy:btree:/var/lib/postfix/sasl_auth_cache",
             "smtp_sasl_security_options": ""}
    async with running_servers(bus.store) as smtpd:
        run = await smtpd(**RELAY_CF)
        wrong = _maps({"127.0.0.1": "alice:wrong"})
        got = await _deliver(bus, run_agent, run.port, ["a@postbus.test"] * 2,
                             smtp_sasl_password_maps=wrong, **cache)
        said = "said: 535 5.7.8 Error: authentication failed: (reason unavailable)"
        assert got == [
            ("deferred", "4.7.8", f"SASL authentication failed; server 127.0.0.1[127.0.0.1] "
                                  f"{said}"),
            ("deferred", "4.7.8", f"SASL [CACHED] authentication failed; server 127.0.0.1 "
                                  f"{said}"),
        ]
        tries = [r for r in caplog.records if "authentication failed" in r.getMessage()]
        assert len(tries) == 1  # the second time the server was not asked
        right = _maps({"127.0.0.1": "alice:s3cret"})
        [got1] = await _deliver(bus, run_agent, run.port, ["a@postbus.test"],
                                smtp_sasl_password_maps=right, **cache)
        assert got1[0] == "sent"


async def test_per_sender_credentials_and_sessions(
    bus: Bus, run_agent: RunAgent, saslpasswd: None
) -> None:
    async with running_servers(bus.store) as smtpd:
        run = await smtpd(**RELAY_CF)
        maps = _maps({"alice@postbus.test": "alice:s3cret",
                      f"[127.0.0.1]:{run.port}": "bob@postbus.test:b0b"})
        # sessions are cached: one authenticated as alice must not carry carol's mail
        got = await _deliver(bus, run_agent, run.port,
                             ["alice@postbus.test", "carol@postbus.test", "alice@postbus.test"],
                             smtp_sasl_password_maps=maps, smtp_sasl_security_options="",
                             smtp_sender_dependent_authentication="yes",
                             smtp_connection_cache_on_demand="yes")
        assert [g[0] for g in got] == ["sent"] * 3
        users = sorted(c.split(b"(Authenticated sender: ")[1].split(b")")[0]
                       for c in await _relayed(run))
        assert users == [b"alice", b"alice", b"bob@postbus.test"]


class CramHandler(Handler):
    """aiosmtpd with CRAM-MD5 (RFC 2195) besides its PLAIN and LOGIN."""

    challenge = b"<1896.697170952@postoffice.reston.mci.net>"

    async def auth_CRAM__MD5(self, server: SMTP, args: list[str]) -> AuthResult:
        answer = await server.challenge_auth(self.challenge)
        assert isinstance(answer, bytes)
        user, _, digest = answer.decode().partition(" ")
        good = hmac.new(b"tanstaaftanstaaf", self.challenge, hashlib.md5).hexdigest()
        ok = user == "tim" and hmac.compare_digest(digest, good)
        return AuthResult(success=ok, auth_data=LoginPassword(b"tim", b""))


def _peer(logins: list[tuple[str, bytes]], handler: Handler | None = None,
          lmtp: bool = False) -> Peer:
    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str,
                      data: Any) -> AuthResult:
        logins.append((mechanism, data.login))
        return AuthResult(success=data.password == b"tanstaaftanstaaf")

    return Peer(handler, lmtp=lmtp, auth_require_tls=False, authenticator=authenticator)


async def test_aiosmtpd_login_and_cram_md5_and_strangers(bus: Bus, run_agent: RunAgent) -> None:
    logins: list[tuple[str, bytes]] = []
    with _peer(logins) as peer:  # PLAIN and LOGIN offered
        maps = _maps({"127.0.0.1": "tim:tanstaaftanstaaf"})
        [got] = await _deliver(bus, run_agent, peer.port, ["a@postbus.test"],
                               smtp_sasl_password_maps=maps, smtp_sasl_security_options="",
                               smtp_sasl_mechanism_filter="login")
        assert got[0] == "sent" and logins == [("LOGIN", b"tim")]
        [got] = await _deliver(bus, run_agent, peer.port, ["a@postbus.test"],
                               smtp_sasl_password_maps=_maps({"other.test": "x:y"}))
        assert got[0] == "sent" and len(logins) == 1  # no entry: no AUTH at all
    handler = CramHandler()
    with _peer(logins, handler) as peer:
        [got] = await _deliver(bus, run_agent, peer.port, ["a@postbus.test"],
                               smtp_sasl_password_maps=maps)  # default options
        assert got[0] == "sent" and len(handler.messages) == 1


async def test_lmtp_reads_its_own_twins(bus: Bus, run_agent: RunAgent) -> None:
    logins: list[tuple[str, bytes]] = []
    with _peer(logins, lmtp=True) as peer:
        await run_agent(main, "lmtp", {
            "lmtp_sasl_auth_enable": "yes", "lmtp_sasl_security_options": "",
            "lmtp_sasl_password_maps": _maps({f"127.0.0.1:{peer.port}": "tim:tanstaaftanstaaf"}),
            "smtp_sasl_auth_enable": "no"})
        job = await bus.submit("lmtp", f"inet:127.0.0.1:{peer.port}", ["bob@postbus.test"])
        [result] = (await bus.status(job.queue_id)).results
        await run_agent.stop()
    assert result.status == "sent"
    assert logins == [("LOGIN", b"tim")]  # aiosmtpd offers "LOGIN PLAIN": the first, as Cyrus


def test_unknown_options_and_filter_tables_are_refused_at_start() -> None:
    def cfg(**main_cf: str) -> Config:
        text = "".join(f"{k} = {v}\n" for k, v in main_cf.items())
        return Config.from_text(text, "")

    with pytest.raises(ConfigError, match='unknown smtp_sasl_security_options value "bogus"'):
        SaslClient(cfg(smtp_sasl_security_options="noplaintext, bogus"))
    with pytest.raises(ConfigError, match='must start with "proxy:'):
        SaslClient(cfg(smtp_sasl_auth_cache_name="btree:/var/lib/postfix/sasl_auth_cache"))
    with pytest.raises(ConfigError, match="smtp_sasl_mechanism_filter"):
        SaslClient(cfg(smtp_sasl_mechanism_filter="hash:/etc/postfix/mechs"))
    assert b64decode("AHRpbQB0YW5zdGFhZnRhbnN0YWFm") == b"\0tim\0tanstaaftanstaaf"
