"""One milter connection and its state (≈ milter8.c).

Replies follow Postfix's internal form so that smtpd and cleanup map them as
Postfix does: ``None`` goes on, ``"4xx ..."``/``"5xx ..."`` is an SMTP
reply, ``"H<reason>"`` quarantines (hold queue), ``"D"`` discards, ``"S"``
shuts the session down. A milter that cannot be reached, times out, closes
or sends what the protocol does not allow is closed and answers every later
event with its milter_default_action reply (comm/conf error, as Postfix).
As Postfix does with libmilter, one connection is made per SMTP session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import struct
import time
from typing import Any, Protocol

from postbus import metrics
from postbus.milter import codec as c
from postbus.milter.settings import MilterSpec, protocol_version

log = logging.getLogger("postbus.milter")

Reply = str | None
# states (MILTER8_STAT_*)
ERROR, CLOSED, READY, ENVELOPE, MESSAGE, ACCEPT_CON, ACCEPT_MSG, REJECT_CON = range(1, 9)

_REPLY_LINE = re.compile(r"[45]\d\d([ -])")
# the metric children, looked up once (labels() takes a lock each time)
_TIMERS: dict[tuple[str, bytes], Any] = {}
_COUNTERS: dict[tuple[str, bytes, str], Any] = {}


class Editor(Protocol):
    """Where end-of-message modifications go (cleanup's side of milter8's call-backs)."""

    def add_header(self, name: str, space: str, value: str) -> None: ...
    def upd_header(self, index: int, name: str, space: str, value: str) -> None: ...
    def ins_header(self, index: int, name: str, space: str, value: str) -> None: ...
    def del_header(self, index: int, name: str) -> None: ...
    async def chg_from(self, address: str, args: str) -> None: ...
    async def add_rcpt(self, address: str, args: str) -> None: ...
    def del_rcpt(self, address: str) -> None: ...
    def repl_body(self, body: bytes) -> None: ...


def valid_reply(text: str) -> bool:
    """≈ milter8_valid_smtp_reply(): lines of ``[45]dd[ -]``, continuation marks right."""
    if not text or "\0" in text:
        return False
    lines = re.split(r"\r\n|\n", text)
    for n, line in enumerate(lines):
        m = _REPLY_LINE.match(line + (" " if len(line) == 3 else ""))
        if m is None or (m.group(1) == "-") != (n < len(lines) - 1):
            return False
    return True


class MilterError(Exception):
    """Communication failure; ``kind`` is the metric label."""

    def __init__(self, kind: str, warning: str) -> None:
        super().__init__(warning)
        self.kind = kind


class Milter:
    """One configured milter, for one SMTP session or one submission."""

    def __init__(self, spec: MilterSpec, logger: logging.Logger = log) -> None:
        self.log = logger  # the role's: Postfix logs these as smtpd or cleanup
        self.spec = spec
        self.name = spec.name
        self.state = CLOSED
        self.def_reply: Reply = None
        self.skip_event: bytes | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.version = self.actions = self.ev_mask = self.np_mask = 0
        self.symlists: dict[str, list[str]] = {}
        self.timeout = spec.command_timeout
        self.want_rcpt_rej = False
        self._sock: Any = None  # TCP only (TCP_QUICKACK)
        self.replacing = False  # between the first SMFIR_REPLBODY and the next reply

    # -- failures ------------------------------------------------------------------------

    def _close(self) -> None:
        if self.writer is not None:
            with contextlib.suppress(Exception):
                self.writer.transport.abort()
        self.reader = self.writer = None

    def comm_error(self, kind: str, warning: str) -> Reply:
        """≈ milter8_comm_error(): close, and answer with the default action from now on."""
        if warning:
            self.log.warning("milter %s: %s", self.name, warning)
        metrics.milter_errors.labels(self.name, kind).inc()
        self._close()
        action = self.spec.default_action.lower()
        self.def_reply = {
            "accept": None, "reject": "550 5.5.0 Service unavailable",
            "tempfail": "451 4.7.1 Service unavailable - try again later",
            "shutdown": "421 4.7.1 Service unavailable - try again later",
            "quarantine": "Hdefault_action",
        }.get(action, "451 4.3.5 Server configuration problem - try again later")
        self.state = ERROR
        return self.def_reply

    def conf_error(self, warning: str) -> Reply:
        """≈ milter8_conf_error(): a reply or request Postbus cannot take."""
        self.log.warning("milter %s: %s", self.name, warning)
        metrics.milter_errors.labels(self.name, "config").inc()
        self._close()
        action = self.spec.default_action.lower()
        self.def_reply = {
            "accept": None,
            "shutdown": "421 4.3.5 Server configuration problem - try again later",
            "quarantine": "Hdefault_action",
        }.get(action, "451 4.3.5 Server configuration problem - try again later")
        self.state = ERROR
        return self.def_reply

    # -- the wire --------------------------------------------------------------------------

    async def _send(self, data: bytes) -> None:
        """Write; wait only when the socket buffer is full (the next read waits anyway)."""
        assert self.writer is not None
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size() > 65536:
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()

    async def _read(self, event: bytes) -> tuple[bytes, bytes]:
        assert self.reader is not None
        name = c.EVENT_NAMES.get(event, "(unknown MTA event)")
        if self._sock is not None:
            # ACK the filter's replies at once: libmilter writes a modification and
            # the decision separately, and with Nagle on its side the decision would
            # wait for our delayed ACK (40 ms at end of message)
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        try:
            async with asyncio.timeout(self.timeout):
                head = await self.reader.readexactly(4)
        except TimeoutError:
            raise MilterError("timeout", f"can't read {name} reply packet header: "
                              "Connection timed out") from None
        except (asyncio.IncompleteReadError, OSError) as exc:
            raise MilterError("closed", f"can't read {name} reply packet header: "
                              f"{_why(exc)}") from None
        (length,) = struct.unpack("!I", head)
        if length < 1:
            raise MilterError("protocol", f"bad packet length: {length}")
        if length > c.MAX_PACKET:
            raise MilterError("protocol",
                              f"unreasonable packet length: {length} > {c.MAX_PACKET}")
        try:
            async with asyncio.timeout(self.timeout):
                body = await self.reader.readexactly(length)
        except TimeoutError:
            raise MilterError("timeout", "EOF while reading data: Connection timed out") \
                from None
        except (asyncio.IncompleteReadError, OSError) as exc:
            raise MilterError("closed", f"EOF while reading data: {_why(exc)}") from None
        return body[:1], body[1:]

    # -- connect and negotiate (milter8_connect) ------------------------------------------

    async def open(self) -> None:
        proto = protocol_version(self.spec.protocol)
        if proto is None:  # refused at start; kept for safety
            self.conf_error(f"bad protocol information: {self.spec.protocol}")
            return
        my_version, my_events = proto
        self.np_mask = c.NOSEND_MASK & ~my_events
        transport, _, endpoint = self.name.partition(":")
        try:
            async with asyncio.timeout(self.spec.connect_timeout):
                if transport == "inet":
                    host, _, port = endpoint.rpartition(":")
                    host = host.strip("[]")
                    self.reader, self.writer = await asyncio.open_connection(host, int(port))
                    self._sock = self.writer.get_extra_info("socket")
                else:
                    self.reader, self.writer = await asyncio.open_unix_connection(endpoint)
        except (OSError, TimeoutError, ValueError) as exc:
            why = "Connection timed out" if isinstance(exc, TimeoutError) else _why(exc)
            self.log.warning("connect to Milter service %s: %s", self.name, why)
            self.comm_error("connect", "")
            return
        try:
            await self._send(c.optneg(my_version, c.MY_ACTIONS, my_events))
            cmd, data = await self._read(c.OPTNEG)
            if cmd != c.OPTNEG:
                raise MilterError("protocol",
                                  f'unexpected reply "{cmd.decode("latin-1")}" in initial '
                                  "handshake")
            neg = c.parse_optneg(data)
        except (MilterError, c.ProtocolError, OSError, TimeoutError) as exc:
            self._fail(exc)
            return
        if neg.version > my_version:
            self.comm_error("protocol", f"protocol version {neg.version} conflict with MTA "
                            f"protocol version {my_version}")
            return
        if neg.actions & c.MY_ACTIONS != neg.actions:
            self.comm_error("protocol", f"request mask 0x{neg.actions:x} conflict with MTA "
                            f"request mask 0x{c.MY_ACTIONS:x}")
            return
        self.version, self.actions, self.ev_mask = neg.version, neg.actions, neg.protocol
        self.want_rcpt_rej = bool(self.ev_mask & c.P_RCPT_REJ)
        if neg.version < my_version:  # an older filter: send only what its version has
            for name, mask in c.EVENT_MASKS.items():
                if name.isdigit() and int(name) <= neg.version:
                    self.np_mask |= c.NOSEND_MASK & ~mask
                    break
        self.symlists = {stage: value.split() for stage, value in neg.symlists.items()}
        self.state, self.def_reply, self.skip_event = READY, None, None

    def _fail(self, exc: BaseException) -> Reply:
        if isinstance(exc, MilterError):
            return self.comm_error(exc.kind, str(exc))
        if isinstance(exc, c.ProtocolError):
            return self.comm_error("protocol", f"malformed packet: {exc}")
        if isinstance(exc, TimeoutError):
            return self.comm_error("timeout", "write error: Connection timed out")
        return self.comm_error("closed", f"write error: {_why(exc)}")

    # -- one event (milter8_event) -------------------------------------------------------

    async def event(self, event: bytes, skip_flag: int, skip_reply: bool,
                    macros: list[tuple[str, str]] | None, payload: bytes,
                    editor: Editor | None = None) -> Reply:
        if self.state == ERROR or self.writer is None:
            return self.def_reply
        if self.np_mask & skip_flag:  # not in this protocol version
            return self.def_reply
        if self.skip_event is not None:
            if event == self.skip_event:
                return self.def_reply
            self.skip_event = None
        started = time.perf_counter()
        try:
            out = c.macros(event, macros) if macros is not None else b""
            if self.ev_mask & skip_flag:  # the milter does not want this event
                if out:
                    await self._send(out)
                return self.def_reply
            await self._send(out + c.packet(event, payload))  # one write, one segment
            if skip_reply:
                return self.def_reply
            return await self._replies(event, editor, len(payload))
        except (MilterError, c.ProtocolError, OSError, TimeoutError) as exc:
            reply = self._fail(exc)
            if self.replacing and (reply is None or reply[0] not in "DS45"):
                reply = "421 4.7.0 Service unavailable"  # half a new body: not that message
            return reply
        finally:
            self.replacing = False
            self._timer(event).observe(time.perf_counter() - started)

    def _timer(self, event: bytes) -> Any:
        timer = _TIMERS.get((self.name, event))
        if timer is None:
            timer = _TIMERS[(self.name, event)] = metrics.milter_event_seconds.labels(
                self.name, c.EVENT_NAMES.get(event, "?")[6:].lower())
        return timer

    def _count(self, event: bytes, action: str) -> None:
        counter = _COUNTERS.get((self.name, event, action))
        if counter is None:
            counter = _COUNTERS[(self.name, event, action)] = metrics.milter_replies.labels(
                self.name, c.EVENT_NAMES.get(event, "?")[6:].lower(), action)
        counter.inc()

    async def _replies(self, event: bytes, editor: Editor | None, sent: int) -> Reply:
        in_connect = event in (c.CONNECT, c.HELO)
        body: list[bytes] | None = None
        body_done = False
        while True:
            cmd, data = await self._read(event)
            if body is not None and cmd != c.REPLBODY:
                assert editor is not None
                editor.repl_body(b"".join(body))
                body, body_done, self.replacing = None, True, False
            if cmd in (c.PROGRESS, c.CONTINUE, c.ACCEPT, c.DISCARD, c.REJECT, c.TEMPFAIL,
                       c.SHUTDOWN, c.SKIP) and data:
                # Postfix's text names the size of the event it sent (milter8_event()'s
                # data_len), not of the extra data: kept, for log tools' sake
                return self.comm_error("protocol", f"reply {c.REPLY_NAMES[cmd]} was "
                                       f"followed by {sent} data bytes")
            if cmd == c.PROGRESS:
                continue
            if cmd == c.CONTINUE:
                self._count(event, "continue")
                return self.def_reply
            if cmd == c.ACCEPT:
                self._count(event, "accept")
                self.state = ACCEPT_CON if in_connect else ACCEPT_MSG
                if in_connect:
                    self._close()
                return self.def_reply
            if cmd == c.DISCARD:
                if in_connect:
                    self.log.warning("milter %s: DISCARD action is not allowed for connect "
                                     "or helo", self.name)
                    return self.def_reply
                self._count(event, "discard")
                self.state = ACCEPT_MSG
                return "D"
            if cmd in (c.REJECT, c.TEMPFAIL, c.REPLYCODE):
                if cmd == c.REPLYCODE:
                    text = data[:-1] if data.endswith(b"\0") else data
                    reply = text.decode("utf-8", "surrogateescape")
                    if not valid_reply(reply):
                        return self.conf_error(f"malformed reply: {reply}")
                    reply = re.sub(r"%(.?)", lambda m: m.group(1) if m.group(1) == "%"
                                   else "", reply)  # sendmail format strings: %% is %
                    self._count(event, "replycode")
                elif cmd == c.REJECT:
                    reply = "550 5.7.1 Command rejected"
                    self._count(event, "reject")
                else:
                    reply = "451 4.7.1 Service unavailable - try again later"
                    self._count(event, "tempfail")
                if in_connect:
                    self._close()
                    self.state = REJECT_CON
                    self.def_reply = reply
                return reply
            if cmd == c.SHUTDOWN:
                self._count(event, "shutdown")
                self._close()
                self.state = REJECT_CON
                self.def_reply = "S"
                return "S"
            if cmd == c.QUARANTINE:
                reason = c.strings(data)[0] if data else ""
                self._count(event, "quarantine")
                self.def_reply = "H" + reason[:100]
                continue
            if cmd == c.SKIP:
                self._count(event, "skip")
                self.skip_event = event
                return self.def_reply
            if event == c.BODYEOB and editor is not None:
                if cmd == c.REPLBODY:
                    if body_done:
                        return self.conf_error("body replacement requests can't currently "
                                               "be mixed with other requests")
                    if body is None:
                        body, self.replacing = [], True
                        metrics.milter_edits.labels(self.name, "replbody").inc()
                    body.append(data)
                    continue
                bad = await self._edit(cmd, data, editor)
                if bad is not None:
                    return self.conf_error(bad)
                continue
            return self.comm_error("protocol", "unexpected filter response "
                                   f"{c.REPLY_NAMES.get(cmd, '(unknown filter reply)')} "
                                   f"after event {c.EVENT_NAMES.get(event, '?')}")

    async def _edit(self, cmd: bytes, data: bytes, editor: Editor) -> str | None:
        """One modification request; a warning when it is malformed (a conf error)."""
        space = "" if self.ev_mask & c.P_HDR_LEADSPC else " "
        if cmd == c.CHGHEADER:
            index, name, value = c.parse_index_header(data)
            index = index or 1  # Sendmail 8 compatibility
            if index < 1:
                return f"bad change header index: {index}"
            if not name:
                return "null change header name"
            if value:
                editor.upd_header(index, name, space, value)
            else:
                editor.del_header(index, name)
            action = "chgheader" if value else "delheader"
        elif cmd == c.ADDHEADER:
            name, value = c.strings(data, 2)
            editor.add_header(name, space, value)
            action = "addheader"
        elif cmd == c.INSHEADER:
            index, name, value = c.parse_index_header(data)
            if index + 1 < 1:
                return f"bad insert header index: {index}"
            editor.ins_header(index + 1, name, space, value)
            action = "insheader"
        elif cmd == c.CHGFROM:
            address, args = c.parse_args(data)
            await editor.chg_from(address, args)
            action = "chgfrom"
        elif cmd in (c.ADDRCPT, c.ADDRCPT_PAR):
            address, args = c.parse_args(data) if cmd == c.ADDRCPT_PAR \
                else (c.strings(data, 1)[0], "")
            await editor.add_rcpt(address, args)
            action = "addrcpt"
        elif cmd == c.DELRCPT:
            editor.del_rcpt(c.strings(data, 1)[0])
            action = "delrcpt"
        else:
            raise MilterError("protocol", "unexpected filter response "
                              f"{c.REPLY_NAMES.get(cmd, '(unknown filter reply)')} after "
                              "event SMFIC_BODYEOB")
        metrics.milter_edits.labels(self.name, action).inc()
        return None

    # -- end of session ------------------------------------------------------------------

    def abort(self) -> None:
        """End the transaction (buffered: the next event's write drains it)."""
        if self.state in (ENVELOPE, MESSAGE, ACCEPT_MSG) and self.writer is not None:
            try:
                self.writer.write(c.packet(c.ABORT))
            except OSError as exc:
                self._fail(exc)
                return
            self.state = ENVELOPE

    async def quit(self) -> None:
        if self.writer is not None and self.state in (ENVELOPE, MESSAGE, ACCEPT_MSG, READY):
            with contextlib.suppress(OSError, TimeoutError):
                await self._send(c.packet(c.QUIT))
        self._close()
        self.state, self.def_reply = CLOSED, None


def _why(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "Success" if not exc.partial else "Unexpected EOF"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or exc.__class__.__name__
