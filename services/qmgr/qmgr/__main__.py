"""qmgr: the queue manager role (≈ Postfix qmgr(8) + trivial-rewrite(8)).

Three durable consumers, shared by every qmgr replica: new mail and
wake-ups start attempts (:mod:`qmgr.attempts`), delivery results end them
(:mod:`qmgr.results`). The first two are the attempts' leases: they allow
``qmgr_message_active_limit`` messages in flight (Postfix's active queue),
and a short ack wait, so that work a killed qmgr had taken but not handed
out comes back within seconds. Queue commands (postqueue -f, -i, -s) are
answered by any replica (:mod:`qmgr.commands`).
"""

from __future__ import annotations

import asyncio

from nats.aio.msg import Msg

from postbus.bus import subjects as s
from postbus.bus.consumer import consume
from postbus.queue.buckets import Sweeper
from postbus.queue.entry import CodecError
from postbus.queue.file import QueueFile
from postbus.queue.upgrade import move_old_layout
from postbus.service import ServiceContext, run
from qmgr.attempts import Attempts
from qmgr.commands import Commands
from qmgr.gauges import refresh_gauges
from qmgr.results import Recorder

HANDLING_TIME = 5.0  # seconds a qmgr may take over one trigger, wake-up or result


async def main(ctx: ServiceContext) -> None:
    recorder = Recorder(ctx)
    await move_old_layout(ctx.queue)
    sweeper = Sweeper(ctx.queue.js, ctx.queue.requests)
    attempts = Attempts(ctx, recorder, sweeper)
    active_limit = ctx.cfg.int("qmgr_message_active_limit")

    async def after_bad_wakeup(msg: Msg) -> None:
        """A wake-up that could not be read must not leave its message deferred
        forever: set a good one. (One that was read but whose handling failed
        is not replaced: that would loop.)"""
        try:
            QueueFile.read_wakeup(msg.data)
            return
        except CodecError:
            pass
        queue_id = s.subject_queue_id(msg.subject)
        got = await ctx.queue.get(queue_id) if queue_id else None
        if got is not None and got[0].queue == "deferred":
            entry = got[0]
            await ctx.queue.set_timer(queue_id, entry.next_attempt, entry.attempt_id,
                                      entry.bucket)

    await asyncio.gather(
        refresh_gauges(ctx),
        sweeper.run(ctx.stopping),
        Commands(ctx).serve(),
        consume(ctx, stream=s.QUEUE_STREAM, subject=s.MSG_TRIGGER_FILTER,
                durable=s.QMGR_INCOMING_CONSUMER, handler=attempts.on_incoming,
                ack_wait=HANDLING_TIME, max_ack_pending=active_limit),
        consume(ctx, stream=s.QUEUE_STREAM, subject=s.WAKE_SUBJECTS,
                durable=s.QMGR_WAKE_CONSUMER, handler=attempts.on_wakeup,
                ack_wait=HANDLING_TIME, max_ack_pending=active_limit,
                on_poison=after_bad_wakeup),
        consume(ctx, stream=s.WORK_STREAM, subject=s.STATUS_SUBJECTS,
                durable=s.QMGR_STATUS_CONSUMER, handler=recorder.on_status,
                ack_wait=HANDLING_TIME),
    )


def entry() -> None:
    run("qmgr", main)


if __name__ == "__main__":
    entry()
