"""Delivery agents' gates for the scheduling tests (real Redis, real NATS): a window
of one slot per destination, jobs, and agents that share the window."""

from __future__ import annotations

import time
from pathlib import Path

from postbus.bus.jetstream import connect, ensure_streams
from postbus.config.loader import Config
from postbus.maps import context
from postbus.queue.entry import DeliveryJob, Recipient
from postbus.queue.work import WorkBus
from postbus.schedule.gate import Gate
from postbus.schedule.windows import Grant
from postbus.servers import ServerProcess


def config(tmp_path: Path) -> Config:
    """One slot per smtp destination."""
    conf = tmp_path / "etc"
    conf.mkdir(exist_ok=True)
    (conf / "main.cf").write_text("smtp_initial_destination_concurrency = 1\n"
                                  "smtp_destination_concurrency_limit = 1\n")
    (conf / "master.cf").write_text("smtp unix - - n - - smtp\n")
    return Config.load(conf)


async def suspend(job: DeliveryJob, grant: Grant) -> None:
    raise AssertionError("the destination is not dead")


def job(queue_id: str, domain: str = "remote.test") -> DeliveryJob:
    """A job of one recipient at ``domain``, to its nexthop ``mx.<domain>``."""
    return DeliveryJob(queue_id, "smtp", f"mx.{domain}", "a@client.test",
                       [Recipient(f"b@{domain}")], [0], attempt=1, arrival_time=time.time(),
                       size=10, chunks=1, attempt_id=queue_id)


async def gates(nats: ServerProcess, redis: ServerProcess, cfg: Config,
                count: int) -> list[Gate]:
    """``count`` agents of the smtp transport, each with its own NATS connection."""
    context.configure(f"{redis.url}/0")
    out = []
    for i in range(count):
        nc = await connect(nats.url, f"agent{i}")
        await ensure_streams(nc.jetstream())
        gate = Gate(cfg, WorkBus(nc, nc.jetstream()), "smtp", suspend)
        await gate.listen()
        out.append(gate)
    return out


async def close(agents: list[Gate]) -> None:
    for gate in agents:
        await gate.work.nc.close()
    await context.aclose()
