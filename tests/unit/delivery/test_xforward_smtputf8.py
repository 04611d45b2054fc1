"""The client attributes and the SMTPUTF8 request a delivery job carries, and what
delivery-smtp makes of them: XFORWARD lines (smtp_proto.c) and the SMTPUTF8 decision
(DELIVERY_REQUIRES_SMTPUTF8())."""

from __future__ import annotations

import orjson

from delivery_smtp.proto import smtputf8
from delivery_smtp.xforward import commands
from postbus.cli.sendmail import wants_smtputf8
from postbus.config.loader import Config
from postbus.queue.entry import DeliveryJob, QueueEntry, Recipient

ALL = "NAME ADDR PROTO HELO SOURCE PORT IDENT"


def _job(sender: str = "a@x.test", rcpt: str = "b@y.test", **fields: object) -> DeliveryJob:
    return DeliveryJob("QID", "smtp", "[127.0.0.1]:10024", sender, [Recipient(rcpt)], [0], 1,
                       0.0, 10, 1, **fields)  # type: ignore[arg-type]


def test_unset_fields_are_not_written_so_older_agents_read_the_job() -> None:
    data = orjson.loads(_job().encode())
    assert not {"client_name", "client_addr", "client_port", "helo", "protocol", "log_ident",
                "rewrite_context", "smtputf8"} & set(data)
    job = _job(client_name="mx.c.test", client_addr="192.0.2.1", client_port="2525",
               helo="c.test", protocol="ESMTP", log_ident="QID", rewrite_context="remote",
               smtputf8=True)
    assert DeliveryJob.decode(job.encode()) == job
    entry = QueueEntry("QID", "a@x.test", [Recipient("b@y.test")])
    assert not {"client_port", "log_ident", "rewrite_context"} & set(orjson.loads(entry.encode()))


def test_xforward_lines_as_smtp_proto_c_builds_them() -> None:
    job = _job(client_name="mx.c.test", client_addr="192.0.2.1", client_port="2525",
               helo="c.test", protocol="ESMTP", log_ident="QID", rewrite_context="remote")
    assert commands(ALL, job) == [
        (0, b"XFORWARD NAME=mx.c.test ADDR=192.0.2.1 PORT=2525\r\n"),
        (1, b"XFORWARD PROTO=ESMTP HELO=c.test IDENT=QID SOURCE=REMOTE\r\n"),
    ]
    # only what the server names (in any case), and only the second command when the
    # first would be empty
    assert commands("proto helo", job) == [(1, b"XFORWARD PROTO=ESMTP HELO=c.test\r\n")]
    unknown = _job(client_name="unknown", client_addr="unknown", client_port="unknown",
                   protocol="unknown", helo="h=1 x")
    assert commands(ALL, unknown) == [(1, b"XFORWARD HELO=h+3D1+20x SOURCE=LOCAL\r\n")]
    # a local submission (sendmail, a bounce) has no client
    local = _job(client_name="localhost", client_addr="127.0.0.1", protocol="sendmail")
    assert commands(ALL, local) == [(1, b"XFORWARD SOURCE=LOCAL\r\n")]
    assert commands("", job) == []


def test_smtputf8_requested_and_required_as_postfix_decides() -> None:
    ascii_body = b"Subject: hi\r\n\r\nbody \xc3\xa9\r\n"
    utf8_header = b"Subject: caf\xc3\xa9\r\n\r\nbody\r\n"
    # not requested: nothing, whatever the headers say
    assert smtputf8(_job(), utf8_header) == (False, False)
    # requested, all ASCII envelope and headers: SMTPUTF8 is sent, not required
    assert smtputf8(_job(smtputf8=True), ascii_body) == (True, False)
    # requested and a UTF-8 header: required (the body does not count)
    assert smtputf8(_job(smtputf8=True), utf8_header) == (True, True)
    # any 8-bit header does (cleanup_out.c sets SMTPUTF8_FLAG_HEADER without a UTF-8 check)
    assert smtputf8(_job(smtputf8=True), b"Subject: caf\xe9\r\n\r\n") == (True, True)
    # a UTF-8 envelope: requested and required
    assert smtputf8(_job(rcpt="j\u00f8rn@y.test"), ascii_body) == (True, True)


def test_sendmail_autodetects_smtputf8_as_postfix_cleanup() -> None:
    """smtputf8_autodetect_classes (default sendmail, verify) with smtputf8_enable."""
    default = Config.from_text("compatibility_level = 3.6\n")
    header = b"Subject: caf\xc3\xa9\r\n\r\nbody\r\n"
    assert wants_smtputf8(default, "a@x.test", ["b@y.test"], header)
    assert wants_smtputf8(default, "a@x.test", ["j\u00f8rn@y.test"], b"Subject: x\r\n\r\n")
    body = b"Subject: x\r\n\r\ncaf\xc3\xa9\r\n"  # the body does not count
    assert not wants_smtputf8(default, "a@x.test", ["b@y.test"], body)
    off = Config.from_text("compatibility_level = 3.6\nsmtputf8_autodetect_classes = verify\n")
    assert not wants_smtputf8(off, "a@x.test", ["b@y.test"], header)
    disabled = Config.from_text("compatibility_level = 3.6\nsmtputf8_enable = no\n")
    assert not wants_smtputf8(disabled, "a@x.test", ["b@y.test"], header)
