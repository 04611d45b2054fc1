"""postbus postqueue: list (-p, -j) and flush (-f, -i) the queue, as postqueue(1)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

from postbus.config.loader import Config
from postbus.queue import admin, corrupt
from postbus.queue.corrupt import CorruptMessage
from postbus.queue.entry import QueueEntry

S_LINE = "{:<11} {:>7} {:<20} {}"
L_LINE = "{:<17} {:>8} {:<19} {}"
STATUS = {"active": "*", "hold": "!"}
CORRUPT_MARK = "?"  # Postfix's showq lists no corrupt queue; we do, marked like this


def format_entry(entry: QueueEntry, long_ids: bool) -> list[str]:
    line = L_LINE if long_ids else S_LINE
    width = 19 if long_ids else 20
    arrival = time.asctime(time.localtime(entry.arrival_time))[:width]
    ident = entry.queue_id + STATUS.get(entry.queue, "")
    lines = [line.format(ident, entry.size, arrival, entry.sender or "MAILER-DAEMON")]
    saved = ""
    for rcpt in entry.recipients:
        if rcpt.final:
            continue
        why = rcpt.reason if rcpt.state == "deferred" or entry.queue != "active" else ""
        if why != saved:
            saved = why
            shown = why or "reason unavailable"
            lines.append(" " * max(0, 76 - len(shown)) + f"({shown})")
        lines.append(line.format("", "", "", rcpt.address))
    return lines


def format_corrupt(found: CorruptMessage, long_ids: bool) -> list[str]:
    """A corrupt message: ``ID?``, what is known of it, and why it was moved."""
    line = L_LINE if long_ids else S_LINE
    width = 19 if long_ids else 20
    when = time.asctime(time.localtime(found.shown_time))[:width]
    sender = "" if found.sender is None else found.sender or "MAILER-DAEMON"
    shown = f"corrupt {corrupt.KINDS.get(found.kind, found.kind)}: {found.reason}"
    lines = [line.format(found.record_id + CORRUPT_MARK, found.size, when, sender).rstrip()]
    lines.append(" " * max(0, 76 - len(shown)) + f"({shown})")
    lines += [line.format("", "", "", rcpt) for rcpt in found.recipients]
    return lines


def format_queue(
    entries: list[QueueEntry], long_ids: bool, broken: list[CorruptMessage] | None = None
) -> str:
    broken = broken or []
    if not entries and not broken:
        return "Mail queue is empty\n"
    head = (L_LINE if long_ids else S_LINE).format(
        *(("----Queue ID-----", "--Size--", "---Arrival Time----", "--Sender/Recipient------")
          if long_ids else
          ("-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------"))
    )
    blocks = ["\n".join(format_entry(e, long_ids)) for e in entries]
    blocks += ["\n".join(format_corrupt(c, long_ids)) for c in broken]
    total = (sum(e.size for e in entries) + sum(c.size for c in broken)) // 1024
    count = len(entries) + len(broken)
    plural = "" if count == 1 else "s"
    return (head + "\n" + "\n\n".join(blocks)
            + f"\n\n-- {total} Kbytes in {count} Request{plural}.\n")


def as_json(entry: QueueEntry) -> str:
    return json.dumps({
        "queue_name": entry.queue,
        "queue_id": entry.queue_id,
        "arrival_time": int(entry.arrival_time),
        "message_size": entry.size,
        "forced_expire": False,
        "sender": entry.sender,
        "recipients": [
            {"address": r.address, **({"delay_reason": r.reason} if r.reason else {})}
            for r in entry.recipients if not r.final
        ],
    })


def corrupt_json(found: CorruptMessage) -> str:
    return json.dumps({
        "queue_name": "corrupt",
        "queue_id": found.record_id,
        "arrival_time": int(found.shown_time),
        "message_size": found.size,
        "forced_expire": False,
        "sender": found.sender or "",
        "recipients": [{"address": r} for r in found.recipients],
        "corrupt_kind": found.kind,
        "corrupt_reason": found.reason,
        "corrupt_subject": found.subject,
        "corrupt_time": int(found.moved),
        "corrupt_deliveries": found.deliveries,
    })


async def run(cfg: Config, args: argparse.Namespace) -> int:
    async with admin.open_queue(cfg, "postqueue") as bus:
        store = bus.queue
        entries = sorted([e async for e in store.entries()], key=lambda e: e.arrival_time)
        if args.p or args.j:
            broken = await corrupt.corrupt_messages(bus.js)
        if args.p:
            sys.stdout.write(format_queue(entries, cfg.bool("enable_long_queue_ids"), broken))
        elif args.j:
            for entry in entries:
                print(as_json(entry))
            for found in broken:
                print(corrupt_json(found))
        else:
            ids = [args.i] if args.i else [e.queue_id for e in entries]
            for entry in await admin.change_each(store, ids, admin.flush):
                await store.set_timer(entry.queue_id, 0, entry.attempt_id)
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="postqueue")
    parser.add_argument("-c", dest="config_dir")
    parser.add_argument("-v", action="count", default=0)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("-p", action="store_true",
                      help="list the queue: ID* active, ID! on hold, ID? corrupt (listed last)")
    mode.add_argument("-j", action="store_true", help="list the queue as JSON lines")
    mode.add_argument("-f", action="store_true", help="flush: try deferred mail now")
    mode.add_argument("-i", metavar="queue_id", help="try one deferred message now")
    args = parser.parse_args(argv)
    cfg = Config.load(args.config_dir, check_support=False)
    try:
        return asyncio.run(run(cfg, args))
    except (OSError, TimeoutError) as exc:
        print(f"postqueue: fatal: cannot reach the queue at "
              f"{cfg.get('postbus_nats_url')}: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL, as postqueue when the mail system is down
