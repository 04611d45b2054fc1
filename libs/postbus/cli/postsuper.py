"""postbus postsuper: delete, hold, release and requeue messages, as postsuper(1).

``-d`` reaches the corrupt queue for a queue ID named on the command line
(whatever queue it is in) and for ``ALL corrupt``; a bare ``-d ALL`` leaves
it alone, as Postfix's default queues (hold, incoming, active, deferred) do.
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


async def run(cfg: Config, args: argparse.Namespace) -> int:
    events.configure(cfg)
    async with admin.open_queue(cfg, "postsuper") as bus:
        store = bus.queue
        if args.d:
            ids, queues = _ids(args.d)
            count = 0
            live = queues - {"corrupt"} if queues else None
            if queues is None or live:
                for queue_id in await admin.select(store, ids, live):
                    got = await store.get(queue_id)
                    if got is None:
                        continue
                    await store.remove(queue_id)
                    await bus.work.event("deleted", queue_id, who=_who(), why="postsuper -d")
                    log.info("%s: removed", queue_id)
                    count += 1
            for queue_id in await admin.select_corrupt(store, ids, queues):
                if await corrupt.remove(bus.js, queue_id):
                    log.info("%s: removed", queue_id)
                    count += 1
            print(f"postsuper: Deleted: {count} message{'s' if count != 1 else ''}",
                  file=sys.stderr)
        for option, change, verb, flag, kind in (
            (args.h, admin.hold, "Placed on hold", "-h", "held"),
            (args.H, admin.release, "Released from hold", "-H", "released"),
            (args.r, admin.requeue, "Requeued", "-r", "requeued"),
        ):
            if not option:
                continue
            ids, queues = _ids(option)
            changed = await admin.change_each(
                store, await admin.select(store, ids, queues), change
            )
            for entry in changed:
                await bus.work.event(kind, entry.queue_id, who=_who(), why=f"postsuper {flag}")
                if entry.queue == "deferred":
                    await store.set_timer(entry.queue_id, 0, entry.attempt_id)
                log.info("%s: %s", entry.queue_id,
                         {"Placed on hold": "placed on hold",
                          "Released from hold": "released from hold",
                          "Requeued": "requeued"}[verb])
            count = len(changed)
            print(f"postsuper: {verb}: {count} message{'s' if count != 1 else ''}",
                  file=sys.stderr)
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
