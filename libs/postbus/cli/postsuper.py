"""postbus postsuper: delete, hold, release and requeue messages, as postsuper(1).

``-d`` reaches the corrupt queue for a queue ID named on the command line
(whatever queue it is in) and for ``ALL corrupt``; a bare ``-d ALL`` leaves
it alone, as Postfix's default queues (hold, incoming, active, deferred) do.

``ALL`` goes through the queue as it is listed (streamed, never truncated),
``-`` takes queue IDs from standard input; either way a bounded number of
messages is changed at a time (:func:`postbus.queue.admin.each`).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys

from postbus import events
from postbus.config.loader import Config
from postbus.logging import setup_logging
from postbus.queue import admin, corrupt
from postbus.queue.entry import QUEUE_NAMES

log = logging.getLogger("postbus.postsuper")


def _ids(values: list[list[str]]) -> tuple[list[str], set[str] | None]:
    """``-d ALL deferred`` style arguments: IDs (or ALL, '-' for stdin) and queue names."""
    ids: list[str] = []
    queues: set[str] = set()
    for group in values:
        for value in group:
            if value in QUEUE_NAMES:
                queues.add(value)
            elif value == "-":
                ids += sys.stdin.read().split()
            else:
                ids.append(value)
    return ids, queues or None


def _who() -> str:
    """The user named in held, released, requeued and deleted events."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid {os.getuid()}"


VERBS = {  # option: (change, what postsuper prints, what is logged, flag, event)
    "h": (admin.hold, "Placed on hold", "placed on hold", "-h", "held"),
    "H": (admin.release, "Released from hold", "released from hold", "-H", "released"),
    "r": (admin.requeue, "Requeued", "requeued", "-r", "requeued"),
}


def _report(verb: str, count: int) -> None:
    print(f"postsuper: {verb}: {count} message{'s' if count != 1 else ''}", file=sys.stderr)


async def delete(bus: admin.Bus, ids: list[str], queues: set[str] | None) -> int:
    """postsuper -d: every message named (or ALL) in the named queues."""
    store, who = bus.queue, _who()
    live = queues - {"corrupt"} if queues else None
    to_corrupt = queues is None or "corrupt" in queues
    named = "ALL" not in ids
    now_taken = await admin.named_taken(store, ids)
    count = 0

    async def one(target: admin.Target) -> None:
        nonlocal count
        if await admin.load(store, target, now_taken):
            assert target.entry is not None
            if (live is None or target.entry.queue in live) \
                    and await store.remove(target.queue_id, was=target.entry.queue,
                                           bucket=target.entry.bucket):
                log.info("%s: removed", target.queue_id)
                count += 1
                await events.publish_event(bus.js, "deleted", target.queue_id, who=who,
                                           why="postsuper -d")
        # a named ID may be in the corrupt queue too (ALL corrupt is selected below)
        if named and to_corrupt and await corrupt.remove(bus.js, target.queue_id):
            log.info("%s: removed", target.queue_id)
            count += 1

    if queues is None or live or named:
        await admin.each(admin.targets(store, ids), one)
    for record_id in await admin.select_corrupt(bus.js, ids, queues):
        if await corrupt.remove(bus.js, record_id):
            log.info("%s: removed", record_id)
            count += 1
    return count


async def change(bus: admin.Bus, option: str, ids: list[str], queues: set[str] | None) -> int:
    """postsuper -h, -H or -r: every message named (or ALL) in the named queues."""
    how, _, logged, flag, kind = VERBS[option]
    store, who = bus.queue, _who()
    now_taken = await admin.named_taken(store, ids)
    count = 0

    async def one(target: admin.Target) -> None:
        nonlocal count
        if not await admin.load(store, target, now_taken):
            return
        assert target.entry is not None
        if queues is not None and target.entry.queue not in queues:
            return
        entry = await admin.change(store, target, how)
        if entry is None:
            return
        count += 1
        await events.publish_event(bus.js, kind, entry.queue_id, who=who,
                                   why=f"postsuper {flag}")
        if entry.queue == "deferred":
            await store.set_timer(entry.queue_id, 0, entry.attempt_id)
        log.info("%s: %s", entry.queue_id, logged)

    await admin.each(admin.targets(store, ids), one)
    return count


async def run(cfg: Config, args: argparse.Namespace) -> int:
    events.configure(cfg)
    async with admin.open_queue(cfg, "postsuper") as bus:
        if args.d:
            _report("Deleted", await delete(bus, *_ids(args.d)))
        for option in VERBS:
            values = getattr(args, option)
            if values:
                _report(VERBS[option][1], await change(bus, option, *_ids(values)))
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="postsuper", add_help=False)
    parser.add_argument("-c", dest="config_dir")
    parser.add_argument("-v", action="count", default=0)
    for flag in ("-d", "-h", "-H", "-r"):
        parser.add_argument(flag, nargs="+", action="append", metavar="queue_id")
    parser.add_argument("-s", action="store_true", help="structure check (nothing to do here)")
    parser.add_argument("-p", action="store_true", help="purge temporary files (nothing to do)")
    args = parser.parse_args(argv)
    cfg = Config.load(args.config_dir, check_support=False)
    setup_logging(f"{cfg.get('syslog_name')}/postsuper", cfg.get("myhostname"),
                  maillog_file=cfg.get("maillog_file"))
    try:
        return asyncio.run(run(cfg, args))
    except (OSError, TimeoutError) as exc:
        print(f"postsuper: fatal: cannot reach the queue: {exc}", file=sys.stderr)
        return 75
