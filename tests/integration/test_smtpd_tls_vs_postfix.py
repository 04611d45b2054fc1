"""STARTTLS, wrapper mode, client certificates and discarded EHLO keywords: our smtpd against
a real Postfix, same dialogues, same replies and log lines.

Certificates are made for the test module (a CA, an RSA server key, client keys signed by
the CA and self-signed); both servers get the same files. Each configuration runs one
private Postfix where Postfix is installed; elsewhere the recorded answers
(``tests/data/postfix/smtpd_tls_dialogues.json``) stand in. The lines OpenSSL writes
with its source file and line (``TLS library problem``) are compared without them.
"""

from __future__ import annotations

import difflib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import pytest

from ingress_smtpd.server import SmtpServer
from postbus.queue.entry import QueueEntry
from tests.integration.ingress.conftest import BASE_MAIN_CF, make_config
from tests.integration.postfix_dialogue import (
    NO_BANNER,
    READ,
    READ_ALL,
    Line,
    LivePostfix,
    Tls,
    Wait,
    compare,
)
from tests.recorded import Recording
from tests.tls_certs import Pki

pytestmark = pytest.mark.integration

RECORDING = Recording("smtpd_tls_dialogues")


def base(pki: Pki) -> dict[str, str]:
    cert, key = pki.server("server")
    return {
        **BASE_MAIN_CF,
        "mail_name": "Postbus",
        "mydestination": "localhost",
        "local_recipient_maps": "",
        "smtpd_hard_error_limit": "100",
        "smtpd_soft_error_limit": "100",
        "smtpd_tls_cert_file": str(cert),
        "smtpd_tls_key_file": str(key),
        "smtpd_tls_CAfile": str(pki.ca_file),
        "smtpd_tls_loglevel": "1",
    }


CONFIGS: dict[str, dict[str, str]] = {
    "may": {"smtpd_tls_security_level": "may", "smtpd_tls_ask_ccert": "yes",
            "smtpd_starttls_timeout": "3s"},
    "encrypt": {"smtpd_tls_security_level": "encrypt"},
    "req_ccert": {"smtpd_tls_security_level": "encrypt", "smtpd_tls_req_ccert": "yes"},
    "wrapper": {"smtpd_tls_wrappermode": "yes", "smtpd_tls_ask_ccert": "yes"},
    "discard": {
        "smtpd_tls_security_level": "may",
        "smtpd_discard_ehlo_keywords": "pipelining",  # the table below has this client
        "smtpd_discard_ehlo_keyword_address_maps":
            "inline:{{127.0.0.1=dsn, smtputf8 starttls,chunking etrn}}",
    },
    "silent": {"smtpd_discard_ehlo_keywords": "silent-discard, vrfy, size, 8bitmime"},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki.create(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def settings(pki: Pki) -> dict[str, dict[str, str]]:
    shared = base(pki)
    return {name: {**shared, **extra} for name, extra in CONFIGS.items()}


@pytest.fixture(scope="module")
def postfix(settings: dict[str, dict[str, str]]) -> Iterator[Callable[[str], LivePostfix | None]]:
    """One private Postfix per configuration, started when first asked for."""
    started: dict[str, LivePostfix | None] = {}
    stack = []

    def get(config: str) -> LivePostfix | None:
        if config not in started:
            manager = LivePostfix.running(settings[config])
            started[config] = manager.__enter__()
            stack.append(manager)
        return started[config]

    yield get
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


@pytest.fixture
async def ours(
    settings: dict[str, dict[str, str]],
) -> AsyncIterator[Callable[[str], Awaitable[int]]]:
    servers: list[SmtpServer] = []

    async def never(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        raise AssertionError("comparison dialogues must not queue")

    async def start(config: str) -> int:
        server = SmtpServer(make_config(**settings[config]), never, listener="compare")
        servers.append(server)
        return (await server.start("127.0.0.1", 0))[0][1]

    yield start
    for server in servers:
        await server.stop(grace=1.0)


@dataclass
class Case:
    config: str
    lines: list[Line]
    wrapped: ssl.SSLContext | None = None  # TLS from the start, with this client context


def dialogues(pki: Pki) -> dict[str, Case]:
    plain = pki.client_context()
    trusted = pki.client_context(pki.client("trusted", "client.postbus.test"))
    untrusted = pki.client_context(pki.client("selfsigned", "rogue.example", self_signed=True))
    cases: dict[str, tuple[str, list[Line]] | tuple[str, list[Line], ssl.SSLContext]] = {
        "starttls": ("may", [
            "EHLO c", "STARTTLS", Tls(plain), "EHLO c2", "STARTTLS", "MAIL FROM:<a@b.example>",
            "RCPT TO:<root@localhost>", "QUIT",
        ]),
        "starttls_injection": ("may", [
            "EHLO c", b"STARTTLS\r\nMAIL FROM:<evil@attacker.example>\r\n", READ, Tls(plain),
            "EHLO c2", "MAIL FROM:<a@b.example>", "RSET", "QUIT",
        ]),
        "starttls_syntax_and_helo": ("may", [
            "STARTTLS now", "HELO c", "STARTTLS", Tls(plain), "MAIL FROM:<a@b.example>",
            "QUIT",
        ]),
        "trusted_client": ("may", ["EHLO c", "STARTTLS", Tls(trusted), "EHLO c2", "QUIT"]),
        "untrusted_client": ("may", ["EHLO c", "STARTTLS", Tls(untrusted), "QUIT"]),
        "garbage_instead_of_hello": ("may", [
            "EHLO c", "STARTTLS", b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)), Wait(10),
        ]),
        "stalled_handshake": ("may", ["EHLO c", "STARTTLS", Wait(15)]),
        "hangup_in_handshake": ("may", ["EHLO c", "STARTTLS", b"\x16\x03\x01"]),
        "encrypt": ("encrypt", [
            "MAIL FROM:<a@b.example>", "RCPT TO:<root@localhost>", "DATA", "VRFY root",
            "ETRN example.com", "RSET", "NOOP", "HELO c", "EHLO c", "STARTTLS", Tls(plain),
            "EHLO c2", "MAIL FROM:<a@b.example>", "QUIT",
        ]),
        "encrypt_pipelined": ("encrypt", [
            b"EHLO c\r\nMAIL FROM:<a@b.example>\r\nSTARTTLS\r\n", READ, READ, READ, Tls(plain),
            "QUIT",
        ]),
        "req_ccert_none": ("req_ccert", ["EHLO c", "STARTTLS", Tls(plain), "EHLO c2"]),
        "req_ccert_untrusted": ("req_ccert", [
            "EHLO c", "STARTTLS", Tls(untrusted), "EHLO c2",
        ]),
        "req_ccert_trusted": ("req_ccert", [
            "EHLO c", "STARTTLS", Tls(trusted), "EHLO c2", "MAIL FROM:<a@b.example>", "QUIT",
        ]),
        "wrapper": ("wrapper", [
            "EHLO c", "STARTTLS", "MAIL FROM:<a@b.example>", "QUIT",
        ], plain),
        "wrapper_client_cert": ("wrapper", ["EHLO c", "QUIT"], trusted),
        "wrapper_plaintext": ("wrapper", [NO_BANNER, b"EHLO c\r\n", READ_ALL]),
        "discard_by_client_address": ("discard", [
            "EHLO c", "MAIL FROM:<a@b.example> RET=FULL", "MAIL FROM:<a@b.example> ENVID=x",
            "MAIL FROM:<a@b.example> SMTPUTF8", "MAIL FROM:<a@b.example>",
            "RCPT TO:<root@localhost> NOTIFY=NEVER", "RCPT TO:<root@localhost> ORCPT=rfc822;a@b",
            "STARTTLS", "RSET", "ETRN example.com", "BDAT 5 LAST",
        ]),
        "discard_silently": ("silent", ["EHLO c", "QUIT"]),
    }
    return {name: Case(*case) for name, case in cases.items()}


@pytest.mark.parametrize("name", [
    "starttls", "starttls_injection", "starttls_syntax_and_helo", "trusted_client",
    "untrusted_client", "garbage_instead_of_hello", "stalled_handshake", "hangup_in_handshake",
    "encrypt", "encrypt_pipelined", "req_ccert_none", "req_ccert_untrusted",
    "req_ccert_trusted", "wrapper", "wrapper_client_cert", "wrapper_plaintext",
    "discard_by_client_address", "discard_silently",
])
async def test_same_replies_and_log_as_postfix(
    name: str, pki: Pki, postfix: Callable[[str], LivePostfix | None],
    ours: Callable[[str], Awaitable[int]], caplog: pytest.LogCaptureFixture,
) -> None:
    case = dialogues(pki)[name]
    port = await ours(case.config)
    expected, got = await compare(RECORDING, name, case.lines, port, postfix(case.config),
                                  caplog, case.wrapped)
    assert got["replies"] == expected["replies"]
    diff = "\n".join(difflib.unified_diff(expected["log"], got["log"], "postfix", "postbus",
                                          lineterm=""))
    assert got["log"] == expected["log"], diff
