"""The local and virtual delivery agents (≈ Postfix local(8) and virtual(8)).

The master.cf command of the service (``local`` or ``virtual``) picks the
behaviour; aliases to remote addresses are re-queued through the queue, by
way of cleanup (canonical maps, virtual aliases, header rewriting: as
Postfix's local(8) forwards through cleanup(8)).
"""

from __future__ import annotations

import dataclasses
import logging
import time

from delivery_local.local import LocalAgent, prepare_spool
from delivery_local.state import Client
from postbus.cleanup import Cleanup
from postbus.config.loader import Config
from postbus.delivery import Stats
from postbus.job_loop import serve_jobs
from postbus.mail_date import mail_date
from postbus.queue.entry import DeliveryJob, QueueEntry, RcptResult, Recipient
from postbus.schedule.windows import Limits, destination_name
from postbus.service import ServiceContext, run

log = logging.getLogger("postbus.delivery")


def is_virtual(ctx: ServiceContext) -> bool:
    for entry in ctx.cfg.master:
        if entry.service == ctx.service and entry.command in ("local", "virtual"):
            return entry.command == "virtual"
    return ctx.service == "virtual"


async def main(ctx: ServiceContext) -> None:
    cleanups = [Cleanup(ctx.cfg)]

    async def reinject(entry: QueueEntry, content: bytes) -> str:
        """Queue a forwarded copy (LF lines) through cleanup, under Postfix's ``Received: by
        $myhostname ($mail_name) id QID; date`` (≈ forward.c); CleanupError: nothing
        queued."""
        cfg = ctx.cfg
        build = await cleanups[0].message(entry, content.replace(b"\n", b"\r\n"))

        def received(qid: str) -> bytes:
            line = (f"Received: by {cfg.get('myhostname')} ({cfg.get('mail_name')})\r\n"
                    f"\tid {qid}; {mail_date(time.time())}\r\n")
            return line.encode() + build(qid)

        return await ctx.queue.enqueue(entry, b"", cfg.bool("enable_long_queue_ids"),
                                       build=received)

    async def client_of(queue_id: str) -> Client:
        """The SMTP client of a message (CLIENT_* for commands), from its queue entry."""
        try:
            got = await ctx.queue.get(queue_id)
        except Exception as exc:  # the variables are a courtesy: the delivery goes on
            log.warning("%s: cannot read the queue entry for CLIENT_*: %s", queue_id, exc)
            return Client()
        if got is None:
            return Client()
        entry = got[0]
        return Client(entry.client_name, entry.client_addr, entry.helo, entry.protocol)

    async def pass_job(job: DeliveryJob, index: int, rcpt: Recipient, service: str) -> None:
        """A job of the same attempt for ``transport:nexthop`` (mailbox_transport...);
        an empty next hop is the job's own, as Postfix's deliver_pass()."""
        transport, _, nexthop = service.partition(":")
        nexthop = nexthop or job.nexthop
        name = destination_name(Limits.of(ctx.cfg, transport), transport, nexthop,
                                rcpt.address, ctx.cfg.get("recipient_delimiter"))
        await ctx.work.submit_job(dataclasses.replace(
            job, transport=transport, nexthop=nexthop, recipients=[rcpt], indexes=[index],
            whole=False, destination=name, queued_time=time.time()))

    if not is_virtual(ctx):
        prepare_spool(ctx.cfg)
    agents = [LocalAgent(ctx.cfg, ctx.service, virtual=is_virtual(ctx), reinject=reinject,
                         client_of=client_of, pass_job=pass_job)]

    def configure(cfg: Config) -> None:
        """On reload: new jobs use the new settings (mailboxes, aliases...)."""
        if not is_virtual(ctx):
            prepare_spool(cfg)
        agents[0] = LocalAgent(cfg, ctx.service, virtual=is_virtual(ctx), reinject=reinject,
                               client_of=client_of, pass_job=pass_job)
        cleanups[0] = Cleanup(cfg)

    async def deliver(job: DeliveryJob, content: bytes, stats: Stats) -> list[RcptResult]:
        return await agents[0].deliver(job, content, stats)

    ctx.on_reload(configure)
    await serve_jobs(ctx, deliver)


if __name__ == "__main__":
    run("local", main)
