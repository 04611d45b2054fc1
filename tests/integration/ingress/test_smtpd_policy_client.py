"""check_policy_service against real policy servers on real sockets: Debian's postgrey,
and a recording server (:mod:`tests.integration.policy_recorder`) for what the
client does when a server is down, slow, closes connections or answers actions
that change the message."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from postbus.servers import free_port, wait_port
from tests.integration.ingress.conftest import Running, StartSmtpd
from tests.integration.policy_recorder import PolicyRecorder

pytestmark = pytest.mark.integration

PERMIT_LOCAL = "permit_mynetworks, reject"


def policy(spec: str) -> dict[str, str]:
    return {"mynetworks": "127.0.0.0/8",
            "smtpd_recipient_restrictions": f"check_policy_service {spec}, {PERMIT_LOCAL}"}


async def rcpt(run: Running, *rcpts: str, sender: str = "s@example.org") -> list[str]:
    client = await run.client()
    await client.cmd("EHLO client.example")
    await client.cmd(f"MAIL FROM:<{sender}>")
    replies = [await client.cmd(f"RCPT TO:<{r}>") for r in rcpts]
    await client.cmd("QUIT")
    await client.close()
    return replies


async def wait_for(check: object, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture
def postgrey(tmp_path: Path) -> Iterator[int]:
    exe = shutil.which("postgrey") or ("/usr/sbin/postgrey"
                                       if os.path.exists("/usr/sbin/postgrey") else None)
    if exe is None:
        pytest.skip("postgrey not installed (Debian package postgrey)")
    port = free_port()
    dbdir = tmp_path / "postgrey"
    dbdir.mkdir()
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    proc = subprocess.Popen(
        [exe, f"--inet=127.0.0.1:{port}", f"--dbdir={dbdir}", "--delay=2", f"--user={user}",
         "--hostname=postbus.test"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port("127.0.0.1", port, 30)
        yield port
    finally:
        proc.terminate()  # Net::Server waits for its open connections: then kill it
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def test_postgrey_defers_then_accepts_after_its_delay(
    smtpd: StartSmtpd, postgrey: int
) -> None:
    run = await smtpd(**policy(f"inet:127.0.0.1:{postgrey}"))
    started = time.monotonic()
    first = await rcpt(run, "user@postbus.test")
    assert first == ["450 4.2.0 <user@postbus.test>: Recipient address rejected: Greylisted, "
                     "see http://postgrey.schweikert.ch/help/postbus.test.html"]
    while True:  # the client retries, as a sending MTA would
        reply = (await rcpt(run, "user@postbus.test"))[0]
        if reply.startswith("250"):
            break
        assert reply == first[0]
        assert time.monotonic() - started < 30, "postgrey never let the mail through"
        await asyncio.sleep(0.5)
    assert time.monotonic() - started >= 1  # not before postgrey's delay (whole seconds)
    assert reply == "250 2.1.5 Ok"


async def test_server_down_gives_the_default_action_after_the_retries(
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    run = await smtpd(**policy(f"inet:127.0.0.1:{port}"),
                      smtpd_policy_service_retry_delay="1s")
    started = time.monotonic()
    assert await rcpt(run, "a@postbus.test") == [
        "451 4.3.5 <a@postbus.test>: Recipient address rejected: Server configuration problem"]
    assert 1 <= time.monotonic() - started < 10
    assert f"problem talking to server 127.0.0.1:{port}: Connection refused" in caplog.text
    # a per-server override, as Postfix allows
    run = await smtpd(**policy(f"{{ inet:127.0.0.1:{port}, default_action=DUNNO, try_limit=1 }}"))
    assert await rcpt(run, "a@postbus.test") == ["250 2.1.5 Ok"]


async def test_a_server_that_never_answers_times_out(
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture
) -> None:
    stall = await PolicyRecorder(lambda req: "<stall>").start()
    try:
        run = await smtpd(**policy(f"inet:127.0.0.1:{stall.port}"),
                          smtpd_policy_service_timeout="1s", smtpd_policy_service_try_limit="1",
                          smtpd_policy_service_default_action="DEFER_IF_PERMIT try later")
        started = time.monotonic()
        assert await rcpt(run, "a@postbus.test") == [
            "450 4.7.1 <a@postbus.test>: Recipient address rejected: try later"]
        assert time.monotonic() - started < 5
        assert (f"problem talking to server 127.0.0.1:{stall.port}: Connection timed out"
                in caplog.text)
    finally:
        await stall.stop()


async def test_connections_are_reused_limited_and_closed_when_idle(smtpd: StartSmtpd) -> None:
    server = await PolicyRecorder(lambda req: "DUNNO").start()
    try:
        run = await smtpd(**policy(f"inet:127.0.0.1:{server.port}"),
                          smtpd_policy_service_max_idle="1s")
        assert await rcpt(run, *[f"u{i}@postbus.test" for i in range(5)]) == ["250 2.1.5 Ok"] * 5
        assert len(await rcpt(run, "v@postbus.test")) == 1
        assert (len(server.requests), server.connections) == (6, 1)
        await wait_for(lambda: server.closed == 1)  # max_idle: the client hangs up
        run = await smtpd(**policy(f"inet:127.0.0.1:{server.port}"),
                          smtpd_policy_service_request_limit="2")
        await rcpt(run, *[f"u{i}@postbus.test" for i in range(5)])
        assert server.connections == 1 + 3  # 2 + 2 + 1 requests
    finally:
        await server.stop()


async def test_a_server_that_closes_its_idle_connection_is_reconnected(
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture
) -> None:
    server = await PolicyRecorder(lambda req: "DUNNO").start()
    try:
        run = await smtpd(**policy(f"inet:127.0.0.1:{server.port}"))
        assert await rcpt(run, "a@postbus.test") == ["250 2.1.5 Ok"]
        for writer in server._writers:  # the server restarts, say
            writer.close()
        assert await rcpt(run, "b@postbus.test") == ["250 2.1.5 Ok"]
        assert server.connections == 2
        assert "problem talking" not in caplog.text
    finally:
        await server.stop()


async def test_unix_socket_and_policy_context(smtpd: StartSmtpd, tmp_path: Path) -> None:
    path = tmp_path / "policy.sock"
    server = await PolicyRecorder(lambda req: "REJECT not you").start(unix=path)
    try:
        run = await smtpd(**policy(f"unix:{path}"),
                          smtpd_policy_service_policy_context="submission")
        assert await rcpt(run, "a@postbus.test", sender="") == [
            "554 5.7.1 <a@postbus.test>: Recipient address rejected: not you"]
        req = server.requests[0]
        assert (req["policy_context"], req["sender"], req["recipient"],
                req["protocol_state"]) == ("submission", "", "a@postbus.test", "RCPT")
    finally:
        await server.stop()


async def test_discard_prepend_hold_filter_redirect(
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "postbus.smtpd")
    answers = {"discard": "DISCARD spam", "prepend": "PREPEND X-Policy: seen",
               "hold": "HOLD", "redirect": "REDIRECT x@y.example",
               "filter": "FILTER scan:[127.0.0.1]:10025", "bcc": "BCC c@y.example"}
    server = await PolicyRecorder(
        lambda req: answers.get(req["recipient"].partition("@")[0], "DUNNO")).start()
    try:
        run = await smtpd(**policy(f"inet:127.0.0.1:{server.port}"))
        client = await run.client()
        await client.cmd("EHLO c")
        await client.cmd("MAIL FROM:<s@example.org>")
        assert await client.cmd("RCPT TO:<bcc@postbus.test>") == "250 2.1.5 Ok"
        assert await client.cmd("RCPT TO:<hold@postbus.test>") == "250 2.1.5 Ok"
        assert await client.cmd("RCPT TO:<redirect@postbus.test>") == "250 2.1.5 Ok"
        assert await client.cmd("RCPT TO:<filter@postbus.test>") == "250 2.1.5 Ok"
        assert await client.cmd("RCPT TO:<prepend@postbus.test>") == "250 2.1.5 Ok"
        assert await client.cmd("DATA") == "354 End data with <CR><LF>.<CR><LF>"
        await client.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
        reply = await client.reply()
        qid = reply.rpartition(" ")[2]
        got = await run.store.queue.get(qid)
        assert got is not None, reply
        # HOLD, FILTER and REDIRECT apply to the whole message
        assert got[0].queue == "hold" and got[0].filter == "scan:[127.0.0.1]:10025"
        assert {x.address for x in got[0].recipients} == {"x@y.example"}
        tail = "from=<s@example.org> to=<{0}@postbus.test> proto=ESMTP helo=<c>"
        # as Postfix: the queue ID exists once the first recipient is accepted
        for ident, action, text in (
                ("NOQUEUE", "bcc", "<bcc@postbus.test>: Recipient address triggers "
                                   "BCC c@y.example"),
                (qid, "hold", "<hold@postbus.test>: Recipient address triggers "
                              "HOLD action"),
                (qid, "redirect", "<redirect@postbus.test>: Recipient address "
                                  "triggers REDIRECT x@y.example"),
                (qid, "filter", "<filter@postbus.test>: Recipient address triggers "
                                "FILTER scan:[127.0.0.1]:10025")):
            assert (f"{ident}: {action}: RCPT from unknown[127.0.0.1]: {text}; "
                    + tail.format(action)) in caplog.messages
        content = await run.store.queue.content(qid, got[0].chunks)
        received, _, rest = content.partition(b"X-Policy: seen\r\n")
        assert received.startswith(b"Received: ") and rest.startswith(b"Subject: x\r\n")
        # DISCARD: the client is told it was queued; nothing is
        await client.cmd("MAIL FROM:<s@example.org>")
        assert await client.cmd("RCPT TO:<discard@postbus.test>") == "250 2.1.5 Ok"
        assert await client.cmd("RCPT TO:<other@postbus.test>") == "250 2.1.5 Ok"
        await client.cmd("DATA")
        await client.send(b"Subject: y\r\n\r\nbody\r\n.\r\n")
        reply = await client.reply()
        assert reply.startswith("250 2.0.0 Ok: queued as ")
        assert await run.store.queue.get(reply.rpartition(" ")[2]) is None
        assert len(server.requests) == 6  # none after the DISCARD: the message is decided
        await client.cmd("QUIT")
        assert ("NOQUEUE: discard: RCPT from unknown[127.0.0.1]: <discard@postbus.test>: "
                "Recipient address spam; from=<s@example.org> to=<discard@postbus.test>"
                in caplog.text)
    finally:
        await server.stop()




async def test_garbage_from_a_policy_server_gives_the_default_action(
    smtpd: StartSmtpd, caplog: pytest.LogCaptureFixture
) -> None:
    answers = {"noequals": "<raw>nonsense\n\n", "long": "<raw>action=" + "x" * 10000 + "\n\n",
               "close": "<close>"}
    server = await PolicyRecorder(
        lambda req: answers[req["recipient"].partition("@")[0]]).start()
    try:
        run = await smtpd(**policy(f"inet:127.0.0.1:{server.port}"),
                          smtpd_policy_service_default_action="DEFER no policy",
                          smtpd_policy_service_retry_delay="1s")
        deferred = "450 4.7.1 <{}@postbus.test>: Recipient address rejected: no policy"
        for name in answers:
            assert await rcpt(run, f"{name}@postbus.test") == [deferred.format(name)]
        assert f"missing value for string attribute nonsense from 127.0.0.1:{server.port}" \
            in caplog.text
        assert f"string length > 8192 characters from 127.0.0.1:{server.port}" in caplog.text
    finally:
        await server.stop()
