"""SMTP AUTH: our smtpd against a real Postfix with smtpd_sasl_type = dovecot, same dialogues,
same replies and log lines.

Postfix talks to a private Dovecot (``tests/dovecot_instance.py``) where both are
installed; elsewhere the recorded answers (``tests/data/postfix/smtpd_auth_dialogues.json``)
stand in.  Our side runs twice: against the same Dovecot, and with the built-in backend
(smtpd_sasl_type = postbus, the same users in a real Redis), which must answer as
Postfix with Dovecot does.
"""

from __future__ import annotations

import base64
import difflib
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from ingress_smtpd.server import SmtpServer
from postbus.maps import context as maps_context
from postbus.queue.entry import QueueEntry
from postbus.sasl.users import UserStore
from postbus.servers import ServerProcess
from tests.dovecot_instance import DOVECOT, Dovecot
from tests.integration.ingress.conftest import BASE_MAIN_CF, make_config
from tests.integration.postfix_dialogue import READ_ALL, Line, LivePostfix, Tls, compare
from tests.recorded import Recording
from tests.tls_certs import Pki

pytestmark = pytest.mark.integration

RECORDING = Recording("smtpd_auth_dialogues")
USERS = {"alice": "s3cret", "bob@postbus.test": "b0b"}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


PLAIN_ALICE = f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 's3cret')}"

CONFIGS: dict[str, dict[str, str]] = {
    "auth": {},
    "tls_only": {"smtpd_tls_auth_only": "yes"},
    "broken": {"broken_sasl_auth_clients": "yes", "smtpd_sasl_authenticated_header": "yes"},
    "submission": {"smtpd_tls_security_level": "encrypt",
                   "smtpd_recipient_restrictions": "permit_sasl_authenticated, reject"},
    "limit": {"smtpd_sasl_response_limit": "12288"},
    "mech_filter": {"smtpd_sasl_mechanism_filter": "!plain, static:rest"},
    "sasl_access": {"smtpd_recipient_restrictions":
                    "check_sasl_access texthash:{files}/logins, permit_sasl_authenticated, reject"},
    "logins": {"smtpd_sender_restrictions": "reject_sender_login_mismatch",
               "smtpd_relay_restrictions": "permit_sasl_authenticated, reject_unauth_destination"},
}


@pytest.fixture(scope="module")
def files() -> Iterator[Path]:
    """Files both servers read, in a directory Postfix's daemons may enter."""
    root = Path(tempfile.mkdtemp(prefix="postbus-auth-"))
    root.chmod(0o755)
    (root / "owners").write_text("alice@postbus.test alice\n")
    (root / "logins").write_text("alice REJECT not you\nbob@postbus.test 450 4.7.1 later\n")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def pki(files: Path) -> Pki:
    return Pki.create(files / "pki")


@pytest.fixture(scope="module")
def dovecot() -> Iterator[Dovecot | None]:
    if DOVECOT is None:
        yield None
        return
    server = Dovecot(USERS).start()
    yield server
    server.stop()


def settings(config: str, pki: Pki, files: Path) -> dict[str, str]:
    cert, key = pki.server("server")
    return {
        **BASE_MAIN_CF,
        "mail_name": "Postbus",
        "mydestination": "localhost, postbus.test",
        "smtpd_hard_error_limit": "100",
        "smtpd_soft_error_limit": "100",
        "smtpd_tls_security_level": "may",
        "smtpd_tls_cert_file": str(cert),
        "smtpd_tls_key_file": str(key),
        "smtpd_sasl_auth_enable": "yes",
        "smtpd_sender_login_maps": f"texthash:{files / 'owners'}",
        **{k: v.replace("{files}", str(files)) for k, v in CONFIGS[config].items()},
    }


@pytest.fixture(scope="module")
def postfix(
    pki: Pki, files: Path, dovecot: Dovecot | None
) -> Iterator[Callable[[str], LivePostfix | None]]:
    """One private Postfix per configuration (with the test Dovecot), started when asked for."""
    started: dict[str, LivePostfix | None] = {}
    stack = []

    def get(config: str) -> LivePostfix | None:
        if dovecot is None:
            return None  # no Dovecot for a live Postfix: the recordings answer
        if config not in started:
            manager = LivePostfix.running({
                **settings(config, pki, files), "smtpd_sasl_type": "dovecot",
                "smtpd_sasl_path": f"inet:127.0.0.1:{dovecot.port}"})
            started[config] = manager.__enter__()
            stack.append(manager)
        return started[config]

    yield get
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


@pytest.fixture
async def users(redis: ServerProcess) -> AsyncIterator[None]:
    maps_context.configure(f"{redis.url}/0")
    store = UserStore(maps_context.redis_client(), "postbus:sasl:users")
    for name, password in USERS.items():
        await store.set(name, password)
    yield
    await maps_context.aclose()


def dialogues(pki: Pki) -> dict[str, tuple[str, list[Line]]]:
    tls = pki.client_context()
    return {
        "plain_ok": ("auth", [
            "EHLO c", PLAIN_ALICE, "AUTH PLAIN", "MAIL FROM:<a@b.example> AUTH=<a@b.example>",
            "AUTH LOGIN", "RSET", "QUIT",
        ]),
        "login_fail_then_ok": ("auth", [
            "EHLO c", "AUTH LOGIN", b64("alice"), b64("wrong"), "AUTH LOGIN", b64("alice"),
            b64("s3cret"), "QUIT",
        ]),
        "plain_unknown_user_and_proxy": ("auth", [
            "EHLO c", f"AUTH PLAIN {b64(chr(0) + 'nobody' + chr(0) + 'x')}",
            f"AUTH PLAIN {b64('bob@postbus.test' + chr(0) + 'alice' + chr(0) + 's3cret')}",
            "AUTH PLAIN", b64(chr(0) + "bob@postbus.test" + chr(0) + "b0b"), "QUIT",
        ]),
        "bad_input": ("auth", [
            "HELO c", "AUTH", "AUTH PLAIN a b", "AUTH CRAM-MD5", "AUTH PLAIN abc",
            "AUTH PLAIN !!", "AUTH PLAIN", "*", "AUTH LOGIN", "!!bad", "AUTH LOGIN", "=",
            "MAIL FROM:<> AUTH=<x@y> AUTH=<>", "RSET", "MAIL FROM:<> AUTH=<> AUTH=<x@y>",
            "RSET", f"AUTH PLAIN {b64(chr(0) + 'nobody')}", "AUTH PLAIN =", "QUIT",
        ]),
        "tls_only": ("tls_only", [
            "EHLO c", PLAIN_ALICE, "STARTTLS", Tls(tls), "EHLO c2", PLAIN_ALICE, "QUIT",
        ]),
        "broken_clients": ("broken", ["EHLO c", "STARTTLS", Tls(tls), "EHLO c", "QUIT"]),
        "submission": ("submission", [
            "EHLO c", PLAIN_ALICE, "STARTTLS", Tls(tls), "EHLO c2", "MAIL FROM:<a@b.example>",
            "RCPT TO:<u@postbus.test>", "RSET", PLAIN_ALICE, "MAIL FROM:<a@b.example>",
            "RCPT TO:<u@postbus.test>", "RCPT TO:<x@elsewhere.example>", "QUIT",
        ]),
        "response_limit": ("limit", [
            "EHLO c", "AUTH PLAIN", "A" * 12289, "NOOP", "AUTH LOGIN", "A" * 12288,
            "AUTH LOGIN", "A" * 12287, "QUIT",
        ]),
        "hangup_in_exchange": ("auth", ["EHLO c", "AUTH LOGIN", b64("alice")]),
        "mechanism_filter": ("mech_filter", [  # hidden from EHLO, still taken by AUTH
            "EHLO c", "STARTTLS", Tls(tls), "EHLO c2", PLAIN_ALICE, "QUIT",
        ]),
        "pipelined": ("submission", [
            "EHLO c", "STARTTLS", Tls(tls),
            (f"EHLO c2\r\n{PLAIN_ALICE}\r\nMAIL FROM:<a@b.example>\r\n"
             "RCPT TO:<x@elsewhere.example>\r\nRSET\r\nAUTH LOGIN\r\nQUIT\r\n").encode(),
            READ_ALL,
        ]),
        "nul_and_utf8": ("auth", [
            "EHLO c", "AUTH PLAIN\x00" + b64("x"), "AUTH LOGIN", b64("\u00e4lice\x01"),
            b64("s3cret"), "AUTH PL\u00c4IN", "QUIT",
        ]),
        "sasl_access_reject": ("sasl_access", [
            "EHLO c", "MAIL FROM:<a@b.example>", "RCPT TO:<u@postbus.test>", "RSET",
            PLAIN_ALICE, "MAIL FROM:<a@b.example>", "RCPT TO:<u@postbus.test>", "QUIT",
        ]),
        "sasl_access_defer": ("sasl_access", [
            "EHLO c", f"AUTH PLAIN {b64(chr(0) + 'bob@postbus.test' + chr(0) + 'b0b')}",
            "MAIL FROM:<a@b.example>", "RCPT TO:<u@postbus.test>", "QUIT",
        ]),
        "sender_logins": ("logins", [
            "EHLO c", "MAIL FROM:<alice@postbus.test>", "RCPT TO:<x@elsewhere.example>",
            "RCPT TO:<u@postbus.test>", "RSET",
            f"AUTH PLAIN {b64(chr(0) + 'bob@postbus.test' + chr(0) + 'b0b')}",
            "MAIL FROM:<alice@postbus.test>", "RCPT TO:<x@elsewhere.example>", "RSET",
            "MAIL FROM:<bob@postbus.test>", "RCPT TO:<x@elsewhere.example>", "QUIT",
        ]),
    }


NAMES = ["plain_ok", "login_fail_then_ok", "plain_unknown_user_and_proxy", "bad_input",
         "tls_only", "broken_clients", "submission", "response_limit", "hangup_in_exchange",
         "mechanism_filter",
         "pipelined", "nul_and_utf8", "sasl_access_reject", "sasl_access_defer",
         "sender_logins"]


async def _ours(config: str, backend: str, pki: Pki, files: Path,
                dovecot: Dovecot | None) -> SmtpServer:
    async def never(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        raise AssertionError("comparison dialogues must not queue")

    extra = {"smtpd_sasl_type": backend}
    if backend == "dovecot":
        assert dovecot is not None
        extra["smtpd_sasl_path"] = f"inet:127.0.0.1:{dovecot.port}"
    server = SmtpServer(make_config(**settings(config, pki, files), **extra), never,
                        listener="compare")
    return server


@pytest.mark.parametrize("backend", ["postbus", "dovecot"])
@pytest.mark.parametrize("name", NAMES)
async def test_same_auth_dialogue_as_postfix_with_dovecot(
    name: str, backend: str, pki: Pki, files: Path, dovecot: Dovecot | None,
    postfix: Callable[[str], LivePostfix | None], users: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if backend == "dovecot" and dovecot is None:
        pytest.skip("dovecot-core is not installed (the built-in backend ran the case)")
    config, lines = dialogues(pki)[name]
    server = await _ours(config, backend, pki, files, dovecot)
    port = (await server.start("127.0.0.1", 0))[0][1]
    try:
        expected, got = await compare(RECORDING, name, lines, port, postfix(config), caplog)
    finally:
        await server.stop(grace=1.0)
    assert got["replies"] == expected["replies"]
    diff = "\n".join(difflib.unified_diff(expected["log"], got["log"], "postfix", "postbus",
                                          lineterm=""))
    assert got["log"] == expected["log"], diff


