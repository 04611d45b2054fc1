"""smtpd_proxy_filter and the HOLD/FILTER/REDIRECT access actions, our smtpd
against a real Postfix: the same dialogues, the same replies and smtpd log lines.

Both proxy to the same before-queue filter (a real aiosmtpd server on
loopback, :class:`Filter` of test_smtpd_proxy_filter); where Postfix is not
installed the recorded answers in ``tests/data/postfix/smtpd_filter.json``
stand in.
"""

from __future__ import annotations

import difflib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from postbus.servers import free_port
from tests.integration.ingress.conftest import BASE_MAIN_CF, StartSmtpd
from tests.integration.ingress.test_smtpd_proxy_filter import Filter, FilterController
from tests.integration.postfix_dialogue import LivePostfix, compare
from tests.recorded import Recording

pytestmark = pytest.mark.integration


def normal_log(lines: list[str]) -> list[str]:
    lines = [re.sub(r"^[0-9A-Z]{6,}: ", "NOQUEUE: ", line) for line in lines]
    lines = [re.sub(r"texthash:/\S+/access", "texthash:ACCESS", line) for line in lines]
    return [re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line) for line in lines]


class _PortFree(Recording):
    """Recorded with the filter's port (it differs by run) masked."""

    def answer(self, case: str, live: Callable[[], Any] | None) -> Any:
        def masked() -> Any:
            assert live is not None
            value = live()
            if isinstance(value, list):
                return value
            return {"replies": normal_log(value["replies"]), "log": normal_log(value["log"])}

        return super().answer(case, None if live is None else masked)


RECORDING = _PortFree("smtpd_filter")
BASE = {**BASE_MAIN_CF, "mail_name": "Postbus", "mydestination": "postbus.test",
        "mynetworks": "127.0.0.0/8", "smtpd_proxy_timeout": "1s", "inet_protocols": "ipv4"}
ACCESS = """\
hold@postbus.test HOLD
hold2@postbus.test HOLD second
redirect@postbus.test REDIRECT boss@postbus.test
badredirect@postbus.test REDIRECT nobody
filter@postbus.test FILTER smtp:[127.0.0.1]:10025
badfilter@postbus.test FILTER nocolon
emptyfilter@postbus.test FILTER
bcc@postbus.test BCC archive@postbus.test
badbcc@postbus.test BCC nobody
"""
DATA = ["DATA", b"Subject: hello\r\n\r\nbody\r\n.\r\n"]

PROXY: dict[str, list[Any]] = {
    "proxy_accept": ["EHLO client.example", "MAIL FROM:<s@example.org>",
                     "RCPT TO:<a@postbus.test>", "RCPT TO:<no@postbus.test>", *DATA,
                     "<read one reply>", "QUIT"],
    "proxy_reject_content": ["EHLO client.example", "MAIL FROM:<s@example.org>",
                             "RCPT TO:<a@postbus.test>", "DATA",
                             b"Subject: spam\r\n\r\nbody\r\n.\r\n", "<read one reply>", "QUIT"],
    "proxy_stall": ["EHLO client.example", "MAIL FROM:<s@example.org>",
                    "RCPT TO:<a@postbus.test>", "DATA",
                    b"Subject: stall\r\n\r\nbody\r\n.\r\n", "<read one reply>", "QUIT"],
}
SPEED: dict[str, list[Any]] = {
    "speed_adjust": ["EHLO client.example", "MAIL FROM:<s@example.org>",
                     "RCPT TO:<a@postbus.test>", "RCPT TO:<no@postbus.test>", *DATA,
                     "<read one reply>", "MAIL FROM:<s@example.org>",
                     "RCPT TO:<a@postbus.test>", *DATA, "<read one reply>", "QUIT"],
}
ABSENT: dict[str, list[Any]] = {
    "proxy_absent": ["EHLO client.example", "MAIL FROM:<s@example.org>",
                     "RCPT TO:<a@postbus.test>", "DATA", "QUIT"],
}
ACTIONS: dict[str, list[Any]] = {
    "access_actions": ["EHLO client.example", "MAIL FROM:<s@example.org>",
                       "RCPT TO:<hold@postbus.test>", "RCPT TO:<hold2@postbus.test>",
                       "RCPT TO:<redirect@postbus.test>", "RCPT TO:<badredirect@postbus.test>",
                       "RCPT TO:<filter@postbus.test>", "RCPT TO:<badfilter@postbus.test>",
                       "RCPT TO:<emptyfilter@postbus.test>", "RCPT TO:<bcc@postbus.test>",
                       "RCPT TO:<badbcc@postbus.test>", "RSET",
                       "MAIL FROM:<s@example.org>", "RCPT TO:<a@postbus.test>",
                       "RCPT TO:<filter@postbus.test>", "QUIT"],
}


XFORWARD: dict[str, list[Any]] = {
    "xforward": ["EHLO filter.example", "XFORWARD", "XFORWARD NAME",
                 "XFORWARD NAME=bad_name!", "XFORWARD ADDR=999.1.2.3", "XFORWARD PORT=x1",
                 "XFORWARD SOURCE=ELSEWHERE", "XFORWARD COLOR=blue",
                 "XFORWARD NAME=mail.example ADDR=192.0.2.7 PORT=4567",
                 "XFORWARD HELO=outside.example PROTO=ESMTP SOURCE=REMOTE IDENT=ABC123",
                 "XFORWARD NAME=[UNAVAILABLE] ADDR=IPv6:2001:db8::1 HELO=+5Bx+5D",
                 "XFORWARD NAME=[UNAVAILABLE] ADDR=192.0.2.8 HELO=+5Bx+5D",
                 "MAIL FROM:<s@example.org>", "XFORWARD NAME=late.example",
                 "RCPT TO:<a@postbus.test>", *DATA, "<read one reply>", "QUIT"],
    "xforward_denied": ["EHLO filter.example", "XFORWARD NAME=mail.example", "QUIT"],
}


@pytest.fixture(scope="module")
def shared_filter() -> Iterator[tuple[Filter, int]]:
    flt = Filter()
    controller = FilterController(flt)
    controller.start()
    yield flt, controller.port
    controller.stop()


@pytest.fixture(scope="module")
def access_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="postbus-access-"))
    path.chmod(0o755)
    (path / "access").write_text(ACCESS)
    (path / "access").chmod(0o644)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _proxy(port: int) -> dict[str, str]:
    return {**BASE, "smtpd_proxy_filter": f"127.0.0.1:{port}"}


def _actions(path: Path) -> dict[str, str]:
    return {**BASE, "smtpd_recipient_restrictions":
            f"check_recipient_access texthash:{path}/access, permit_mynetworks, "
            "reject_unauth_destination"}


@pytest.fixture(scope="module")
def postfix_proxy(shared_filter: tuple[Filter, int]) -> Iterator[LivePostfix | None]:
    with LivePostfix.running(_proxy(shared_filter[1])) as pf:
        yield pf


@pytest.fixture(scope="module")
def absent_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def postfix_absent(absent_port: int) -> Iterator[LivePostfix | None]:
    with LivePostfix.running(_proxy(absent_port)) as pf:
        yield pf


@pytest.fixture(scope="module")
def postfix_actions(access_dir: Path) -> Iterator[LivePostfix | None]:
    with LivePostfix.running({**_actions(access_dir), "defer_transports": "smtp"}) as pf:
        yield pf


async def _compare(name: str, lines: list[Any], live: LivePostfix | None,
                   settings: dict[str, str], smtpd: StartSmtpd,
                   caplog: pytest.LogCaptureFixture) -> None:
    run = await smtpd(**settings)
    expected, got = await compare(RECORDING, name, lines, run.port, live, caplog)
    assert normal_log(got["replies"]) == expected["replies"]
    want, have = expected["log"], normal_log(got["log"])
    diff = "\n".join(difflib.unified_diff(want, have, "postfix", "postbus", lineterm=""))
    assert have == want, diff


@pytest.mark.parametrize("name", list(PROXY))
async def test_proxy_filter_as_postfix(
        name: str, postfix_proxy: LivePostfix | None, shared_filter: tuple[Filter, int],
        smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture) -> None:
    await _compare(name, PROXY[name], postfix_proxy, _proxy(shared_filter[1]), smtpd, caplog)


async def test_xforward_to_the_filter_as_postfix(
        postfix_proxy: LivePostfix | None, shared_filter: tuple[Filter, int],
        smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture) -> None:
    """The XFORWARD command(s) the filter gets, the client's port masked."""
    flt, port = shared_filter

    def told() -> list[str]:
        return [re.sub(r"PORT=\d+", "PORT=PORT", line) for line in flt.xforward]

    lines = PROXY["proxy_accept"]
    flt.xforward.clear()
    if postfix_proxy is not None:
        await postfix_proxy.dialogue(lines)
    theirs = RECORDING.answer("xforward_to_filter", None if postfix_proxy is None else told)
    flt.xforward.clear()
    run = await smtpd(**_proxy(port))
    await compare(RECORDING, "proxy_accept", lines, run.port, None, caplog)
    assert told() == theirs


@pytest.mark.parametrize("name", list(ABSENT))
async def test_absent_proxy_filter_as_postfix(
        name: str, postfix_absent: LivePostfix | None, absent_port: int,
        smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture) -> None:
    await _compare(name, ABSENT[name], postfix_absent, _proxy(absent_port), smtpd, caplog)


@pytest.mark.parametrize("name", list(ACTIONS))
async def test_access_actions_as_postfix(
        name: str, postfix_actions: LivePostfix | None, access_dir: Path,
        smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture) -> None:
    await _compare(name, ACTIONS[name], postfix_actions, _actions(access_dir), smtpd, caplog)


def _xforward() -> dict[str, str]:
    return {**BASE, "smtpd_authorized_xforward_hosts": "127.0.0.0/8"}


@pytest.fixture(scope="module")
def postfix_xforward() -> Iterator[LivePostfix | None]:
    with LivePostfix.running({**_xforward(), "defer_transports": "local"}) as pf:
        yield pf


@pytest.fixture(scope="module")
def postfix_plain() -> Iterator[LivePostfix | None]:
    with LivePostfix.running(BASE) as pf:
        yield pf


async def test_xforward_as_postfix(postfix_xforward: LivePostfix | None, smtpd: StartSmtpd,
                                   caplog: pytest.LogCaptureFixture) -> None:
    await _compare("xforward", XFORWARD["xforward"], postfix_xforward, _xforward(), smtpd,
                   caplog)


async def test_xforward_denied_as_postfix(postfix_plain: LivePostfix | None, smtpd: StartSmtpd,
                                          caplog: pytest.LogCaptureFixture) -> None:
    await _compare("xforward_denied", XFORWARD["xforward_denied"], postfix_plain, BASE, smtpd,
                   caplog)


@pytest.fixture(scope="module")
def postfix_speed(shared_filter: tuple[Filter, int]) -> Iterator[LivePostfix | None]:
    with LivePostfix.running(_speed(shared_filter[1])) as pf:
        yield pf


def _speed(port: int) -> dict[str, str]:
    return {**_proxy(port), "smtpd_proxy_options": "speed_adjust"}


async def test_speed_adjust_as_postfix(
        postfix_speed: LivePostfix | None, shared_filter: tuple[Filter, int],
        smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture) -> None:
    await _compare("speed_adjust", SPEED["speed_adjust"], postfix_speed,
                   _speed(shared_filter[1]), smtpd, caplog)
