"""XFORWARD from a content filter (≈ smtpd.c's xforward_cmd(), smtpd_xforward.c).

A filter that re-injects mail (amavisd, our own smtpd_proxy_filter) tells
the downstream smtpd who the original client was. Only clients in
smtpd_authorized_xforward_hosts are offered the EHLO keyword and may use
the command; the attributes (NAME ADDR PORT PROTO HELO IDENT SOURCE) hold
until the end of the mail transaction. They are what the queue entry
records as the message's client (Postfix's log_client_* attributes), the
``client=`` line shows them as ``orig_client=`` (and IDENT as
``orig_queue_id=``), and SOURCE picks the header rewriting context; our
own Received: header still names the filter, the real client.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from postbus.cleanup import Context
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.match_lists import NetworkList, parse_network
from postbus.queue.entry import QueueEntry
from postbus.smtp import xtext

if TYPE_CHECKING:
    from ingress_smtpd.session import Session

PARAM = "smtpd_authorized_xforward_hosts"
KEYWORD = "XFORWARD NAME ADDR PROTO HELO SOURCE PORT IDENT"
UNAVAILABLE = "[UNAVAILABLE]"
_NEUTER = re.compile(r"[<>()\\\";@]")  # NEUTER_CHARACTERS: could break a header
_HOSTNAME = re.compile(r"^(?=.{1,255}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})"
                       r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$")
CLIENT_ATTRS = frozenset({"NAME", "ADDR", "PORT", "PROTO", "HELO"})


def authorized_hosts(cfg: Config) -> NetworkList | None:
    """smtpd_authorized_xforward_hosts: addresses, networks and tables of addresses;
    host names (which Postfix matches too) are refused rather than ignored."""
    for word in cfg.list(PARAM):
        word = word.lstrip("!")
        if parse_network(word) is None and (":" not in word or word.startswith("[")):
            raise ConfigError(f"host name {word} is not supported yet by Postbus "
                              "(addresses, networks and tables are)", parameter=PARAM)
    return NetworkList(cfg, PARAM) if cfg.list(PARAM) else None


@dataclass
class Forwarded:
    """The attributes XFORWARD gave, preset to "unknown" (≈ smtpd_xforward_preset())."""

    context: tuple[Context | None, bool]  # the session's header context, add_missing
    name: str = "unknown"
    addr: str = "unknown"
    port: str = "unknown"
    protocol: str = "unknown"
    helo: str | None = None
    ident: str | None = None
    source: str | None = None
    received: frozenset[str] = frozenset()  # the attribute names given so far

    @property
    def namaddr(self) -> str:
        return f"{self.name}[{self.addr}]" if self.addr != "unknown" else self.name


async def allowed(session: Session) -> bool:
    hosts = session.server.xforward_hosts
    return hosts is not None and await hosts.matches(session.client_addr)


async def ehlo_keyword(session: Session) -> tuple[str, ...]:
    """The EHLO line for an authorized client (after AUTH, as Postfix lists it)."""
    if "XFORWARD" in session.discard or not await allowed(session):
        return ()
    return (KEYWORD,)


async def do_xforward(session: Session, arg: str) -> bool:
    if session.sender is not None:
        await session.reply("503 5.5.1 Error: MAIL transaction in progress")
        return False
    if not arg.split():
        await session.reply("501 5.5.4 Syntax: XFORWARD attribute=value...")
        return False
    if not await allowed(session):
        await session.reply("550 5.7.0 Error: insufficient authorization")
        return False
    fwd = session.xforward or Forwarded((session.header_context, session.add_missing))
    given: set[str] = set()
    for item in arg.split():
        name, eq, raw = item.partition("=")
        if not eq or not raw:
            await session.reply("501 5.5.4 Error: attribute=value expected")
            return False
        if len(raw) > 255:
            await session.reply("501 5.5.4 Error: attribute value too long")
            return False
        value = "".join(c if c.isprintable() else "?" for c in xtext.decode(raw))
        error = _set(fwd, name.upper(), value, session.s.families)
        if error:
            await session.reply(error)
            return False
        given.add(name.upper())
    fwd.received |= given
    session.xforward = fwd
    if fwd.source is not None:  # SOURCE: the header rewriting context of what follows
        local = fwd.source == "local"
        session.header_context = session.server.cleanup.header_context(local)
        session.add_missing = session.header_context is not None or \
            session.s.always_add_headers
    session.conn.write("250 2.0.0 Ok")
    return True


def _set(fwd: Forwarded, name: str, value: str, families: tuple[bool, bool]) -> str:
    """One attribute, checked as Postfix checks it; the error reply, or ""."""
    unavailable = value == UNAVAILABLE
    if name == "NAME":
        value = "unknown" if unavailable else _NEUTER.sub("?", value)
        if not unavailable and not _HOSTNAME.match(value):
            return f"501 5.5.4 Bad NAME syntax: {value}"
        fwd.name = value
    elif name == "ADDR":
        if unavailable:
            fwd.addr = "unknown"
            return ""
        value = _NEUTER.sub("?", value)
        text = value[5:] if value[:5].lower() == "ipv6:" else value
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            return f"501 5.5.4 Bad ADDR syntax: {value}"
        if not families[ip.version == 6]:  # a family inet_protocols does not have
            return f"501 5.5.4 Bad ADDR syntax: {value}"
        fwd.addr = str(ip)
    elif name == "PORT":
        if not unavailable and not (value.isdigit() and len(value) <= 5):
            return f"501 5.5.4 Bad PORT syntax: {value}"
        fwd.port = "unknown" if unavailable else value
    elif name == "HELO":
        fwd.helo = None if unavailable else _NEUTER.sub("?", value)
    elif name == "PROTO":
        if not unavailable and len(value) > 64:
            return f"501 5.5.4 Bad PROTO syntax: {value}"
        fwd.protocol = "unknown" if unavailable else _NEUTER.sub("?", value)
    elif name == "IDENT":
        fwd.ident = "unknown" if unavailable else _NEUTER.sub("?", value)
    elif name == "SOURCE":
        word = "LOCAL" if unavailable else value.upper()
        if word not in ("LOCAL", "REMOTE"):
            return f"501 5.5.4 Bad SOURCE syntax: {value}"
        fwd.source = word.lower()
    else:
        return f"501 5.5.4 Bad XFORWARD attribute name: {name}"
    return ""


def reset(session: Session) -> None:
    """The end of a mail transaction (≈ smtpd_xforward_reset())."""
    fwd = getattr(session, "xforward", None)
    if fwd is not None:
        context, session.add_missing = fwd.context
        session.header_context = context
        session.xforward = None


def orig_fields(session: Session) -> str:
    """``, orig_queue_id=ID, orig_client=name[addr]`` for the ``client=`` line."""
    fwd = session.xforward
    if fwd is None:
        return ""
    out = f", orig_queue_id={fwd.ident}" if "IDENT" in fwd.received else ""
    if fwd.received & CLIENT_ATTRS:
        out += f", orig_client={fwd.namaddr}"
    return out


def apply(session: Session, entry: QueueEntry) -> None:
    """The queue entry's client as Postfix records it for logging and for its smtp
    client's XFORWARD (log_client_* attributes, log_ident, rewrite_context): the
    forwarded one when XFORWARD gave it (≈ FORWARD_NAME() and friends)."""
    peer = getattr(session.conn, "peer", None)
    entry.client_port = str(peer[1]) if peer and peer[1] else ""
    # SOURCE has already set the session's header context; "" is local, as in Postfix's qmgr
    entry.rewrite_context = "" if session.header_context == "local" else "remote"
    fwd = session.xforward
    if fwd is None:
        return
    if fwd.ident is not None:
        entry.log_ident = fwd.ident
    if not fwd.received & CLIENT_ATTRS:
        return
    entry.client_name, entry.client_addr = fwd.name, fwd.addr
    entry.helo, entry.protocol = fwd.helo or "", fwd.protocol
    entry.client_port = fwd.port
