"""A job whose message content is gone is dropped without keeping its
destination's slot, whether its content is read before the slot (small
messages) or after it (large ones)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from delivery_local.__main__ import main
from postbus.job_loop import READ_AHEAD
from postbus.queue.entry import DeliveryJob, Recipient
from postbus.queue.ids import new_queue_id

from .conftest import Bus, RunAgent
from .localfs import MAIL_OWNER, mailroot

pytestmark = pytest.mark.integration
__all__ = ["mailroot"]  # the fixture


@pytest.mark.parametrize("size", [100, READ_AHEAD + 1], ids=["read-ahead", "read-in-slot"])
async def test_job_without_content_is_dropped_and_frees_its_slot(
    bus: Bus, run_agent: RunAgent, mailroot: Path, caplog: pytest.LogCaptureFixture,
    size: int,
) -> None:
    caplog.set_level(logging.INFO)
    (mailroot / "users").write_text("bob ok\n")
    await run_agent(main, "local", {
        "myhostname": "mail.postbus.test",
        "mydestination": "$myhostname, postbus.test",
        "mail_spool_directory": f"{mailroot}/mail/",
        "home_mailbox": "", "alias_maps": "",
        "local_recipient_maps": f"texthash:{mailroot}/users",
        "mail_owner": MAIL_OWNER,
        # one slot, and a lease no test waits for: a slot kept by the lost job
        # would hold the second job back past the deadline below
        "local_destination_concurrency_limit": "1",
        "initial_destination_concurrency": "1",
        "postbus_delivery_lease": "300s",
    })
    lost = new_queue_id()
    now = time.time()
    await bus.store.work.submit_job(DeliveryJob(
        queue_id=lost, transport="local", nexthop="mail.postbus.test",
        sender="alice@postbus.test", recipients=[Recipient("bob@postbus.test")], indexes=[0],
        attempt=1, arrival_time=now, size=size, chunks=1, queued_time=now, active_time=now,
        attempt_id="1", destination="bob@postbus.test"))
    gone = f"{lost}: message content is gone; dropping delivery job"
    deadline = time.monotonic() + 15
    while gone not in [r.getMessage() for r in caplog.records]:
        assert time.monotonic() < deadline, "the lost job was not dropped"
        await asyncio.sleep(0.02)
    # the lost job went first: the next one gets the only slot, unless it was kept
    job = await bus.submit("local", "mail.postbus.test", ["bob@postbus.test"],
                           job={"destination": "bob@postbus.test"})
    status = await bus.status(job.queue_id, timeout=15)
    assert [(r.status, r.dsn) for r in status.results] == [("sent", "2.0.0")]
    assert [r.getMessage() for r in caplog.records if lost in r.getMessage()] == [gone]
    assert len(list((mailroot / "mail" / "bob" / "new").iterdir())) == 1
