"""The notices, wired to this process's queue file (:mod:`qmgr.bouncer` does the work;
:mod:`qmgr.results` calls it at the end of each attempt, as Postfix's qmgr).

A notice is new mail, so its envelope goes through cleanup's address
rewriting (canonical maps, masquerading, virtual aliases) as Postfix's
bounce(8) posts through cleanup; its content is the report, made when the
notice's queue ID is drawn. A table that cannot answer raises CleanupError:
the attempt's end is retried, nothing half done is queued.

The notice templates (bounce_template_file) are read at start and at each
reload, as Postfix's bounce daemon reads them when it starts.
"""

from __future__ import annotations

from collections.abc import Callable

from postbus.cleanup import Cleanup
from postbus.config.loader import Config
from postbus.queue.entry import QueueEntry
from postbus.service import ServiceContext
from qmgr import bouncer


def wire(ctx: ServiceContext) -> bouncer.Bouncer:
    """A bouncer.Bouncer that queues through cleanup and this process's queue file."""
    cleanups: dict[int, Cleanup] = {}

    def cleanup(cfg: Config) -> Cleanup:
        if id(cfg) not in cleanups:  # one per configuration: made again after a reload
            cleanups.clear()
            cleanups[id(cfg)] = Cleanup(cfg)
        return cleanups[id(cfg)]

    async def enqueue(entry: QueueEntry, build: Callable[[str], bytes]) -> str:
        cfg = ctx.cfg
        state = cleanup(cfg).begin()
        entry.sender = await state.sender(entry.sender)
        for rcpt in entry.recipients:
            await state.recipient(rcpt.address, orcpt=rcpt.orig_rcpt, notify=rcpt.notify)
        state.finish()
        entry.recipients = state.recipients
        return await ctx.queue.enqueue(entry, b"", cfg.bool("enable_long_queue_ids"),
                                       build=build)

    async def content(entry: QueueEntry) -> bytes:
        return await ctx.queue.content(entry.queue_id, entry.chunks, entry.bucket)

    notices = bouncer.Bouncer(lambda: ctx.cfg, enqueue, content)
    notices.templates(ctx.cfg)  # bounce_template_file: refused at start if unusable
    ctx.on_reload(notices.reload)
    return notices
