"""Open-relay probes and address forms: our RCPT replies are Postfix's, to the letter.

The resolver (trivial-rewrite) decides what is local: ``user%remote@local``,
``remote!user@local``, ``"user@remote"@local`` and their relatives resolve
to a remote address, which an unauthorized client may not relay to,
whatever restriction list guards relaying. Each family is tried with case
variants under Postfix's default ``defer_unauth_destination`` (454) and
under ``reject_unauth_destination`` (554); a local user table shows which
resolved names are users; the last dialogue sends 8-bit, invalid UTF-8,
NUL bytes and over-long addresses. Replies and smtpd log lines are compared
with a private real Postfix where it is installed, else with its recorded
answers (``tests/data/postfix/relay_probes.json``).
"""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from ingress_smtpd.server import SmtpServer
from postbus.queue.entry import QueueEntry
from tests.integration.ingress.conftest import make_config
from tests.integration.postfix_dialogue import Line, LivePostfix, compare
from tests.recorded import Recording

pytestmark = pytest.mark.integration

RECORDING = Recording("relay_probes")

COMMON = {
    "compatibility_level": "3.6",
    "mail_name": "Postbus",
    "myhostname": "mx.postbus.test",
    "mydomain": "postbus.test",
    "mydestination": "$myhostname, localhost, postbus.test",
    "inet_interfaces": "127.0.0.1",
    "inet_protocols": "ipv4",
    "mynetworks": "10.0.0.0/8",
    "local_recipient_maps": "",
    "alias_maps": "",
    "smtpd_error_sleep_time": "0",
    "smtpd_soft_error_limit": "1000",
    "smtpd_hard_error_limit": "1000",
    "smtpd_peername_lookup": "no",
}
VARIANTS = {
    "defer": {},
    "reject": {"smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination"},
    "users": {"local_recipient_maps": "inline:{bob=ok, alice=ok}"},
}

RELAY_PROBES = [
    # the percent hack, bang paths and quoted routing operators
    "user%example.com@postbus.test", "USER%EXAMPLE.COM@POSTBUS.TEST",
    "User%Example.Com@PostBus.Test",
    "example.com!user@postbus.test", "EXAMPLE.COM!USER@POSTBUS.TEST", "a!b!user@postbus.test",
    '"user@example.com"@postbus.test', '"USER@EXAMPLE.COM"@POSTBUS.TEST',
    '"user%example.com"@postbus.test', '"example.com!user"@postbus.test',
    '"a b%example.com"@postbus.test', "user\\@example.com@postbus.test",
    "user%a%postbus.test@postbus.test", "user%example.com%postbus.test@postbus.test",
    "user@example.com@postbus.test", "USER@EXAMPLE.COM@POSTBUS.TEST", "user@example.com@",
    "user%example.com.@postbus.test", "user!@postbus.test",
    # what resolves back to us
    "user%postbus.test@postbus.test", "postbus.test!user@postbus.test",
    "user@postbus.test@postbus.test", "user%[127.0.0.1]@postbus.test",
    # bare names, postmaster and the null local part
    "postmaster", "Postmaster", "POSTMASTER", "mailer-daemon", "user",
    "user%example.com", "example.com!user", '"user@example.com"',
    "postmaster@example.com", '"user"@postbus.test', '""@postbus.test',
    # address literals: ours and others
    "user@[127.0.0.1]", "user@[127.0.0.2]", "user@[IPv6:::1]", "user%example.com@[127.0.0.1]",
    '"user%example.com"@[127.0.0.1]', "user%[1.2.3.4]@postbus.test",
    # source routes
    "@postbus.test:user@example.com", "@example.com:user@postbus.test",
    "@a.example,@b.example:user@postbus.test",
    # trailing dots, subdomains, malformed results
    "user@postbus.test.", "user@example.com.", "user@sub.postbus.test", "user@localhost",
    "user%@postbus.test", "%@postbus.test", "!@postbus.test", '"@"@postbus.test',
    '"user@"@postbus.test', "user%bad..example@postbus.test", "user%1.2.3.4@postbus.test",
]
USER_PROBES = [
    "bob@postbus.test", "Bob@postbus.test", "BOB@POSTBUS.TEST", "bob@mx.postbus.test",
    "bob@localhost", "bob@[127.0.0.1]", "nobody@postbus.test", "bob+ext@postbus.test",
    "bob%postbus.test@postbus.test", "postbus.test!bob@postbus.test", '"bob"@postbus.test',
    "postmaster@postbus.test", "postmaster", "MAILER-DAEMON@postbus.test",
    "double-bounce@postbus.test", "/tmp/x@postbus.test", "../../../../tmp/y@postbus.test",
    '"../x"@postbus.test', '"/tmp/x"@postbus.test', "..@postbus.test", ".bob@postbus.test",
    "bob/../alice@postbus.test", "bob%example.com@postbus.test",
]
ENCODING: list[Line] = [
    "EHLO client.example",
    "MAIL FROM:<s@example.org>", "RCPT TO:<\u00fcser@postbus.test>",
    "RCPT TO:<user@b\u00fccher.example>", "RCPT TO:<\udcff@postbus.test>",
    "RCPT TO:<us\x00er@postbus.test>", "RSET",
    "MAIL FROM:<\u00fcser@example.org>", "RSET", "MAIL FROM:<user@b\u00fccher.example>", "RSET",
    "MAIL FROM:<\udcffx@example.org>", "RSET", "MAIL FROM:<user%@example.org>", "RSET",
    "MAIL FROM:<user@example.com@>", "RSET", "MAIL FROM:<root@>", "RSET",
    "MAIL FROM:<s@example.org> SMTPUTF8", "RCPT TO:<user@b\u00fccher.example>",
    "RCPT TO:<\u00fcser@postbus.test>", "RCPT TO:<\udcff@postbus.test>", "RSET",
    "NOOP\x00x", "MAIL FROM:<s@example.org>",
    'RCPT TO:<"' + "a" * 1500 + '"@postbus.test>', 'RCPT TO:<"' + "a" * 3000 + '"@postbus.test>',
    "RCPT TO:<" + "a" * 300 + "@postbus.test>", "RCPT TO:<a@" + "b" * 300 + ".example>",
    "VRFY user%example.com@postbus.test", "VRFY <user@b\u00fccher.example>", "RSET",
    # found by the fuzzers: quoted brackets, blanks other than space and tab, huge SIZE
    "MAIL FROM:<s@example.org>", 'RCPT TO:<"a<b"@postbus.test>', 'RCPT TO:<"a>b"@postbus.test>',
    "RCPT TO:a\x1cb@postbus.test", "RCPT TO:<a\x1cb@postbus.test>", "RCPT TO:<a\x01b@postbus.test>",
    "RCPT TO:<a\u00a0b@postbus.test>", "RCPT TO:<a@postbus.test>\u00a0", "RSET",
    "MAIL FROM:<a@b.example> SIZE=99999999999999999999", "RSET",
    "MAIL FROM:<a@b.example> SIZE=9223372036854775807", "RSET",
    "MAIL FROM:<a@b.example> SIZE=9223372036854775808", "RSET",
    "MAIL FROM:<a@b.example> SIZE=9999999999", "RSET", "MAIL FROM:<@[127.0.0.1]>", "QUIT",
]


def probes(addresses: list[str]) -> list[Line]:
    lines: list[Line] = ["EHLO client.example"]
    for address in addresses:
        lines += ["MAIL FROM:<s@example.org>", f"RCPT TO:<{address}>", "RSET"]
    return [*lines, "QUIT"]


DIALOGUES: dict[str, tuple[str, list[Line]]] = {
    "relay_defer": ("defer", probes(RELAY_PROBES)),
    "relay_reject": ("reject", probes(RELAY_PROBES)),
    "local_users": ("users", probes(USER_PROBES)),
    "encoding": ("defer", ENCODING),
}


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request: pytest.FixtureRequest) -> Iterator[tuple[str, LivePostfix | None]]:
    with LivePostfix.running({**COMMON, **VARIANTS[request.param]}) as live:
        yield request.param, live


@pytest.fixture
async def ours(variant: tuple[str, LivePostfix | None]) -> AsyncIterator[int]:
    async def never(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        raise AssertionError("probe dialogues must not queue")

    server = SmtpServer(make_config(**{**COMMON, **VARIANTS[variant[0]]}), never, listener="probe")
    bound = await server.start("127.0.0.1", 0)
    yield bound[0][1]
    await server.stop(grace=1.0)


async def test_probes_get_postfix_replies(
    variant: tuple[str, LivePostfix | None], ours: int, caplog: pytest.LogCaptureFixture
) -> None:
    name, live = variant
    ran = 0
    for case, (setting, lines) in DIALOGUES.items():
        if setting != name:
            continue
        expected, got = await compare(RECORDING, case, lines, ours, live, caplog)
        replies = "\n".join(difflib.unified_diff(expected["replies"], got["replies"],
                                                 "postfix", "postbus", lineterm=""))
        assert got["replies"] == expected["replies"], f"{case}:\n{replies}"
        log = "\n".join(difflib.unified_diff(expected["log"], got["log"], "postfix", "postbus",
                                             lineterm=""))
        assert got["log"] == expected["log"], f"{case}:\n{log}"
        ran += 1
    assert ran


def test_the_issue_probes_are_refused_as_relaying() -> None:
    """The recorded answers themselves say what the security issue demands, spelled out."""
    defer = dict(zip(RELAY_PROBES, RECORDING.answers["relay_defer"]["replies"][3::3],
                     strict=True))
    reject = dict(zip(RELAY_PROBES, RECORDING.answers["relay_reject"]["replies"][3::3],
                      strict=True))
    for probe in ("user%example.com@postbus.test", "example.com!user@postbus.test",
                  "user%a%postbus.test@postbus.test"):
        assert defer[probe].endswith(f"454 4.7.1 <{probe}>: Relay access denied")
        assert reject[probe].endswith(f"554 5.7.1 <{probe}>: Relay access denied")
    assert defer['"user@example.com"@postbus.test'].endswith(
        "454 4.7.1 <user@example.com@postbus.test>: Relay access denied")
    assert defer["user@example.com@postbus.test"].endswith(
        "454 4.7.1 <user@example.com@postbus.test>: Relay access denied")
    assert defer["postmaster"].endswith("250 2.1.5 Ok")
