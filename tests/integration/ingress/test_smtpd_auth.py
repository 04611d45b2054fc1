"""SMTP AUTH in smtpd with the built-in backend (users in a real Redis, argon2 hashes):
the dialogue and Postfix's replies, TLS-only offering, the log fields, the Received
header, the sender login checks and permit_sasl_authenticated, bad input."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postbus import metrics
from postbus.maps import context as maps_context
from postbus.sasl.users import UserStore
from postbus.servers import ServerProcess
from postbus.smtp import replies as r
from tests.integration.ingress.conftest import Client, Running, StartSmtpd
from tests.tls_certs import Pki

pytestmark = pytest.mark.integration


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def users(redis: ServerProcess) -> AsyncIterator[UserStore]:
    maps_context.configure(f"{redis.url}/0")
    store = UserStore(maps_context.redis_client(), "postbus:sasl:users")
    await store.set("alice", "s3cret")
    await store.set("bob@postbus.test", "b0b")
    yield store
    await maps_context.aclose()


def auth_cf(pki: Pki | None = None, **extra: str) -> dict[str, str]:
    cf = {"smtpd_sasl_auth_enable": "yes", "smtpd_sasl_type": "postbus",
          "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination"}
    if pki is not None:
        cert, key = pki.server("server")
        cf |= {"smtpd_tls_security_level": "may", "smtpd_tls_cert_file": str(cert),
               "smtpd_tls_key_file": str(key)}
    return cf | extra


async def tls_client(run: Running, pki: Pki) -> Client:
    c = await run.client()
    await c.cmd("EHLO c.example")
    assert await c.cmd("STARTTLS") == r.STARTTLS_READY
    await c.starttls(pki.client_context())
    return c


async def queued(run: Running) -> list[bytes]:
    return [await run.store.queue.content(e.queue_id) async for e in run.store.queue.entries()]


async def test_auth_only_inside_tls_then_plain_and_queued_with_log_fields(
    smtpd: StartSmtpd, users: UserStore, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postbus.smtpd")
    run = await smtpd(**auth_cf(pki, smtpd_tls_auth_only="yes",
                                smtpd_sasl_authenticated_header="yes"))
    c = await run.client()
    ehlo = await c.cmd("EHLO c.example")
    assert "AUTH" not in ehlo
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}") == \
        "503 5.5.1 Error: authentication not enabled"
    assert await c.cmd("STARTTLS") == r.STARTTLS_READY
    await c.starttls(pki.client_context())
    ehlo = await c.cmd("EHLO c.example")
    assert "250-AUTH PLAIN LOGIN\n250-ENHANCEDSTATUSCODES" in ehlo
    assert "AUTH=" not in ehlo
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}") == \
        "235 2.7.0 Authentication successful"
    assert await c.cmd("AUTH PLAIN") == "503 5.5.1 Error: already authenticated"
    assert await c.cmd("MAIL FROM:<alice@postbus.test> AUTH=<alice@postbus.test>") == r.MAIL_OK
    assert await c.cmd("AUTH LOGIN") == "503 5.5.1 Error: MAIL transaction in progress"
    assert await c.cmd("RCPT TO:<someone@elsewhere.example>") == r.RCPT_OK  # relayed: logged in
    assert await c.cmd("DATA") == r.DATA_GO_AHEAD
    reply = await c.cmd("Subject: hi\r\n\r\nbody\r\n.")
    assert reply.startswith("250 2.0.0 Ok: queued as ")
    qid = reply.rsplit(" ", 1)[1]
    assert f"{qid}: client=unknown[127.0.0.1], sasl_method=PLAIN, sasl_username=alice, " \
        "sasl_sender=<alice@postbus.test>" in caplog.text
    [content] = await queued(run)
    head = content.split(b"\r\n\r\n", 1)[0].decode()
    assert "\t(Authenticated sender: alice)\r\n\tby mx.postbus.test (Postbus) with ESMTPSA id " \
        in head
    await c.cmd("QUIT")


async def test_login_exchange_failure_cancel_and_bad_input(
    smtpd: StartSmtpd, users: UserStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postbus.smtpd")
    run = await smtpd(**auth_cf(broken_sasl_auth_clients="yes"))
    c = await run.client()
    ehlo = await c.cmd("EHLO c.example")
    assert "250-AUTH PLAIN LOGIN\n250-AUTH=PLAIN LOGIN\n" in ehlo  # smtpd_tls_auth_only = no
    assert await c.cmd("AUTH") == "501 5.5.4 Syntax: AUTH mechanism"
    assert await c.cmd("AUTH PLAIN a b") == "501 5.5.4 Syntax: AUTH mechanism"
    assert await c.cmd("AUTH CRAM-MD5") == \
        "535 5.7.8 Error: authentication failed: Invalid authentication mechanism"
    assert await c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert await c.cmd(b64("alice")) == "334 UGFzc3dvcmQ6"
    assert await c.cmd(b64("wrong")) == \
        "535 5.7.8 Error: authentication failed: (reason unavailable)"
    assert "unknown[127.0.0.1]: SASL LOGIN authentication failed: (reason unavailable), " \
        "sasl_username=alice" in caplog.text
    assert await c.cmd("AUTH PLAIN") == "334 "
    assert await c.cmd("*") == "501 5.7.0 Authentication aborted"
    assert "unknown[127.0.0.1]: SASL PLAIN authentication aborted" in caplog.text
    assert await c.cmd("AUTH PLAIN abc") == \
        "535 5.7.8 Error: authentication failed: Invalid base64 data in initial response"
    assert await c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert await c.cmd("!!notbase64") == \
        "535 5.7.8 Error: authentication failed: Invalid base64 data in continued response"
    assert await c.cmd("AUTH PLAIN") == "334 "
    assert await c.cmd("A" * 12289) == "500 5.5.6 SASL response limit exceeded"
    assert "unknown[127.0.0.1]: request longer than 12288: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA..." \
        in caplog.text
    assert await c.cmd("NOOP") == r.OK  # the over-long line was skipped as a whole
    # an authorization identity other than the user: no proxy logins
    assert (await c.cmd(f"AUTH PLAIN {b64('bob' + chr(0) + 'alice' + chr(0) + 's3cret')}"))\
        .startswith("535 5.7.8 ")
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'bob@postbus.test' + chr(0) + 'b0b')}") == \
        "235 2.7.0 Authentication successful"
    assert await c.cmd("MAIL FROM:<> AUTH=<x@y> AUTH=<>") == \
        "503 5.5.4 Error: multiple AUTH= options"
    assert await c.cmd("QUIT") == r.BYE
    assert "ehlo=1 auth=1/10 mail=0/1 noop=1 quit=1 commands=4/14" in caplog.text
    samples = {(m.labels["result"]): m.value for m in metrics.smtpd_auth.collect()[0].samples
               if m.name.endswith("_total") and m.labels["listener"] == "test"}
    assert samples["aborted"] >= 1 and samples["failure"] >= 5 and samples["success"] >= 1


async def test_security_options_and_disabled(
    smtpd: StartSmtpd, users: UserStore, pki: Pki
) -> None:
    run = await smtpd(**auth_cf(pki, smtpd_sasl_security_options="noanonymous, noplaintext",
                                smtpd_sasl_tls_security_options="noanonymous"))
    c = await run.client()
    assert "AUTH" not in await c.cmd("EHLO c.example")  # plaintext mechanisms, no TLS
    assert await c.cmd("AUTH PLAIN") == "503 5.5.1 Error: authentication not enabled"
    c = await tls_client(run, pki)
    assert "250-AUTH PLAIN LOGIN" in await c.cmd("EHLO c.example")
    plain = await smtpd(smtpd_sasl_auth_enable="no")
    d = await plain.client()
    assert "AUTH" not in await d.cmd("EHLO c.example")
    assert await d.cmd("AUTH PLAIN") == "503 5.5.1 Error: authentication not enabled"
    discard = await smtpd(**auth_cf(smtpd_discard_ehlo_keywords="auth"))
    e = await discard.client()
    assert "AUTH" not in await e.cmd("EHLO c.example")
    assert await e.cmd("AUTH PLAIN") == "503 5.5.1 Error: authentication not enabled"


async def test_starttls_forgets_an_earlier_login(
    smtpd: StartSmtpd, users: UserStore, pki: Pki
) -> None:
    run = await smtpd(**auth_cf(pki))
    c = await run.client()
    await c.cmd("EHLO c.example")
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}") == r.AUTH_OK
    assert await c.cmd("STARTTLS") == r.STARTTLS_READY
    await c.starttls(pki.client_context())
    await c.cmd("EHLO c.example")
    assert await c.cmd("MAIL FROM:<a@postbus.test>") == r.MAIL_OK
    assert await c.cmd("RCPT TO:<x@elsewhere.example>") == \
        "554 5.7.1 <x@elsewhere.example>: Relay access denied"


async def test_sender_login_maps(
    smtpd: StartSmtpd, users: UserStore, tmp_path: Path
) -> None:
    owners = tmp_path / "owners"
    owners.write_text("alice@postbus.test alice\nshared@postbus.test alice, bob@postbus.test\n")
    run = await smtpd(**auth_cf(
        smtpd_sender_login_maps=f"texthash:{owners}",
        smtpd_sender_restrictions="reject_sender_login_mismatch"))
    c = await run.client()
    await c.cmd("EHLO c.example")
    await c.cmd("MAIL FROM:<alice@postbus.test>")
    assert await c.cmd("RCPT TO:<postmaster>") == r.RCPT_OK  # always accepted
    assert await c.cmd("RCPT TO:<u@postbus.test>") == \
        "553 5.7.1 <alice@postbus.test>: Sender address rejected: not logged in"
    await c.cmd("RSET")
    await c.cmd("MAIL FROM:<nobody@postbus.test>")
    assert await c.cmd("RCPT TO:<u@postbus.test>") == r.RCPT_OK  # no owner: no login needed
    await c.cmd("RSET")
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'bob@postbus.test' + chr(0) + 'b0b')}") \
        == r.AUTH_OK
    await c.cmd("MAIL FROM:<alice@postbus.test>")
    assert await c.cmd("RCPT TO:<u@postbus.test>") == \
        "553 5.7.1 <alice@postbus.test>: Sender address rejected: not owned by user " \
        "bob@postbus.test"
    await c.cmd("RSET")
    await c.cmd("MAIL FROM:<Shared@postbus.test>")
    assert await c.cmd("RCPT TO:<u@postbus.test>") == r.RCPT_OK
    await c.cmd("RSET")
    await c.cmd("MAIL FROM:<nobody@postbus.test>")  # no owner: refused once logged in
    assert await c.cmd("RCPT TO:<u@postbus.test>") == \
        "553 5.7.1 <nobody@postbus.test>: Sender address rejected: not owned by user " \
        "bob@postbus.test"
    known = await smtpd(**auth_cf(
        smtpd_sender_login_maps=f"texthash:{owners}",
        smtpd_sender_restrictions="reject_known_sender_login_mismatch"))
    d = await known.client()
    await d.cmd("EHLO c.example")
    assert await d.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}") == r.AUTH_OK
    await d.cmd("MAIL FROM:<nobody@postbus.test>")
    assert await d.cmd("RCPT TO:<u@postbus.test>") == r.RCPT_OK


async def test_user_store_down_is_a_temporary_failure(
    smtpd: StartSmtpd, users: UserStore, redis: ServerProcess
) -> None:
    run = await smtpd(**auth_cf())
    c = await run.client()
    await c.cmd("EHLO c.example")
    redis.stop()
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}") == \
        "454 4.7.0 Temporary authentication failure: Authentication backend error"
    assert await c.cmd("NOOP") == r.OK


def test_unknown_security_option_and_cyrus_are_refused_at_start() -> None:
    from ingress_smtpd.server import Settings
    from postbus.config.conv import ConfigError
    from tests.integration.ingress.conftest import make_config

    with pytest.raises(ConfigError, match="smtpd_sasl_type"):
        Settings.from_config(make_config(smtpd_sasl_auth_enable="yes"))
    with pytest.raises(ConfigError, match="value 100 < 12288"):
        Settings.from_config(make_config(smtpd_sasl_auth_enable="yes", smtpd_sasl_type="postbus",
                                         smtpd_sasl_response_limit="100"))
    with pytest.raises(ConfigError, match='unknown smtpd_sasl_security_options value "nope"'):
        Settings.from_config(make_config(smtpd_sasl_auth_enable="yes",
                                         smtpd_sasl_type="postbus",
                                         smtpd_sasl_security_options="nope"))




async def test_local_header_rewrite_for_authenticated_clients(
    smtpd: StartSmtpd, users: UserStore
) -> None:
    run = await smtpd(**auth_cf(local_header_rewrite_clients="permit_sasl_authenticated"))
    for login in (False, True):
        c = await run.client()
        await c.cmd("EHLO c.example")
        if login:
            assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}") \
                == r.AUTH_OK
        await c.cmd("MAIL FROM:<alice@postbus.test>")
        await c.cmd("RCPT TO:<bob@postbus.test>")
        await c.cmd("DATA")
        assert (await c.cmd(f"Subject: {login}\r\nTo: bob\r\n\r\nbody\r\n.")).startswith("250")
        await c.cmd("QUIT")
    heads = {}
    for content in await queued(run):
        head = content.split(b"\r\n\r\n", 1)[0].decode()
        heads["Subject: True" in head] = head
    assert heads[False].endswith("\r\nTo: bob")  # a remote client's headers stay as they are
    assert "\r\nTo: bob@mx.postbus.test" in heads[True], heads[True]
    assert "\r\nMessage-Id: <" in heads[True]


async def test_exceptions_networks_are_not_offered_auth_but_may_use_it(
    smtpd: StartSmtpd, users: UserStore
) -> None:
    run = await smtpd(**auth_cf(smtpd_sasl_exceptions_networks="10.0.0.0/8, 127.0.0.0/8"))
    c = await run.client()
    assert "AUTH" not in await c.cmd("EHLO c.example")
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}") == r.AUTH_OK
    other = await smtpd(**auth_cf(smtpd_sasl_exceptions_networks="!127.0.0.1, 127.0.0.0/8"))
    d = await other.client()
    assert "250-AUTH PLAIN LOGIN" in await d.cmd("EHLO c.example")


def test_exceptions_by_host_name_are_refused_at_start() -> None:
    from ingress_smtpd.server import Settings
    from postbus.config.conv import ConfigError
    from tests.integration.ingress.conftest import make_config

    with pytest.raises(ConfigError, match=r"host name mua\.example is not supported yet"):
        Settings.from_config(make_config(**auth_cf(
            smtpd_sasl_exceptions_networks="mua.example")))


async def test_local_domain_is_the_realm_of_a_bare_login(
    smtpd: StartSmtpd, users: UserStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postbus.smtpd")
    run = await smtpd(**auth_cf(smtpd_sasl_local_domain="postbus.test"))
    c = await run.client()
    await c.cmd("EHLO c.example")
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}") == \
        "535 5.7.8 Error: authentication failed: (reason unavailable)"
    assert "sasl_username=alice@postbus.test" in caplog.text  # alice@postbus.test: no such user
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'bob' + chr(0) + 'b0b')}") == r.AUTH_OK
    await c.cmd("MAIL FROM:<bob@postbus.test>")
    await c.cmd("RCPT TO:<u@postbus.test>")
    await c.cmd("DATA")
    assert (await c.cmd("Subject: x\r\n\r\n.")).startswith("250 2.0.0 Ok: queued as ")
    assert "sasl_method=PLAIN, sasl_username=bob@postbus.test" in caplog.text


async def test_weak_hash_is_renewed_at_login(smtpd: StartSmtpd, users: UserStore) -> None:
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("w3ak")
    await users.redis.hset(users.key, "weak", weak)
    run = await smtpd(**auth_cf())
    c = await run.client()
    await c.cmd("EHLO c.example")
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'weak' + chr(0) + 'w3ak')}") == r.AUTH_OK
    renewed = (await users.redis.hget(users.key, "weak")).decode()
    assert renewed != weak and "m=65536" in renewed
    assert await users.check("weak", "w3ak")


async def test_saslpasswd_refusals(tmp_path: Path, redis: ServerProcess) -> None:
    import subprocess
    import sys

    (tmp_path / "main.cf").write_text(f"postbus_redis_url = {redis.url}/0\n")

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "postbus.cli.main", "-c", str(tmp_path),
                               "saslpasswd", *args], capture_output=True, text=True,
                              input=stdin, timeout=60)

    empty = run("add", "alice", stdin="\n")
    assert (empty.returncode, empty.stderr) == (1, "saslpasswd: fatal: empty password\n")
    bad = run("add", "a\tb", stdin="x\n")
    assert bad.returncode == 1 and "bad user name" in bad.stderr
    assert run("add").returncode == 2  # usage
    assert run("list").stdout == ""
    redis.stop()
    down = run("add", "alice", stdin="pw\n")
    assert down.returncode == 75 and "saslpasswd: fatal: cannot reach Redis" in down.stderr


async def test_mechanism_filter_names_tables_files_and_nothing_left(
    smtpd: StartSmtpd, users: UserStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """smtpd_sasl_mechanism_filter: names case-insensitively, type:table and /file
    patterns with ``!``, after the security options, on what EHLO offers; a filter that
    leaves nothing offers no AUTH and logs Postfix's words."""
    run = await smtpd(**auth_cf(smtpd_sasl_mechanism_filter="Login"))
    c = await run.client()
    assert "250-AUTH LOGIN\n" in await c.cmd("EHLO c.example")
    assert await c.cmd("AUTH LOGIN") == "334 VXNlcm5hbWU6"
    assert await c.cmd(b64("alice")) == "334 UGFzc3dvcmQ6"
    assert await c.cmd(b64("s3cret")) == r.AUTH_OK
    c = await run.client()  # hidden from EHLO, but AUTH hands it to the backend, as Postfix
    assert "250-AUTH LOGIN\n" in await c.cmd("EHLO c.example")
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}") == r.AUTH_OK
    (tmp_path / "mechs").write_text("plain yes\n")
    (tmp_path / "list").write_text("# the file's lines are patterns\n!login\n")
    for value, offered in ((f"texthash:{tmp_path}/mechs", "PLAIN"),
                           (f"{tmp_path}/list, static:rest", "PLAIN"),
                           (f"!{tmp_path}/list", "LOGIN"),
                           ("!!plain, !external, static:rest", "PLAIN LOGIN")):
        run = await smtpd(**auth_cf(smtpd_sasl_mechanism_filter=value))
        c = await run.client()
        assert f"250-AUTH {offered}\n" in await c.cmd("EHLO c.example"), value
    caplog.set_level(logging.WARNING)
    run = await smtpd(**auth_cf(smtpd_sasl_mechanism_filter="external, cram-md5"))
    c = await run.client()
    assert "AUTH" not in await c.cmd("EHLO c.example")
    assert await c.cmd("AUTH PLAIN") == "503 5.5.1 Error: authentication not enabled"
    assert [(rec.levelname, rec.getMessage()) for rec in caplog.records
            if "discards" in rec.getMessage()] == \
        [("CRITICAL", "smtpd_sasl_mechanism_filter discards all mechanisms in 'PLAIN LOGIN'")]


def test_mechanism_filter_bad_values_are_refused_at_start(tmp_path: Path) -> None:
    from ingress_smtpd.server import Settings
    from postbus.config.conv import ConfigError
    from tests.integration.ingress.conftest import make_config

    with pytest.raises(ConfigError, match="smtpd_sasl_mechanism_filter: no pattern after '!'"):
        Settings.from_config(make_config(smtpd_sasl_auth_enable="yes", smtpd_sasl_type="postbus",
                                         smtpd_sasl_mechanism_filter="plain, !"))
    with pytest.raises(ConfigError, match="smtpd_sasl_mechanism_filter: open file "):
        Settings.from_config(make_config(smtpd_sasl_auth_enable="yes", smtpd_sasl_type="postbus",
                                         smtpd_sasl_mechanism_filter=f"{tmp_path}/none"))


async def scram_login(c: Client, mechanism: str, user: str, password: str,
                      initial: bool = True) -> str:
    """A SCRAM exchange with the SMTP client's own SCRAM code; the last reply."""
    from postbus.sasl.client import ClientExchange, SaslClientError

    exchange = ClientExchange(mechanism, user, password)
    first = exchange.initial
    assert first is not None
    if initial:
        reply = await c.cmd(f"AUTH {mechanism} {b64(first)}")
    else:
        assert await c.cmd(f"AUTH {mechanism}") == "334 "
        reply = await c.cmd(b64(first))
    while reply.startswith("334 "):
        try:
            answer = exchange.step(base64.b64decode(reply[4:]))
        except SaslClientError as exc:
            return f"client: {exc}"
        reply = await c.cmd(b64(answer))
    return reply


async def test_scram_logins_and_keys_for_older_users(
    smtpd: StartSmtpd, users: UserStore, caplog: pytest.LogCaptureFixture
) -> None:
    """postbus_sasl_scram = yes: SCRAM-SHA-256 and -1 against the keys saslpasswd stored,
    the server's signature checked by the client; a wrong password, an unknown user and
    a user from before SCRAM keys fail alike, and that user's next PLAIN login adds them."""
    run = await smtpd(**auth_cf(postbus_sasl_scram="yes"))
    c = await run.client()
    assert "250-AUTH PLAIN LOGIN SCRAM-SHA-256 SCRAM-SHA-1\n" in await c.cmd("EHLO c.example")
    assert await scram_login(c, "SCRAM-SHA-256", "alice", "s3cret") == r.AUTH_OK
    c = await run.client()
    await c.cmd("EHLO c.example")
    assert await scram_login(c, "SCRAM-SHA-1", "bob@postbus.test", "b0b", initial=False) == \
        r.AUTH_OK
    c = await run.client()
    await c.cmd("EHLO c.example")
    failed = "535 5.7.8 Error: authentication failed: (reason unavailable)"
    assert await scram_login(c, "SCRAM-SHA-256", "alice", "wrong") == failed
    assert await scram_login(c, "SCRAM-SHA-256", "nobody", "x") == failed
    assert await c.cmd(f"AUTH SCRAM-SHA-256 {b64('p=tls-unique,,n=alice,r=abc')}") == \
        "535 5.7.8 Error: authentication failed: Invalid client-first message"
    from argon2 import PasswordHasher

    await users.redis.hset(users.key, "old", PasswordHasher().hash("0ld"))  # no SCRAM keys
    assert await scram_login(c, "SCRAM-SHA-256", "old", "0ld") == failed
    assert await c.cmd(f"AUTH PLAIN {b64(chr(0) + 'old' + chr(0) + '0ld')}") == r.AUTH_OK
    c = await run.client()
    await c.cmd("EHLO c.example")
    assert await scram_login(c, "SCRAM-SHA-256", "old", "0ld") == r.AUTH_OK
    plain = await smtpd(**auth_cf())  # postbus_sasl_scram = no (the default)
    d = await plain.client()
    assert "250-AUTH PLAIN LOGIN\n" in await d.cmd("EHLO c.example")
    assert await d.cmd("AUTH SCRAM-SHA-256") == \
        "535 5.7.8 Error: authentication failed: Invalid authentication mechanism"
