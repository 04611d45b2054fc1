"""Every milter of one list, event by event (≈ milter.c and milter8.c's *_event()).

Each event goes to the milters in order until one gives a reply; the
message goes to each in turn with the edits of those before it applied,
as Postfix's cleanup re-reads its queue file. Macros are looked up per
event from the caller's :data:`Lookup` (smtpd's or cleanup's view of the
session), then milter_macro_defaults; a name with no value is not sent.
A milter's SETSYMLIST lists replace the configured ones for that milter.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable

from postbus.milter import codec as c
from postbus.milter.client import (
    ACCEPT_CON,
    ACCEPT_MSG,
    ENVELOPE,
    ERROR,
    MESSAGE,
    READY,
    REJECT_CON,
    Editor,
    Milter,
    Reply,
)
from postbus.milter.settings import MilterSettings

log = logging.getLogger("postbus.milter")

#: a macro's value now, None when it has none
Lookup = Callable[[str], str | None]

_SKIP_CONN = (ERROR, ACCEPT_CON, REJECT_CON)
_SKIP_MSG = (*_SKIP_CONN, ACCEPT_MSG)


class Milters:
    """The milters of one SMTP session (or one non-SMTP submission)."""

    def __init__(self, settings: MilterSettings, lookup: Lookup,
                 logger: logging.Logger = log) -> None:
        self.settings = settings
        self.lookup = lookup
        self.milters = [Milter(spec, logger) for spec in settings.milters]

    def macros(self, milter: Milter, stage: str) -> list[tuple[str, str]]:
        names = milter.symlists.get(stage)
        if names is None:
            names = self.settings.macros.get(stage, [])
        out: list[tuple[str, str]] = []
        for name in names:
            value = self.value(name)
            if value is not None:
                out.append((name, value))
        return out

    def value(self, name: str) -> str | None:
        s = self.settings
        if name == "{daemon_name}":
            return s.daemon_name
        if name == "v":
            return s.macro_v
        if name == "j":
            return s.myhostname
        value = self.lookup(name)
        if value is None:
            value = s.macro_defaults.get(name)
        return value

    # -- SMTP events ---------------------------------------------------------------------

    async def connect(self, name: str, addr: str, port: int) -> Reply:
        """Connect every milter, then the connect event (≈ milter_conn_event())."""
        for m in self.milters:
            if m.state in (ERROR, READY) or m.writer is not None:
                continue
            await m.open()
        for m in self.milters:
            if m.state == ERROR:
                reply = m.def_reply
            else:
                m.state = ENVELOPE
                if name == "unknown" and addr != "unknown":
                    name = f"[{addr}]"
                family = c.FAMILY_INET6 if ":" in addr else c.FAMILY_INET
                if addr == "unknown":
                    family = c.FAMILY_UNKNOWN
                payload = c.cstr(name) + family
                if family != c.FAMILY_UNKNOWN:
                    payload += struct.pack("!H", port) + c.cstr(addr)
                reply = await m.event(c.CONNECT, c.P_NOCONNECT, bool(m.ev_mask & c.P_NR_CONN),
                                      self.macros(m, "connect"), payload)
            if reply is not None:
                return reply
        return None

    async def helo(self, helo: str) -> Reply:
        return await self._each(c.HELO, c.P_NOHELO, c.P_NR_HELO, "helo", c.cstr(helo),
                                (ERROR, ACCEPT_CON, REJECT_CON))

    async def mail(self, args: list[str]) -> Reply:
        return await self._each(c.MAIL, c.P_NOMAIL, c.P_NR_MAIL, "mail", c.cstr(*args),
                                _SKIP_CONN, need=ENVELOPE)

    async def rcpt(self, args: list[str], rejected: bool = False) -> Reply:
        """``rejected``: smtpd's restrictions already refused it; only milters that asked
        for rejected recipients (SMFIP_RCPT_REJ) see it, and their reply is not used."""
        reply = await self._each(c.RCPT, c.P_NORCPT, c.P_NR_RCPT, "rcpt", c.cstr(*args),
                                 _SKIP_MSG, need=ENVELOPE, rejected=rejected)
        return None if rejected else reply

    async def data(self) -> Reply:
        return await self._each(c.DATA, c.P_NODATA, c.P_NR_DATA, "data", b"", _SKIP_MSG,
                                need=ENVELOPE)

    async def unknown(self, command: str) -> Reply:
        return await self._each(c.UNKNOWN, c.P_NOUNKNOWN, c.P_NR_UNKN, "unknown",
                                c.cstr(command), _SKIP_MSG, need=ENVELOPE)

    def other(self) -> Reply:
        """A reply that persists (a rejected connection) for commands milters never see."""
        for m in self.milters:
            if m.def_reply is not None:
                return m.def_reply
        return None

    async def _each(self, event: bytes, skip_flag: int, nr_flag: int, stage: str,
                    payload: bytes, skip_states: tuple[int, ...], *, need: int = 0,
                    rejected: bool = False) -> Reply:
        for m in self.milters:
            if rejected and not m.want_rcpt_rej:
                continue
            if m.state in skip_states or (need and m.state != need):
                reply = m.def_reply
            else:
                reply = await m.event(event, skip_flag, bool(m.ev_mask & nr_flag),
                                      self.macros(m, stage), payload)
            if reply is not None:
                return reply
        return None

    # -- the message (milter8_message) -----------------------------------------------------

    async def message(self, content: Callable[[], tuple[list[tuple[str, str]], bytes]],
                      editor: Editor) -> Reply:
        """Headers, end of headers, body and end of message to each milter; ``content``
        gives the message as the edits so far left it: the headers a milter may see
        (our own Received: is hidden, as Postfix's auto_hdrs), name and value with the
        continuation lines joined by ``\\n``, and the body after the empty line."""
        for m in self.milters:
            if m.state in _SKIP_MSG or m.state != ENVELOPE:
                reply = m.def_reply
            else:
                saved = (m.def_reply, m.skip_event)
                reply = await self._message(m, *content(), editor)
                if m.state != ERROR:  # Postfix's cleanup has a copy: smtpd's stays as it was
                    m.state, (m.def_reply, m.skip_event) = ENVELOPE, saved
            if reply is not None:
                return reply
        return None

    async def _message(self, m: Milter, headers: list[tuple[str, str]], body: bytes,
                       editor: Editor) -> Reply:
        m.state = MESSAGE
        m.timeout = m.spec.content_timeout
        eoh, eod = self.macros(m, "eoh"), self.macros(m, "eom")
        try:
            reply = await self._content(m, headers, body, eoh, eod, editor)
        finally:
            m.timeout = m.spec.command_timeout
        if m.state in (MESSAGE, ACCEPT_MSG):
            m.state = ENVELOPE
        return reply

    async def _content(self, m: Milter, headers: list[tuple[str, str]], body: bytes,
                       eoh: list[tuple[str, str]], eod: list[tuple[str, str]],
                       editor: Editor) -> Reply:
        def done() -> bool:
            return m.state != MESSAGE

        reply: Reply = None
        leadspc = bool(m.ev_mask & c.P_HDR_LEADSPC)
        if not m.ev_mask & c.P_NOHDRS:
            nr = bool(m.ev_mask & c.P_NOHREPL)
            for name, value in headers:
                if not leadspc and value.startswith(" "):
                    value = value[1:]
                reply = await m.event(c.HEADER, c.P_NOHDRS, nr, eoh, c.cstr(name, value))
                if done() or reply is not None:
                    return reply
        if not m.ev_mask & c.P_NOEOH:
            reply = await m.event(c.EOH, c.P_NOEOH, bool(m.ev_mask & c.P_NR_EOH), eoh, b"")
            if done() or reply is not None:
                return reply
        if not m.ev_mask & c.P_NOBODY:
            nr = bool(m.ev_mask & c.P_NR_BODY)
            for start in range(0, len(body), c.CHUNK):
                reply = await m.event(c.BODY, c.P_NOBODY, nr, eod, body[start:start + c.CHUNK])
                if done() or reply is not None:
                    return reply
                await asyncio.sleep(0)
        return await m.event(c.BODYEOB, 0, False, eod, b"", editor)

    # -- the end ---------------------------------------------------------------------------

    def abort(self) -> None:
        for m in self.milters:
            m.abort()

    async def disconnect(self) -> None:
        for m in self.milters:
            await m.quit()
