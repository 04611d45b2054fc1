"""Queue commands: postqueue -f, -i and -s, carried out by the qmgr (≈ qmgr(8)'s
QMGR_REQ_FLUSH_DEAD trigger and flush(8)'s send_file and send_site).

``flush`` also revives destinations suspended as dead, as QMGR_REQ_FLUSH_DEAD
unthrottles Postfix's queues.

One qmgr replica takes each request (queue group on ``postbus.cmd.*``, see
:mod:`postbus.queue.commands`). Flushing a message is what its timer does
when due: its entry's next attempt becomes now, and a wake-up is published
at once; the wake-up starts the attempt like any other. ``flush`` and
``send_site`` answer as soon as they have begun and then stream the written
entries (deferred mail always has one) in the background, a bounded number
at a time, so a flush of a million deferred messages neither blocks the
reply nor holds them in memory. A second flush while one runs on this
replica joins it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from nats.aio.msg import Msg
from redis.exceptions import RedisError

from postbus.bus import subjects as s
from postbus.match_lists import DomainList
from postbus.queue import admin
from postbus.queue import commands as cmd
from postbus.queue.entry import QueueEntry
from postbus.queue.ids import is_queue_id
from postbus.schedule import windows
from postbus.service import ServiceContext

log = logging.getLogger("postbus.qmgr")

Match = Callable[[QueueEntry], bool]


class Commands:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.running: dict[str, asyncio.Task[int]] = {}

    async def serve(self) -> None:
        """Answer queue commands until the qmgr stops."""
        assert self.ctx.nc is not None
        sub = await self.ctx.nc.subscribe(s.COMMAND_SUBJECTS, queue=s.COMMAND_GROUP,
                                          cb=self.on_request)
        try:
            await self.ctx.stopping.wait()
        finally:
            await sub.unsubscribe()
            for task in self.running.values():
                task.cancel()

    async def on_request(self, msg: Msg) -> None:
        verb = msg.subject.rsplit(".", 1)[-1]
        try:
            args = cmd.decode_request(msg.data)
            status = await self.carry_out(verb, args)
        except ValueError as exc:
            log.warning("warning: bad queue command %s: %s", verb, exc)
            status = cmd.BAD
        except Exception as exc:  # the bus may be restarting: postqueue says "down"
            log.warning("warning: queue command %s failed: %s", verb, exc)
            status = cmd.FAIL
        if msg.reply:
            await msg.respond(cmd.encode_reply(status))

    async def carry_out(self, verb: str, args: dict[str, str]) -> str:
        if verb == cmd.FLUSH:
            await self.revive()
            self.start("flush", lambda entry: True)
            return cmd.OK
        if verb == cmd.SEND_FILE:
            queue_id = args.get("queue_id", "")
            if not is_queue_id(queue_id):
                return cmd.BAD
            await self.flush_one(admin.Target(queue_id))
            return cmd.OK
        if verb == cmd.SEND_SITE:
            site = args.get("site", "").strip()
            if not site or any(c.isspace() or c in "@/" for c in site):
                return cmd.BAD
            if not await self.eligible(site):
                return cmd.DENY
            self.start(f"site {site.lower()}", lambda entry: cmd.for_site(entry, site))
            return cmd.OK
        raise ValueError(f"unknown queue command {verb!r}")

    async def revive(self) -> None:
        """Dead destinations are tried again, as Postfix's flush unthrottles them."""
        try:
            revived = await windows.revive_dead()
        except RedisError as exc:  # the flush itself still helps: mail is tried, or waits
            log.warning("warning: flush: dead destinations not revived: %s", exc)
            return
        if revived:
            log.info("flush: %d dead destinations to be tried again", revived)

    async def eligible(self, site: str) -> bool:
        """flush(8) serves only destinations in fast_flush_domains."""
        cfg = self.ctx.cfg
        domains = DomainList.from_config(
            cfg, "fast_flush_domains", set(cfg.list("parent_domain_matches_subdomains"))
        )
        return await domains.matches(cmd.bare_site(site))

    def start(self, name: str, match: Match) -> None:
        """Flush the deferred mail ``match`` selects, in the background."""
        task = self.running.get(name)
        if task is not None and not task.done():
            return  # one flush of this kind at a time: it reads the queue as it is now
        task = asyncio.create_task(self.flush(match))
        self.running[name] = task
        task.add_done_callback(lambda done: self._finished(name, done))

    def _finished(self, name: str, task: asyncio.Task[int]) -> None:
        if self.running.get(name) is task:
            del self.running[name]
        if not task.cancelled() and task.exception() is not None:
            log.warning("warning: flush (%s) stopped: %s", name, task.exception())

    async def flush(self, match: Match) -> int:
        """Every deferred message ``match`` selects, due now; how many."""
        count = 0

        async def deferred() -> AsyncIterator[admin.Target]:
            async for entry, revision in self.ctx.queue.listing(received=False):
                if entry.queue == "deferred" and match(entry):
                    yield admin.Target(entry.queue_id, entry, revision)

        async def one(target: admin.Target) -> None:
            nonlocal count
            count += await self.flush_one(target)

        await admin.each(deferred(), one)
        log.debug("flush: %d deferred messages to be tried now", count)
        return count

    async def flush_one(self, target: admin.Target) -> int:
        """Make one deferred message due now (1), or leave it (0)."""
        queue = self.ctx.queue
        if not await admin.load(queue, target, admin.Taken()):
            return 0
        entry = await admin.change(queue, target, admin.flush)
        if entry is None:
            return 0
        await queue.set_timer(entry.queue_id, 0, entry.attempt_id)
        return 1
