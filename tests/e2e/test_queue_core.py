"""The queue core under faults: one owner, leases, fencing, unique attempt ids.

Whole systems of real processes (tests/harness.py) relay to an aiosmtpd
peer; faults are real: kill -9 of a role or of nats-server, work lost from
the bus, a queue ID used again within JetStream's duplicate window.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from postbus.bus import subjects as s
from postbus.bus.jetstream import connect
from postbus.queue.entry import DeliveryJob, QueueEntry, Recipient
from postbus.queue.file import ENTRY_HEADER, QueueFile
from postbus.queue.work import WorkBus
from tests.e2e.peers import Peer
from tests.harness import MailSystem

pytestmark = pytest.mark.e2e

BODY = "Subject: core\r\n\r\nthe queue core\r\n"


def relaying(tmp_path: Path, peer: Peer, **extra: str) -> MailSystem:
    return MailSystem(tmp_path, {"relayhost": f"[127.0.0.1]:{peer.port}", **extra})


def delivered(peer: Peer) -> list[str]:
    return sorted(r for m in peer.handler.messages for r in m.recipients)


def test_qmgr_killed_under_load_drains_soon_after_restart(tmp_path: Path) -> None:
    with Peer() as peer:
        system = relaying(tmp_path, peer).start()
        try:
            rcpts = [f"r{i}@remote.test" for i in range(60)]
            for rcpt in rcpts:
                system.send("a@client.test", [rcpt], BODY)
            system.kill("qmgr")
            system.restart("qmgr")
            restarted = time.monotonic()
            assert system.wait_for(lambda: delivered(peer) == sorted(rcpts), timeout=30), (
                len(delivered(peer)), system.maillog.read_text()[-3000:])
            assert time.monotonic() - restarted < 10  # ack wait 5s, not the old 60s
            assert system.wait_for(system.quiet, timeout=20)
            assert delivered(peer) == sorted(rcpts)  # none twice
        finally:
            system.stop()


def test_nats_killed_under_load_loses_nothing_and_drains(tmp_path: Path) -> None:
    """kill -9 of nats-server with every attempt in flight (jobs waiting for an agent,
    in the memory work stream): after the restart each is taken up again, delivered
    once, and the queue drains within 30 s."""
    with Peer() as peer:
        system = relaying(tmp_path, peer, postbus_delivery_lease="3s")
        system.start(only=[label for label in system.children if label != "smtp"])
        try:
            rcpts = [f"n{i}@remote.test" for i in range(30)]
            qids = [system.send("a@client.test", [rcpt], BODY) for rcpt in rcpts]
            taken = system.wait_for(lambda: all(
                f"{q}: from=<a@client.test>" in system.maillog.read_text() for q in qids))
            assert taken, system.maillog.read_text()[-3000:]
            system.nats.stop(sig_kill=True)
            system.nats.start()
            back = time.monotonic()
            system.start_role("smtp")
            system.wait_ready("smtp")
            got = system.wait_for(lambda: delivered(peer) == sorted(rcpts), timeout=60)
            assert got, (sorted(set(rcpts) - set(delivered(peer))),
                         system.maillog.read_text()[-4000:])
            assert time.monotonic() - back < 30
            assert system.wait_for(system.quiet, timeout=30)
            assert delivered(peer) == sorted(rcpts)  # none twice
        finally:
            system.stop()


def test_nats_killed_just_after_removals_delivers_nothing_twice(tmp_path: Path) -> None:
    """kill -9 of nats-server right after the last messages were marked done and their
    triggers acknowledged: JetStream writes consumer acks to disk a little later, so it
    may hand those triggers out again as new, while their time bucket is still on
    disk. The qmgr reads such triggers against the queue: none is delivered twice."""
    with Peer() as peer:
        system = relaying(tmp_path, peer).start()
        try:
            rcpts = [f"k{i}@remote.test" for i in range(20)]
            qids = [system.send("a@client.test", [rcpt], BODY) for rcpt in rcpts]
            removed = system.wait_for(lambda: all(
                f"{q}: removed" in system.maillog.read_text() for q in qids), interval=0.01)
            assert removed, system.maillog.read_text()[-3000:]
            system.nats.stop(sig_kill=True)
            system.nats.start()
            later = system.send("a@client.test", ["after@remote.test"], BODY)
            assert system.wait_for(
                lambda: f"{later}: removed" in system.maillog.read_text(), timeout=60)
            assert system.wait_for(system.quiet, timeout=30)
            assert delivered(peer) == sorted([*rcpts, "after@remote.test"])  # none twice
        finally:
            system.stop()


def test_an_attempt_whose_work_was_lost_is_taken_up_again(tmp_path: Path) -> None:
    """Jobs gone from the bus (as with a nats-server restart): after the lease the
    qmgr starts a new attempt, and the message is delivered once."""
    with Peer() as peer:
        system = relaying(tmp_path, peer, postbus_delivery_lease="2s")
        system.start(only=[label for label in system.children if label != "smtp"])
        try:
            qid = system.send("a@client.test", ["lost@remote.test"], BODY)

            async def lose_the_job() -> None:
                nc = await connect(system.nats.url, "test")
                js = nc.jetstream()
                work = WorkBus(nc, js)
                for _ in range(200):
                    if await work.in_flight(qid):
                        break
                    await asyncio.sleep(0.05)
                assert await work.in_flight(qid)
                await js.purge_stream(s.WORK_STREAM)
                await nc.close()

            asyncio.run(lose_the_job())
            system.start_role("smtp")
            system.wait_ready("smtp")
            assert system.wait_for(lambda: delivered(peer) == ["lost@remote.test"], timeout=20)
            log = system.maillog.read_text()
            assert f"warning: {qid}: attempt " in log and "was lost; trying again" in log
            assert system.wait_for(lambda: f"{qid}: removed" in system.maillog.read_text())
            assert system.wait_for(system.quiet, timeout=20)
            assert delivered(peer) == ["lost@remote.test"]
        finally:
            system.stop()


def test_a_queue_id_used_again_within_the_duplicate_window_is_delivered(
    tmp_path: Path,
) -> None:
    """Short queue IDs recur; the attempt ids that key jobs and results do not."""
    with Peer() as peer:
        system = relaying(tmp_path, peer).start()
        try:
            qid = system.send("a@client.test", ["first@remote.test"], BODY)
            assert system.wait_for(lambda: f"{qid}: removed" in system.maillog.read_text())

            async def gone() -> bool:  # its time bucket swept: the ID is free again
                nc = await connect(system.nats.url, "test")
                info = await nc.jetstream().stream_info(
                    s.QUEUE_STREAM, subjects_filter=s.message_filter(qid))
                await nc.close()
                return not info.state.subjects

            async def queue_again() -> None:
                nc = await connect(system.nats.url, "test")
                entry = QueueEntry(qid, "a@client.test", [Recipient("second@remote.test")])
                await nc.jetstream().publish(
                    s.msg_subject(qid, s.time_bucket(time.time())), BODY.encode(),
                    stream=s.QUEUE_STREAM,
                    headers={ENTRY_HEADER: entry.encode().decode(),
                             "Nats-Expected-Last-Subject-Sequence": "0",
                             "Nats-Expected-Last-Subject-Sequence-Subject": s.find_msg(qid)})
                await nc.close()

            assert system.wait_for(lambda: asyncio.run(gone()), timeout=30)
            asyncio.run(queue_again())  # well inside JetStream's 120s duplicate window
            assert system.wait_for(
                lambda: delivered(peer) == ["first@remote.test", "second@remote.test"],
                timeout=20), system.maillog.read_text()[-3000:]
        finally:
            system.stop()


def test_an_agent_drops_a_job_the_queue_no_longer_wants(tmp_path: Path) -> None:
    """Fencing: a job of an attempt that is over (delivered, or taken up again) that
    comes back to an agent is dropped before it connects."""
    with Peer() as peer:
        system = relaying(tmp_path, peer).start()
        try:
            qid = system.send("a@client.test", ["once@remote.test"], BODY)
            assert system.wait_for(lambda: f"{qid}: removed" in system.maillog.read_text())

            async def hand_out_again() -> None:
                nc = await connect(system.nats.url, "test")
                js = nc.jetstream()
                job = DeliveryJob(qid, "relay", f"[127.0.0.1]:{peer.port}", "a@client.test",
                                  [Recipient("once@remote.test")], [0], 1, time.time(), 10, 1,
                                  attempt_id="s999999", recheck=True, whole=True)
                await WorkBus(nc, js).submit_job(job)
                await nc.close()

            asyncio.run(hand_out_again())
            dropped = (f"{qid}: delivery job of attempt s999999 dropped: "
                       "the queue no longer wants it")
            assert system.wait_for(lambda: dropped in system.maillog.read_text(), timeout=20)
            assert delivered(peer) == ["once@remote.test"]
        finally:
            system.stop()


def test_deferred_mail_waits_on_a_timer_not_on_the_bus(tmp_path: Path) -> None:
    """A deferral writes the entry and one timer; the retry comes when it fires."""
    from tests.e2e.peers import PeerHandler

    handler = PeerHandler(replies=["451 4.3.0 try later"])
    with Peer(handler) as peer:
        system = relaying(tmp_path, peer, minimal_backoff_time="2s",
                          maximal_backoff_time="2s").start()
        try:
            qid = system.send("a@client.test", ["later@remote.test"], BODY)

            async def timer_set() -> tuple[QueueEntry, dict[str, str]] | None:
                nc = await connect(system.nats.url, "test")
                js = nc.jetstream()
                try:
                    got = await QueueFile(nc, js).get(qid)
                    if got is None or got[0].queue != "deferred":
                        return None
                    msg = await js.get_last_msg(s.QUEUE_STREAM,
                                                s.timer_subject(qid, got[0].bucket))
                    return got[0], dict(msg.headers or {})
                except Exception:
                    return None
                finally:
                    await nc.close()

            found = system.wait_for(lambda: asyncio.run(timer_set()), timeout=20)
            assert found, system.maillog.read_text()[-3000:]
            entry, headers = found
            assert headers["Nats-Schedule-Target"] == s.wake_subject(qid)
            assert entry.recipients[0].dsn == "4.3.0"
            assert system.wait_for(lambda: delivered(peer) == ["later@remote.test"], timeout=20)
            assert handler.attempts == 2
        finally:
            system.stop()
