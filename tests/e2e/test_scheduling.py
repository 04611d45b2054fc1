"""Destination-aware scheduling across replicas (SCHEDULER_README): concurrency
windows that hold with two qmgr and two smtp processes, a stalled destination
that does not hold up others, dead destinations suspended, rate delays.

Peers are real aiosmtpd servers that count the mail transactions they are
in (MAIL FROM to the end of DATA): the deliveries a concurrency window
limits.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from postbus.servers import free_port
from tests.harness import MailSystem, replicated

pytestmark = pytest.mark.e2e

BODY = "Subject: scheduling\r\n\r\none of many\r\n"


@dataclass
class Counting:
    """Counts transactions in progress; each DATA takes ``stall`` seconds."""

    stall: float = 0.0
    busy: int = 0
    most: int = 0
    done: list[float] = field(default_factory=list)  # when each DATA was answered
    recipients: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, options: list[str]) -> str:
        with self.lock:
            self.busy += 1
            self.most = max(self.most, self.busy)
        envelope.mail_from = address
        return "250 2.1.0 Ok"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return "250 2.0.0 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.stall:
            await asyncio.sleep(self.stall)
        with self.lock:
            self.busy -= 1
            self.done.append(time.monotonic())
            self.recipients.extend(envelope.rcpt_tos)
        return "250 2.0.0 Ok: accepted"


class CountingPeer:
    def __init__(self, stall: float = 0.0, port: int = 0) -> None:
        self.handler = Counting(stall)
        self.port = port or free_port()
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port,
                                     decode_data=False)

    def __enter__(self) -> CountingPeer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()


def test_concurrency_limit_holds_with_two_qmgr_and_two_smtp_replicas(tmp_path: Path) -> None:
    with CountingPeer(stall=0.3) as peer:
        system = MailSystem(tmp_path, {
            "relayhost": f"[127.0.0.1]:{peer.port}",
            "smtp_destination_concurrency_limit": "4",
        }, master_cf=replicated(2, 2))
        assert {"qmgr", "qmgr#1", "smtp", "smtp#1"} <= set(system.children)
        system.start()
        try:
            rcpts = [f"c{i}@remote.test" for i in range(40)]
            for rcpt in rcpts:
                system.send("a@client.test", [rcpt], BODY)
            got = system.wait_for(lambda: sorted(peer.handler.recipients) == sorted(rcpts),
                                  timeout=90)
            assert got, (len(peer.handler.recipients), system.maillog.read_text()[-3000:])
            assert 2 <= peer.handler.most <= 4, peer.handler.most
            log = system.maillog.read_text()
            agents = set(re.findall(r"postbus/smtp\[(\d+)\]: \w+: to=<c\d+@remote", log))
            qmgrs = set(re.findall(r"postbus/qmgr\[(\d+)\]: \w+: from=<a@client", log))
            assert len(agents) == 2 and len(qmgrs) == 2, (agents, qmgrs)
            assert system.wait_for(system.quiet, timeout=30)
        finally:
            system.stop()


def test_a_stalled_destination_does_not_hold_up_another(tmp_path: Path) -> None:
    """80 messages to a destination that takes a minute per DATA, then 5 to one
    that answers at once: the stalled one holds its window (5: no delivery
    completes, so no positive feedback opens it), never every agent slot (64
    per process), so the others go through."""
    with CountingPeer(stall=60.0) as slow, CountingPeer() as fast:
        system = MailSystem(tmp_path, {
            "transport_maps": (f"inline:{{ slow.test=smtp:[127.0.0.1]:{slow.port}, "
                               f"fast.test=smtp:[127.0.0.1]:{fast.port} }}"),
            "relay_domains": "slow.test, fast.test",
        }).start()
        try:
            for i in range(80):
                system.send("a@client.test", [f"s{i}@slow.test"], BODY)
            assert system.wait_for(lambda: slow.handler.busy >= 5, timeout=30)
            started = time.monotonic()
            fast_rcpts = [f"f{i}@fast.test" for i in range(5)]
            for rcpt in fast_rcpts:
                system.send("a@client.test", [rcpt], BODY)
            got = system.wait_for(lambda: sorted(fast.handler.recipients) == fast_rcpts,
                                  timeout=30)
            assert got, system.maillog.read_text()[-3000:]
            assert time.monotonic() - started < 15
            assert slow.handler.most == 5  # initial_destination_concurrency
        finally:
            system.stop()


def test_a_dead_destination_is_suspended_then_tried_again(tmp_path: Path) -> None:
    """Connections refused: after the failed cohorts the destination is dead, its
    mail deferred without connecting ("delivery temporarily suspended"); once
    minimal_backoff_time has passed and a server answers, all of it goes."""
    port = free_port()
    system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{port}",
                                   "minimal_backoff_time": "3s",
                                   "maximal_backoff_time": "3s"}).start()
    try:
        rcpts = [f"d{i}@remote.test" for i in range(20)]
        for rcpt in rcpts:
            system.send("a@client.test", [rcpt], BODY)
        suspended = (f"status=deferred (delivery temporarily suspended: connect to "
                     f"127.0.0.1[127.0.0.1]:{port}: Connection refused)")
        assert system.wait_for(lambda: suspended in system.maillog.read_text(), timeout=30)
        log = system.maillog.read_text()
        refused = log.count(f"127.0.0.1[127.0.0.1]:{port}: Connection refused)")
        tried = refused - log.count(suspended)
        assert 1 <= tried <= 5, tried  # the window's worth of attempts, not all 20
        with CountingPeer(port=port) as peer:
            got = system.wait_for(lambda: sorted(peer.handler.recipients) == sorted(rcpts),
                                  timeout=60)
            assert got, system.maillog.read_text()[-3000:]
    finally:
        system.stop()


def test_postqueue_f_revives_a_dead_destination(tmp_path: Path) -> None:
    """Dead with an hour's backoff: `postqueue -f` tries it again at once, as
    Postfix's flush unthrottles dead destinations (QMGR_REQ_FLUSH_DEAD)."""
    port = free_port()
    system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{port}",
                                   "minimal_backoff_time": "3600s",
                                   "maximal_backoff_time": "4000s"}).start()
    try:
        rcpts = [f"q{i}@remote.test" for i in range(8)]
        for rcpt in rcpts:
            system.send("a@client.test", [rcpt], BODY)
        assert system.wait_for(
            lambda: system.maillog.read_text().count("status=deferred") >= len(rcpts)
            and "delivery temporarily suspended" in system.maillog.read_text(), timeout=30)
        with CountingPeer(port=port) as peer:
            flushed = system.postbus("postqueue", "-f")
            assert flushed.returncode == 0, flushed.stderr
            got = system.wait_for(lambda: sorted(peer.handler.recipients) == sorted(rcpts),
                                  timeout=30)
            assert got, system.maillog.read_text()[-3000:]
        assert "flush: 1 dead destinations to be tried again" in system.maillog.read_text()
    finally:
        system.stop()


def test_an_agent_killed_while_holding_slots_loses_nothing(tmp_path: Path) -> None:
    """kill -9 of the smtp agent with its window's slots held (every peer session
    in DATA): its jobs come back to the restarted agent, which takes their slots
    again (a slot is named after its job), and everything is delivered."""
    with CountingPeer(stall=1.0) as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}",
                                       "smtp_destination_concurrency_limit": "4"}).start()
        try:
            rcpts = [f"k{i}@remote.test" for i in range(16)]
            for rcpt in rcpts:
                system.send("a@client.test", [rcpt], BODY)
            assert system.wait_for(lambda: peer.handler.busy >= 4, timeout=30)
            system.kill("smtp")
            system.restart("smtp")
            got = system.wait_for(lambda: set(peer.handler.recipients) == set(rcpts),
                                  timeout=60)
            assert got, system.maillog.read_text()[-3000:]
            assert system.wait_for(system.quiet, timeout=30)
        finally:
            system.stop()


def test_redis_killed_under_load_loses_nothing(tmp_path: Path) -> None:
    """kill -9 of redis-server, which holds the windows, with mail in flight: the
    agents keep their jobs and retry; once Redis is back (its windows' history
    gone, restarted at the initial concurrency) everything is delivered once."""
    with CountingPeer(stall=0.2) as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}"}).start()
        try:
            rcpts = [f"x{i}@remote.test" for i in range(30)]
            for rcpt in rcpts[:15]:
                system.send("a@client.test", [rcpt], BODY)
            system.redis.stop(sig_kill=True)
            for rcpt in rcpts[15:]:
                system.send("a@client.test", [rcpt], BODY)
            system.redis.start()
            got = system.wait_for(lambda: sorted(peer.handler.recipients) == sorted(rcpts),
                                  timeout=60)
            assert got, (sorted(set(rcpts) - set(peer.handler.recipients)),
                         system.maillog.read_text()[-3000:])
            assert system.wait_for(system.quiet, timeout=30)
            assert sorted(peer.handler.recipients) == sorted(rcpts)  # none twice
        finally:
            system.stop()


def test_rate_delay_spaces_deliveries_to_one_destination(tmp_path: Path) -> None:
    with CountingPeer() as peer:
        system = MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}",
                                       "smtp_destination_rate_delay": "1s"}).start()
        try:
            rcpts = [f"r{i}@remote.test" for i in range(4)]
            for rcpt in rcpts:
                system.send("a@client.test", [rcpt], BODY)
            got = system.wait_for(lambda: len(peer.handler.recipients) == 4, timeout=30)
            assert got, system.maillog.read_text()[-3000:]
            gaps = [b - a for a, b in zip(peer.handler.done, peer.handler.done[1:], strict=False)]
            assert peer.handler.most == 1
            assert all(gap >= 0.9 for gap in gaps), gaps
        finally:
            system.stop()
