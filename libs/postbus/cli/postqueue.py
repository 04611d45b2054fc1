"""postbus postqueue: list (-p, -j) and flush (-f, -i, -s) the queue, as postqueue(1).

Listings are streamed (:mod:`postbus.queue.listing`): lines go out as the
queue is read, so the first comes at once however long the queue; the order
is the queue's, not arrival time (showq promises none either). Flushing is
a command the qmgr carries out (:mod:`postbus.queue.commands`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from typing import TextIO

from nats.errors import Error as NatsError

from postbus.config.loader import Config
from postbus.queue import admin, commands, corrupt
from postbus.queue.corrupt import CorruptMessage
from postbus.queue.entry import QueueEntry

S_LINE = "{:<11} {:>7} {:<20} {}"
L_LINE = "{:<17} {:>8} {:<19} {}"
STATUS = {"active": "*", "hold": "!"}
EX_USAGE, EX_UNAVAILABLE = 64, 69  # sysexits.h, as Postfix's postqueue
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


def format_head(long_ids: bool) -> str:
    return (L_LINE if long_ids else S_LINE).format(
        *(("----Queue ID-----", "--Size--", "---Arrival Time----", "--Sender/Recipient------")
          if long_ids else
          ("-Queue ID-", "--Size--", "----Arrival Time----", "-Sender/Recipient-------"))
    )


def format_total(size: int, count: int) -> str:
    return f"-- {size // 1024} Kbytes in {count} Request{'' if count == 1 else 's'}.\n"


def format_queue(
    entries: list[QueueEntry], long_ids: bool, broken: list[CorruptMessage] | None = None
) -> str:
    """The whole listing at once (what :func:`show` writes as it goes)."""
    broken = broken or []
    if not entries and not broken:
        return "Mail queue is empty\n"
    blocks = ["\n".join(format_entry(e, long_ids)) for e in entries]
    blocks += ["\n".join(format_corrupt(c, long_ids)) for c in broken]
    size = sum(e.size for e in entries) + sum(c.size for c in broken)
    return (format_head(long_ids) + "\n" + "".join(b + "\n\n" for b in blocks)
            + format_total(size, len(blocks)))


def as_json_line(entry: QueueEntry) -> str:
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


class Writer:
    """Output that goes out as it is made: the first lines of a long listing are
    on the terminal (or down the pipe) at once, the rest in blocks."""

    FLUSH_EVERY = 0.2  # seconds

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.flushed = 0.0

    def write(self, text: str) -> None:
        self.out.write(text)
        now = time.monotonic()
        if now - self.flushed >= self.FLUSH_EVERY:
            self.out.flush()
            self.flushed = now

    def close(self) -> None:
        self.out.flush()


async def show(bus: admin.Bus, out: Writer, long_ids: bool, as_json: bool) -> None:
    """postqueue -p / -j: every message as it is listed, then the corrupt queue."""
    count = size = 0
    async for entry in bus.queue.entries():
        if as_json:
            out.write(as_json_line(entry) + "\n")
            continue
        if not count:
            out.write(format_head(long_ids) + "\n")
        out.write("\n".join(format_entry(entry, long_ids)) + "\n\n")
        count, size = count + 1, size + entry.size
    for found in await corrupt.corrupt_messages(bus.js):
        if as_json:
            out.write(corrupt_json(found) + "\n")
            continue
        if not count:
            out.write(format_head(long_ids) + "\n")
        out.write("\n".join(format_corrupt(found, long_ids)) + "\n\n")
        count, size = count + 1, size + found.size
    if not as_json:
        out.write(format_total(size, count) if count else "Mail queue is empty\n")


async def flush(cfg: Config, args: argparse.Namespace) -> int:
    """postqueue -f, -i, -s: a command the qmgr carries out; Postfix's words when
    it cannot."""
    closing = False
    try:
        nc = await admin.reach(cfg, "postqueue", lambda: closing)
    except (OSError, TimeoutError, NatsError):
        return _fatal(EX_UNAVAILABLE, "Cannot flush mail queue - mail system is down")
    try:
        if args.s is not None:
            status = await commands.request(nc, commands.SEND_SITE, site=args.s)
            what = args.s
        elif args.i is not None:
            status = await commands.request(nc, commands.SEND_FILE, queue_id=args.i)
            what = args.i
        else:
            status = await commands.request(nc, commands.FLUSH)
            what = ""
    finally:
        closing = True
        await nc.close()
    if status == commands.OK:
        return 0
    if status == commands.BAD:
        return _fatal(EX_USAGE, f'Invalid request: "{what}"')
    if status == commands.DENY:
        return _fatal(EX_UNAVAILABLE, f'Flush service is not configured for destination "{what}"')
    return _fatal(EX_UNAVAILABLE, "Cannot flush mail queue - mail system is down")


def _fatal(code: int, text: str) -> int:
    print(f"postqueue: fatal: {text}", file=sys.stderr)
    return code


async def run(cfg: Config, args: argparse.Namespace) -> int:
    if not (args.p or args.j):
        return await flush(cfg, args)
    async with admin.open_queue(cfg, "postqueue") as bus:
        out = Writer(sys.stdout)
        try:
            await show(bus, out, cfg.bool("enable_long_queue_ids"), args.j)
        finally:
            out.close()
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
    mode.add_argument("-s", metavar="site",
                      help="try deferred mail for a destination in fast_flush_domains now")
    args = parser.parse_args(argv)
    cfg = Config.load(args.config_dir, check_support=False)
    try:
        return asyncio.run(run(cfg, args))
    except BrokenPipeError:  # postqueue -p | head
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, TimeoutError, NatsError) as exc:
        return _fatal(EX_UNAVAILABLE, "Queue report unavailable - mail system is down "
                      f"(connect to NATS at {cfg.get('postbus_nats_url')}: {exc})")
