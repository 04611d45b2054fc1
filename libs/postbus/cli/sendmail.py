"""postbus sendmail: submit a message from standard input (≈ sendmail(1) + pickup(8)).

The message goes straight into the queue through the same QueueFile the
SMTP server uses, so it is as durable as mail received over SMTP.
Recipients come from the command line, or from To:/Cc:/Bcc: with ``-t``.
"""

from __future__ import annotations

import argparse
import asyncio
import email.utils
import getpass
import logging
import os
import sys
import time
from email.parser import BytesHeaderParser

from postbus.config.loader import Config
from postbus.logging import setup_logging
from postbus.queue.admin import open_queue
from postbus.queue.entry import QueueEntry, Recipient

log = logging.getLogger("postbus.pickup")

EX_USAGE, EX_TEMPFAIL = 64, 75


def read_message(stream: bytes, dot_ends: bool) -> bytes:
    """Normalise line endings to CRLF; without -i a lone "." line ends input."""
    lines = stream.splitlines()
    out: list[bytes] = []
    for line in lines:
        if dot_ends and line == b".":
            break
        out.append(line)
    return b"\r\n".join(out) + b"\r\n"


def header_recipients(content: bytes) -> list[str]:
    headers = BytesHeaderParser().parsebytes(content)
    fields = headers.get_all("To", []) + headers.get_all("Cc", []) + headers.get_all("Bcc", [])
    return [addr for _, addr in email.utils.getaddresses(fields) if addr]


def strip_bcc(content: bytes) -> bytes:
    head, sep, body = content.partition(b"\r\n\r\n")
    kept: list[bytes] = []
    skipping = False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                kept.append(line)
            continue
        skipping = line.lower().startswith(b"bcc:")
        if not skipping:
            kept.append(line)
    return b"\r\n".join(kept) + sep + body


def add_missing_headers(content: bytes, sender: str, cfg: Config, queue_hint: str) -> bytes:
    headers = BytesHeaderParser().parsebytes(content)
    extra: list[str] = []
    if headers["From"] is None:
        extra.append(f"From: {sender}")
    if headers["Date"] is None:
        extra.append(f"Date: {email.utils.formatdate(localtime=True)}")
    if headers["Message-ID"] is None:
        stamp = time.strftime("%Y%m%d%H%M%S")
        extra.append(f"Message-Id: <{stamp}.{queue_hint}@{cfg.get('myhostname')}>")
    if not extra:
        return content
    return ("\r\n".join(extra) + "\r\n").encode() + content


async def submit(cfg: Config, sender: str, recipients: list[str], content: bytes) -> str:
    async with open_queue(cfg, "sendmail") as store:
        entry = QueueEntry(
            queue_id="",
            sender=sender,
            recipients=[Recipient(address=r, orig_rcpt=r) for r in recipients],
            client_name="localhost",
            client_addr="127.0.0.1",
            protocol="sendmail",
        )
        return await store.queue.enqueue(entry, content, cfg.bool("enable_long_queue_ids"))


def qualify(address: str, cfg: Config) -> str:
    """Bare user names get @$myorigin appended, as Postfix's cleanup does."""
    return address if "@" in address or not address else f"{address}@{cfg.get('myorigin')}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sendmail", add_help=False)
    parser.add_argument("-c", dest="config_dir")
    parser.add_argument("-f", "-r", dest="sender")
    parser.add_argument("-F", dest="full_name")
    parser.add_argument("-t", action="store_true", help="recipients from the headers")
    parser.add_argument("-i", "-oi", action="store_true", dest="ignore_dots")
    parser.add_argument("-o", action="append", default=[], help="ignored sendmail options")
    parser.add_argument("-B", "-N", "-R", "-V", "-X", dest="ignored", action="append")
    parser.add_argument("recipients", nargs="*")
    args, _ignored = parser.parse_known_args(argv)
    cfg = Config.load(args.config_dir)
    setup_logging(f"{cfg.get('syslog_name')}/pickup", cfg.get("myhostname"),
                  maillog_file=cfg.get("maillog_file"))
    content = read_message(sys.stdin.buffer.read(), dot_ends=not args.ignore_dots)
    user = getpass.getuser()
    sender = qualify(args.sender if args.sender is not None else user, cfg)
    recipients = [qualify(r, cfg) for r in args.recipients]
    if args.t:
        recipients += [qualify(r, cfg) for r in header_recipients(content)]
        content = strip_bcc(content)
    if not recipients:
        print("sendmail: fatal: no recipients specified", file=sys.stderr)
        return EX_USAGE
    content = add_missing_headers(content, sender, cfg, str(os.getpid()))
    try:
        qid = asyncio.run(submit(cfg, sender, recipients, content))
    except (OSError, TimeoutError) as exc:
        print(f"sendmail: fatal: cannot queue the message: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    log.info("%s: uid=%d from=<%s>", qid, os.getuid(), user)
    return 0
