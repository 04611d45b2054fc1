"""postbus events: follow the queue's event stream from the terminal (no Postfix twin).

One line per event, as Postfix's log lines name the fields::

    2025-03-14 10:22:01.532 4BCD1234: delivered to=<bob@example.com>,
        relay=mx.example.com[192.0.2.1]:25, delay=0.42, dsn=2.0.0 (250 2.0.0 Ok)

``-j`` prints each event's JSON as recorded (one per line; see
:mod:`postbus.events` for the fields). ``--since`` starts that long ago (a
Postfix time: ``10m``, ``2h``, ``7d``), at a date (``2025-03-14T10:00``,
local time unless it says otherwise) or at the oldest event kept (``all``);
without it, only new events are shown. ``--kind`` and ``-i`` filter, ``-n``
stops after that many events, ``--no-follow`` when the events kept so far
are shown; otherwise Ctrl-C ends it. ``--dead-letter NAME`` shows the events
webhook NAME gave up on instead (from the oldest kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import signal
import sys
import time
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import ConsumerConfig, DeliverPolicy

from postbus import events
from postbus.bus import subjects as s
from postbus.bus.jetstream import connect, ensure_streams
from postbus.config.conv import ConfigError, parse_time
from postbus.config.loader import Config
from postbus.dead_letters import DeadLetter

EX_TEMPFAIL = 75
CONNECT_DEADLINE = 10.0  # seconds


def since(text: str, now: float | None = None) -> float:
    """Unix time to start at; 0 for the oldest event kept (``all``)."""
    text = text.strip()
    if text == "all":
        return 0.0
    now = time.time() if now is None else now
    try:
        return now - parse_time(text)
    except ConfigError:
        pass
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad time {text!r}: expected a duration (10m, 2h, 7d), a date or all") from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as the operator reads the clock
    return when.timestamp()


def _stamp(when: float) -> str:
    local = dt.datetime.fromtimestamp(when)
    return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def describe(event: events.Event) -> str:
    """The fields of one event, as a Postfix log line names them."""
    if isinstance(event, events.Received):
        # no recipients: an emitter that knew only the counts, not the envelope
        parts = [f"from=<{event.sender}>"] if event.recipients else []
        parts += [f"size={event.size}", f"nrcpt={event.nrcpt}"]
        parts += [f"client={event.client}"] if event.client else []
        parts += [f"message-id={event.message_id}"] if event.message_id else []
        return "received " + ", ".join(parts)
    if isinstance(event, events.Active):
        return f"active attempt={event.attempt}"
    if isinstance(event, events.RecipientEvent):
        parts = [f"to=<{event.recipient}>"] if event.recipient else []
        if event.orig_recipient and event.orig_recipient.lower() != event.recipient.lower():
            parts.append(f"orig_to=<{event.orig_recipient}>")
        parts += [f"relay={event.relay}"] if event.relay else []
        parts.append(f"delay={event.delay:g}")
        parts += [f"dsn={event.dsn}"] if event.dsn else []
        text = f"{event.kind} " + ", ".join(parts)
        return text + (f" ({event.reason})" if event.reason else "")
    if isinstance(event, events.AdminEvent):
        text = event.kind + (f" by {event.who}" if event.who else "")
        return text + (f" ({event.why})" if event.why else "")
    if isinstance(event, events.Removed):
        return "removed" + (f" ({event.reason})" if event.reason else "")
    return event.kind  # pragma: no cover - every kind is handled above


def event_line(msg: Msg, as_json: bool) -> str:
    if as_json:
        return msg.data.decode("utf-8", "replace")
    try:
        event = events.decode(msg.data)
    except events.EventError as exc:
        return f"{msg.subject}: unreadable event ({exc}): {msg.data[:200]!r}"
    return f"{_stamp(event.time)} {event.queue_id}: {describe(event)}"


def dead_letter_line(msg: Msg, as_json: bool) -> str:
    letter = DeadLetter.read(msg)
    if as_json:
        return letter.as_json().decode()
    event = letter.event if isinstance(letter.event, dict) else {}
    return (f"{_stamp(letter.time)} {event.get('queue_id') or 'NOQUEUE'}: webhook "
            f"{letter.webhook}: event {event.get('kind', '?')} {event.get('id', '')} given up "
            f"after {letter.attempts} attempts: {letter.error}")


async def follow(cfg: Config, args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    closing = False
    # connect() retries for ever (a role waits for NATS); a command gives up
    nc = await asyncio.wait_for(connect(cfg.get("postbus_nats_url"), "postbus events",
                                        connect_timeout=5, closing=lambda: closing),
                                CONNECT_DEADLINE)
    try:
        js = nc.jetstream()
        await ensure_streams(js, cfg.int("postbus_stream_replicas"))
        kinds = set(args.kind or [])
        if args.dead_letter:
            stream, subject = s.WEBHOOK_DEAD_STREAM, s.webhook_dead_subject(args.dead_letter)
            start: float | None = 0.0 if args.since is None else args.since
            line: Callable[[Msg, bool], str] = dead_letter_line
        else:
            one = len(kinds) == 1
            stream = s.EVENTS_STREAM
            subject = s.event_subject(next(iter(kinds))) if one else s.EVENT_SUBJECTS
            start, line = args.since, event_line
        config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        if start == 0.0:
            config.deliver_policy = DeliverPolicy.ALL
        elif start is not None:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = dt.datetime.fromtimestamp(start, dt.UTC)
        try:
            sub = await js.subscribe(subject, stream=stream, ordered_consumer=True, config=config)
        except Exception as exc:
            if args.dead_letter:
                return 0  # no webhook ever gave up: nothing to show
            raise OSError(f"cannot read {stream}: {exc}") from exc
        if args.no_follow:
            info = await sub.consumer_info()
            if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
                return 0  # nothing kept, nothing on its way
        shown = 0
        while not stop.is_set():
            try:
                msg = await sub.next_msg(timeout=0.5)
            except (NatsTimeout, TimeoutError):
                continue
            if _wanted(msg, kinds, args.queue_id, bool(args.dead_letter)):
                print(line(msg, args.json), flush=True)
                shown += 1
                if args.count and shown >= args.count:
                    break
            if args.no_follow and msg.metadata.num_pending == 0:
                break
        return 0
    finally:
        closing = True
        with contextlib.suppress(Exception):
            await nc.close()


def _wanted(msg: Msg, kinds: set[str], queue_id: str | None, dead: bool) -> bool:
    if dead or (not kinds and not queue_id):
        return True
    if kinds and events.kind_of(msg.subject) not in kinds:
        return False
    if queue_id:
        try:
            return events.decode(msg.data).queue_id == queue_id
        except events.EventError:
            return False
    return True


def _kinds(text: str) -> list[str]:
    kinds = [k for k in text.replace(",", " ").split() if k]
    for kind in kinds:
        if kind not in events.KINDS:
            raise argparse.ArgumentTypeError(
                f"unknown event kind {kind!r}; known: {', '.join(events.KINDS)}")
    return kinds


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="postbus events",
                                     description="Follow the queue's event stream.")
    parser.add_argument("-c", dest="config_dir")
    parser.add_argument("-j", "--json", action="store_true", help="one JSON event per line")
    parser.add_argument("-n", dest="count", type=int, default=0, metavar="COUNT",
                        help="stop after COUNT events")
    parser.add_argument("--since", type=since, metavar="WHEN",
                        help="start that long ago (10m, 2h, 7d), at a date, or all")
    parser.add_argument("--kind", type=_kinds, action="extend", metavar="KIND[,KIND]",
                        help="only these kinds: " + ", ".join(events.KINDS))
    parser.add_argument("-i", dest="queue_id", metavar="QUEUE_ID", help="only this message")
    parser.add_argument("--no-follow", action="store_true",
                        help="stop after the events kept so far")
    parser.add_argument("--dead-letter", metavar="NAME",
                        help="the events webhook NAME gave up on")
    args = parser.parse_args(argv)
    cfg = Config.load(args.config_dir, check_support=False)
    try:
        return asyncio.run(follow(cfg, args))
    except BrokenPipeError:  # `postbus events | head`
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (OSError, TimeoutError) as exc:
        why = str(exc) or f"no answer within {CONNECT_DEADLINE:g}s"
        print(f"postbus events: fatal: cannot reach the event stream at "
              f"{cfg.get('postbus_nats_url')}: {why}", file=sys.stderr)
        return EX_TEMPFAIL
