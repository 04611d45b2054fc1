"""Restriction stages and policy delegation, our smtpd against a real Postfix.

Both servers ask a policy server of their own (:class:`PolicyRecorder`, the
same script of answers) and run the same dialogues: the replies, the smtpd
log lines and the policy requests (the attributes and their stable values)
must be the same.  Where Postfix is not installed the recorded answers in
``tests/data/postfix/smtpd_stages.json`` stand in.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from postbus.servers import free_port
from tests.integration.ingress.conftest import BASE_MAIN_CF, StartSmtpd
from tests.integration.policy_recorder import PolicyRecorder, recorder_thread
from tests.integration.postfix_dialogue import READ, Line, LivePostfix, compare
from tests.recorded import LogMasked

pytestmark = pytest.mark.integration



RECORDING = LogMasked("smtpd_stages", lambda log: normal_log(log))  # defined below

#: What the policy server answers at RCPT, by the recipient's local part.
RCPT_ANSWERS = {
    "ok": "OK", "dunno": "DUNNO", "rej": "REJECT", "rejtxt": "REJECT not here",
    "rejdsn": "REJECT 5.1.1 no such user", "def": "DEFER", "dip": "DEFER_IF_PERMIT greylisted",
    "dir": "DEFER_IF_REJECT maybe", "n550": "550 5.7.0 go away", "n450": "450 4.2.0 later",
    "n421": "421 closing", "garbage": "frobnicate", "warn": "WARN careful", "info": "INFO noted",
    "cls": "mine", "rest": "reject_unauth_destination", "lookup": "hash:/etc/x",
    "num": "12345", "empty": "", "prep": "PREPEND X-Policy: yes", "prepbad": "PREPEND nohdr",
    "relay": "RELAY", "lower": "reject",
}


def answer(request: dict[str, str]) -> str | None:
    state = request.get("protocol_state")
    local = request.get("sender", "").partition("@")[0]
    if state == "DATA":
        return "REJECT not now" if local == "datarej" else "DUNNO"
    if state == "END-OF-MESSAGE":
        return "554 5.7.1 content refused" if local == "eodrej" else "DUNNO"
    if state == "RCPT":
        rcpt = request.get("recipient", "").partition("@")[0]
        if rcpt == "noaction":
            return None
        return RCPT_ANSWERS.get(rcpt, "DUNNO")
    if local == "mailrej" or request.get("helo_name") == "helorej":
        return "REJECT stage says no"
    if request.get("helo_name") == "prepme" and state in ("HELO", "EHLO"):
        return "PREPEND X-Test: yes"
    if request.get("etrn_domain") == "discard.example":
        return "DISCARD"
    if local == "dipsender" and state == "MAIL":
        return "DEFER_IF_PERMIT sender later"
    return "DUNNO"


def settings(port: int) -> dict[str, str]:
    policy = f"check_policy_service inet:127.0.0.1:{port}"
    return {
        **BASE_MAIN_CF,
        "mail_name": "Postbus",
        "mydestination": "localhost",
        "mynetworks": "127.0.0.0/8",
        "smtpd_hard_error_limit": "100",
        "smtpd_soft_error_limit": "100",
        "smtpd_restriction_classes": "mine",
        "mine": "check_sender_access inline:{{s@example.org=REJECT class says no}}",
        "smtpd_recipient_restrictions": (
            "check_recipient_access inline:{{warnme@localhost=warn_if_reject, reject}, "
            "{direj@localhost=defer_if_reject, reject}, {dip2@localhost=defer_if_permit}, "
            "{dirok@localhost=defer_if_reject, permit}}, "
            f"{policy}, permit_mynetworks, reject"),
        "smtpd_data_restrictions": f"reject_unauth_pipelining, {policy}",
        "smtpd_end_of_data_restrictions": policy,
        "smtpd_policy_service_retry_delay": "1s",
    }


#: Nothing listens there: a policy server that is down.
DOWN = free_port()


def delayed(port: int) -> dict[str, str]:
    """smtpd_delay_reject = no: each stage at its own command."""
    policy = f"check_policy_service inet:127.0.0.1:{port}"
    return {
        **settings(port),
        "smtpd_delay_reject": "no",
        "smtpd_client_restrictions": f"{policy}, check_client_access inline:{{127.0.0.2=REJECT}}",
        "smtpd_helo_restrictions": policy,
        "smtpd_sender_restrictions": policy,
        "smtpd_etrn_restrictions": policy,
        "smtpd_restriction_classes": "mine, down",
        "down": f"check_policy_service inet:127.0.0.1:{DOWN}",
        "smtpd_recipient_restrictions": f"check_recipient_access inline:{{down@localhost=down}}, "
                                        f"{policy}, permit_mynetworks, reject",
    }


def unlisted(port: int) -> dict[str, str]:
    """Senders must exist too: smtpd_reject_unlisted_sender and reject_unlisted_sender."""
    return {**settings(port), "local_recipient_maps": "proxy:unix:passwd.byname",
            "smtpd_reject_unlisted_sender": "yes",
            "smtpd_recipient_restrictions": "permit_mynetworks, reject"}


def refused(port: int) -> dict[str, str]:
    """smtpd_delay_reject = no and a client list that rejects us at connect."""
    return {**delayed(port), "smtpd_client_restrictions":
            "check_client_access inline:{{127.0.0.1=REJECT no thanks}}"}


MSG = b"Subject: x\r\n\r\nbody\r\n"

DIALOGUES: dict[str, list[Line]] = {
    "rcpt_actions": [
        "EHLO c", "MAIL FROM:<s@example.org> SIZE=100",
        *[f"RCPT TO:<{u}@localhost>" for u in RCPT_ANSWERS if u != "n421"],
        "RCPT TO:<noaction@localhost>", "RCPT TO:<warnme@localhost>", "RCPT TO:<direj@localhost>",
        "RCPT TO:<dip2@localhost>", "RCPT TO:<dirok@localhost>", "RSET", "QUIT",
    ],
    "rcpt_421": [
        "EHLO c", "MAIL FROM:<s@example.org>", "RCPT TO:<n421@localhost>", "NOOP", "QUIT",
    ],
    "data_and_eod_accept": [
        "EHLO c", "MAIL FROM:<a@example.org>", "RCPT TO:<ok@localhost>",
        "RCPT TO:<dunno@localhost>", "DATA", MSG, ".", "QUIT",
    ],
    "data_reject": [
        "EHLO c", "MAIL FROM:<datarej@example.org>", "RCPT TO:<ok@localhost>", "DATA",
        "RSET", "MAIL FROM:<datarej@example.org>", "RCPT TO:<ok@localhost>",
        "RCPT TO:<dunno@localhost>", "DATA", "QUIT",
    ],
    "eod_reject": [
        # Postfix 3.7 keeps the transaction after an end-of-data reject (fixed later): RSET
        "EHLO c", "MAIL FROM:<eodrej@example.org>", "RCPT TO:<ok@localhost>", "DATA", MSG, ".",
        "RSET", "MAIL FROM:<eodrej@example.org>", "RCPT TO:<ok@localhost>",
        "RCPT TO:<warn@localhost>", "DATA", MSG, ".", "QUIT",
    ],
    "bdat_data_reject": [
        "EHLO c", "MAIL FROM:<datarej@example.org>", "RCPT TO:<ok@localhost>",
        b"BDAT 4\r\nabcd", READ, b"BDAT 2 LAST\r\nxy", READ, "QUIT",
    ],
    "data_after_improper_pipelining": [
        b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n", READ, READ, "RCPT TO:<ok@localhost>", "DATA",
        "QUIT",
    ],
    "bdat_eod_reject": [
        "EHLO c", "MAIL FROM:<eodrej@example.org>", "RCPT TO:<ok@localhost>",
        b"BDAT " + str(len(MSG)).encode() + b" LAST\r\n" + MSG, READ, "QUIT",
    ],
}

DELAYED: dict[str, list[Line]] = {
    "delayed_stages": [
        "HELO helorej", "EHLO prepme", "EHLO good", "ETRN example.com", "ETRN discard.example",
        "MAIL FROM:<mailrej@example.org>",
        "MAIL FROM:<a@example.org>", "RCPT TO:<rej@localhost>", "RCPT TO:<dip@localhost>",
        "RCPT TO:<ok@localhost>", "RCPT TO:<down@localhost>", "RSET",
        "MAIL FROM:<dipsender@example.org>", "RCPT TO:<ok@localhost>", "RCPT TO:<rej@localhost>",
        "QUIT",
    ],
}

UNLISTED: dict[str, list[Line]] = {
    "unlisted_sender": [
        "EHLO c", "MAIL FROM:<nosuch@localhost>", "RCPT TO:<root@localhost>", "RSET",
        "MAIL FROM:<root@localhost>", "RCPT TO:<nosuch@localhost>", "RCPT TO:<root@localhost>",
        "RSET", "MAIL FROM:<>", "RCPT TO:<root@localhost>", "QUIT",
    ],
}

REFUSED: dict[str, list[Line]] = {
    "refused_at_connect": ["EHLO c", "MAIL FROM:<a@example.org>", "NOOP", "QUIT"],
}


def normal_requests(requests: list[dict[str, str]]) -> list[dict[str, str]]:
    """The stable part of each request: ports, instance and queue ID vary by run."""
    out = []
    for req in requests:
        req = dict(req)
        for key in ("client_port", "server_port"):
            if req.get(key):
                req[key] = "PORT"
        for key in ("instance", "queue_id"):
            if req.get(key):
                req[key] = key.upper()
        out.append(req)
    return out


def normal_log(lines: list[str]) -> list[str]:
    lines = [re.sub(r"^[0-9A-Z]{6,}: ", "NOQUEUE: ", line) for line in lines]
    return [re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line) for line in lines]


@pytest.fixture(scope="module")
def their_policy() -> Iterator[PolicyRecorder]:
    with recorder_thread(answer) as recorder:
        yield recorder


@pytest.fixture(scope="module")
def postfix(their_policy: PolicyRecorder) -> Iterator[LivePostfix | None]:
    with LivePostfix.running({**settings(their_policy.port), "defer_transports": "local"}) as pf:
        yield pf


@pytest.fixture(scope="module")
def postfix_delayed(their_policy: PolicyRecorder) -> Iterator[LivePostfix | None]:
    with LivePostfix.running({**delayed(their_policy.port), "defer_transports": "local"}) as pf:
        yield pf


@pytest.fixture(scope="module")
def postfix_unlisted(their_policy: PolicyRecorder) -> Iterator[LivePostfix | None]:
    with LivePostfix.running({**unlisted(their_policy.port), "defer_transports": "local"}) as pf:
        yield pf


@pytest.fixture(scope="module")
def postfix_refused(their_policy: PolicyRecorder) -> Iterator[LivePostfix | None]:
    with LivePostfix.running({**refused(their_policy.port), "defer_transports": "local"}) as pf:
        yield pf


async def _compare(
    name: str, lines: list[Line], live: LivePostfix | None, theirs: PolicyRecorder,
    smtpd: StartSmtpd, config: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    ours = await PolicyRecorder(answer).start()
    try:
        run = await smtpd(**{k: v for k, v in config(ours.port).items() if k not in BASE_MAIN_CF
                             or BASE_MAIN_CF[k] != v})
        theirs.requests.clear()
        expected, got = await compare(RECORDING, name, lines, run.port, live, caplog)
        their_requests = RECORDING.answer(
            f"{name}:requests",
            None if live is None else lambda: normal_requests(theirs.requests))
        assert got["replies"] == expected["replies"]
        want, have = normal_log(expected["log"]), normal_log(got["log"])
        diff = "\n".join(difflib.unified_diff(want, have, "postfix", "postbus", lineterm=""))
        assert have == want, diff
        sent = normal_requests(ours.requests)
        diff = "\n".join(difflib.unified_diff(
            [json.dumps(q, sort_keys=True) for q in their_requests],
            [json.dumps(q, sort_keys=True) for q in sent], "postfix", "postbus", lineterm=""))
        assert sent == their_requests, diff
    finally:
        await ours.stop()


@pytest.mark.parametrize("name", list(DIALOGUES))
async def test_stages_and_policy_answers_as_postfix(
    name: str, postfix: LivePostfix | None, their_policy: PolicyRecorder, smtpd: StartSmtpd,
    caplog: pytest.LogCaptureFixture,
) -> None:
    await _compare(name, DIALOGUES[name], postfix, their_policy, smtpd, settings, caplog)


@pytest.mark.parametrize("name", list(DELAYED))
async def test_delay_reject_no_as_postfix(
    name: str, postfix_delayed: LivePostfix | None, their_policy: PolicyRecorder,
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture,
) -> None:
    await _compare(name, DELAYED[name], postfix_delayed, their_policy, smtpd, delayed, caplog)


@pytest.mark.parametrize("name", list(REFUSED))
async def test_rejected_at_connect_as_postfix(
    name: str, postfix_refused: LivePostfix | None, their_policy: PolicyRecorder,
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture,
) -> None:
    await _compare(name, REFUSED[name], postfix_refused, their_policy, smtpd, refused, caplog)


@pytest.mark.parametrize("name", list(UNLISTED))
async def test_unlisted_sender_as_postfix(
    name: str, postfix_unlisted: LivePostfix | None, their_policy: PolicyRecorder,
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture,
) -> None:
    await _compare(name, UNLISTED[name], postfix_unlisted, their_policy, smtpd, unlisted, caplog)
