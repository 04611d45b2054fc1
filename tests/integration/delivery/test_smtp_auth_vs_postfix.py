"""SMTP AUTH as a client, compared with Postfix 3.7's smtp client (Cyrus SASL): a private
Postfix relays to our smtpd with AUTH (clear text) under the same smtp_sasl_* settings
as delivery-smtp; the deferral text and code, or the mechanism used, must be the same.
Our smtpd offers PLAIN and LOGIN from its own store, or, behind a private Dovecot,
SCRAM-SHA-256, SCRAM-SHA-1 and CRAM-MD5 as well (where Dovecot is installed).
Recorded in ``tests/data/postfix/smtp_sasl_client.json``."""

from __future__ import annotations

import asyncio
import logging
import re
import smtplib
from typing import Any

import pytest

from delivery_smtp.__main__ import main
from postbus.servers import free_port, wait_port
from tests import postfix_instance
from tests.dovecot_instance import DOVECOT, Dovecot
from tests.integration.ingress.conftest import running_servers
from tests.recorded import Recording

from .conftest import Bus, RunAgent
from .peers import wait_log
from .test_smtp_auth import RELAY_CF, saslpasswd  # noqa: F401 (the fixture)

pytestmark = pytest.mark.integration

RECORDING = Recording("smtp_sasl_client")
MESSAGE = (b"From: carol@client.test\r\nTo: bob@remote.test\r\nSubject: s\r\n"
           b"Message-ID: <sasl@client.test>\r\nDate: Mon, 30 Nov 2026 05:00:00 +0000\r\n\r\nhi\r\n")

CASES = {
    "default options in clear text": {"password": "s3cret"},
    "plaintext allowed, wrong password": {"password": "wrong",
                                          "smtp_sasl_security_options": "noanonymous"},
    "plaintext allowed": {"password": "s3cret", "smtp_sasl_security_options": "noanonymous"},
    "plaintext allowed, LOGIN only": {"password": "s3cret",
                                      "smtp_sasl_security_options": "noanonymous",
                                      "smtp_sasl_mechanism_filter": "login"},
}
DOVECOT_CASES = {
    "dovecot, default options": {"password": "s3cret"},
    "dovecot, plaintext allowed": {"password": "s3cret",
                                   "smtp_sasl_security_options": "noanonymous"},
    "dovecot, CRAM-MD5 only": {"password": "s3cret", "smtp_sasl_mechanism_filter": "cram-md5"},
    "dovecot, SCRAM-SHA-256 only": {"password": "s3cret",
                                    "smtp_sasl_mechanism_filter": "scram-sha-256"},
    "dovecot, wrong password": {"password": "wrong"},
}
MECHANISMS = "scram-sha-256 scram-sha-1 cram-md5 plain login"


def _settings(case: str, port: int) -> dict[str, str]:
    cf = dict(CASES.get(case) or DOVECOT_CASES[case])
    password = cf.pop("password")
    return {"smtp_sasl_auth_enable": "yes",
            "smtp_sasl_password_maps": f"inline:{{ {{[127.0.0.1]:{port} = alice:{password}}} }}",
            **cf}


class _Methods(logging.Handler):
    """The sasl_method= of our smtpd's log lines."""

    def __init__(self) -> None:
        super().__init__()
        self.methods: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if found := re.search(r"sasl_method=([\w-]+)", record.getMessage()):
            self.methods.append(found.group(1))


def _postfix(case: str, port: int, methods: _Methods) -> dict[str, Any]:
    """Postfix's outcome: status, dsn and reason of its log line, and the mechanism used."""
    pf_port = free_port()
    instance = postfix_instance.PostfixInstance(pf_port, {
        "myhostname": "mx.postbus.test", "relayhost": f"[127.0.0.1]:{port}",
        **_settings(case, port)})
    instance.start()
    try:
        wait_port("127.0.0.1", pf_port, 20)
        with smtplib.SMTP("127.0.0.1", pf_port, timeout=30) as client:
            client.ehlo("client.example")
            client.sendmail("carol@client.test", ["bob@remote.test"], MESSAGE)
        line = wait_log(instance.maillog, r"dsn=\S+, status=\w+ \(.*\)$", 60)
    finally:
        instance.stop()
    found = re.search(r"dsn=(\S+), status=(\w+) \((.*)\)$", line)
    assert found is not None
    dsn, status, reason = found.groups()
    return {"status": status, "dsn": dsn, "reason": reason if status != "sent" else "",
            "methods": methods.methods}


@pytest.mark.usefixtures("saslpasswd")
@pytest.mark.parametrize("case", list(CASES))
async def test_as_postfix(case: str, bus: Bus, run_agent: RunAgent) -> None:
    await _compare(case, bus, run_agent, RELAY_CF)


@pytest.mark.skipif(DOVECOT is None, reason="dovecot (Debian's dovecot-core) is not installed")
@pytest.mark.parametrize("case", list(DOVECOT_CASES))
async def test_scram_and_cram_md5_as_postfix(case: str, bus: Bus, run_agent: RunAgent) -> None:
    dovecot = Dovecot({"alice": "s3cret"}, mechanisms=MECHANISMS).start()
    try:
        await _compare(case, bus, run_agent, {
            **RELAY_CF, "smtpd_sasl_type": "dovecot",
            "smtpd_sasl_path": f"inet:127.0.0.1:{dovecot.port}"})
    finally:
        dovecot.stop()


async def _compare(case: str, bus: Bus, run_agent: RunAgent, smtpd_cf: dict[str, str]) -> None:
    methods = _Methods()
    smtpd_log = logging.getLogger("postbus.smtpd")
    level = smtpd_log.level
    smtpd_log.setLevel(logging.INFO)
    smtpd_log.addHandler(methods)
    try:
        async with running_servers(bus.store) as smtpd:
            run = await smtpd(**smtpd_cf)
            live = (lambda: _postfix(case, run.port, methods)) \
                if postfix_instance.available() else None
            postfix = await asyncio.to_thread(RECORDING.answer, case, live)
            methods.methods.clear()
            await run_agent(main, "smtp", {"smtp_connection_cache_on_demand": "no",
                                           **_settings(case, run.port)})
            job = await bus.submit("smtp", f"[127.0.0.1]:{run.port}", ["bob@remote.test"],
                                   content=MESSAGE, sender="carol@client.test")
            [result] = (await bus.status(job.queue_id)).results
            await run_agent.stop()
    finally:
        smtpd_log.removeHandler(methods)
        smtpd_log.setLevel(level)
    reason = result.reason if result.status != "sent" else ""
    assert {"status": result.status, "dsn": result.dsn, "reason": reason,
            "methods": methods.methods} == postfix
