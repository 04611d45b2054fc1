"""postbus sendmail: submit a message from standard input (≈ sendmail(1) + pickup(8)).

The message goes through the same cleanup as mail received over SMTP
(:mod:`postbus.cleanup`: the sender and recipients qualified with
``@$myorigin``, canonical maps, masquerading, virtual aliases; headers
rewritten in the local context, or the remote one with ``-G``;
message_drop_headers such as Bcc: removed; missing Message-Id:, Date: and
From: added), then straight into the queue through the same queue file
the SMTP server uses, so it is as durable as mail received over SMTP.
Recipients come from the command line, or from To:/Cc:/Bcc: with ``-t``.
When cleanup cannot finish (a table that cannot answer, an alias expansion
past its limits) nothing is queued and sendmail exits with EX_TEMPFAIL.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import logging
import os
import sys
import time

from postbus import tok822_tree
from postbus.cleanup import Cleanup, CleanupError, Context, MessageDiscarded, Origin, milter_submit
from postbus.cleanup.api import receive_overrides
from postbus.cleanup.content import header_lines, split_headers
from postbus.cleanup.headers import header_opts
from postbus.config.loader import Config
from postbus.delivery import Stats, log_delivery
from postbus.logging import setup_logging
from postbus.maps import context as maps_context
from postbus.milter import MilterSettings
from postbus.queue.admin import open_queue
from postbus.queue.entry import QueueEntry, Recipient
from postbus.queue.ids import new_queue_id

log = logging.getLogger("postbus.pickup")

EX_USAGE, EX_TEMPFAIL = 64, 75
EXTRACTED = frozenset({"To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc"})  # -t


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
    """The addresses of To:, Cc: and Bcc:, or only of the Resent- ones when there are any
    (≈ sendmail.c's output_header() for -t): as written, before cleanup."""
    plain: list[str] = []
    resent: list[str] | None = None
    for raw in header_lines(split_headers(content, 1 << 30).block):
        text = raw.decode("utf-8", "surrogateescape").replace("\r\n", "\n").rstrip("\n")
        opts = header_opts(text)
        if opts is None or opts.name not in EXTRACTED:
            continue
        tree = tok822_tree.parse(text[len(opts.name) + 1 :])
        found = [tok822_tree.internalize(addr.head) for addr in tok822_tree.addresses(tree)]
        if opts.resent:
            resent = (resent or []) + found
        elif resent is None:
            plain += found
    return plain if resent is None else resent


def wants_smtputf8(cfg: Config, sender: str, recipients: list[str], content: bytes) -> bool:
    """SMTPUTF8 autodetection for the sendmail class (smtputf8_autodetect_classes, as
    Postfix's cleanup does with CLEANUP_FLAG_AUTOUTF8): a UTF-8 envelope address or a
    header that is not ASCII asks for SMTPUTF8, as ``-SMTPUTF8`` does."""
    if not cfg.bool("smtputf8_enable") or "sendmail" not in [
            w.lower() for w in cfg.list("smtputf8_autodetect_classes")]:
        return False
    if not (sender.isascii() and all(r.isascii() for r in recipients)):
        return True
    return not split_headers(content, 1 << 30).block.isascii()


async def submit(cfg: Config, sender: str, recipients: list[str], content: bytes,
                 context: Context | None = "local", smtputf8: bool = False) -> str:
    """Cleanup, then the queue; raises CleanupError when the message must not be queued,
    MessageDiscarded when a DISCARD action dropped it. Header and body checks apply
    (unless receive_override_options has no_header_body_checks), naming the message
    with the queue ID it is then queued under."""
    long_ids = cfg.bool("enable_long_queue_ids")
    entry = QueueEntry(queue_id=new_queue_id(long_ids), sender=sender,
                       recipients=[Recipient(address) for address in recipients],
                       client_name="localhost", client_addr="127.0.0.1", protocol="sendmail",
                       smtputf8=smtputf8 or wants_smtputf8(cfg, sender, recipients, content))
    maps_context.configure(cfg.get("postbus_redis_url"))
    try:
        cleanup = Cleanup(cfg)
        entry.filter = cleanup.content_filter  # as pickup writes REC_TYPE_FILT
        qid = entry.queue_id
        build = await cleanup.message(entry, content, context=context, mapping=cleanup.mapping,
                                      filter=cleanup.filter, origin=Origin(origin="local"),
                                      bounce=True)
        milters = MilterSettings.from_config(cfg, "non_smtpd_milters")
        if milters and "no_milters" not in receive_overrides(cfg):
            edited = await milter_submit.inspect(milters, cleanup, entry, build(qid), context)
            build = lambda _qid: edited  # noqa: E731 - the milters saw this very content
    finally:
        await maps_context.aclose()
    async with open_queue(cfg, "sendmail") as store:
        qid = await store.queue.enqueue(entry, b"", long_ids, build=build, queue_id=qid)
    now = time.time()
    stats = Stats(entry.arrival_time, now, now)
    for rcpt in entry.recipients:  # rejected content: the qmgr sends the bounce
        if rcpt.state == "bounced":
            log_delivery(qid, rcpt, "none", stats, rcpt.dsn, "bounced", rcpt.reason,
                         transport="cleanup")
    return qid


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sendmail", add_help=False)
    parser.add_argument("-c", dest="config_dir")
    parser.add_argument("-f", "-r", dest="sender")
    parser.add_argument("-F", dest="full_name")
    parser.add_argument("-t", action="store_true", help="recipients from the headers")
    parser.add_argument("-G", action="store_true", dest="gateway",
                        help="gateway submission: headers in the remote rewriting context")
    parser.add_argument("-i", "-oi", action="store_true", dest="ignore_dots")
    parser.add_argument("-o", action="append", default=[], help="ignored sendmail options")
    parser.add_argument("-SMTPUTF8", action="store_true", dest="smtputf8",
                        help="the message requires SMTPUTF8")
    parser.add_argument("-B", "-N", "-R", "-V", "-X", dest="ignored", action="append")
    parser.add_argument("recipients", nargs="*")
    args, _ignored = parser.parse_known_args(argv)
    cfg = Config.load(args.config_dir)
    setup_logging(f"{cfg.get('syslog_name')}/pickup", cfg.get("myhostname"),
                  maillog_file=cfg.get("maillog_file"))
    content = read_message(sys.stdin.buffer.read(), dot_ends=not args.ignore_dots)
    user = getpass.getuser()
    sender = args.sender if args.sender is not None else user
    recipients = list(args.recipients)
    if args.t:
        recipients += header_recipients(content)
    if not recipients:
        print("sendmail: fatal: no recipients specified", file=sys.stderr)
        return EX_USAGE
    context: Context | None = "local"
    if args.gateway:
        context = Cleanup(cfg).header_context(local=False)
    try:
        qid = asyncio.run(submit(cfg, sender, recipients, content, context, args.smtputf8))
    except MessageDiscarded as exc:
        log.info("%s: uid=%d from=<%s>", exc, os.getuid(), user)
        return 0
    except CleanupError as exc:
        print(f"sendmail: fatal: message not accepted, try again later: {exc.reply}",
              file=sys.stderr)
        return EX_TEMPFAIL
    except (OSError, TimeoutError) as exc:
        print(f"sendmail: fatal: cannot queue the message: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    log.info("%s: uid=%d from=<%s>", qid, os.getuid(), user)
    return 0
