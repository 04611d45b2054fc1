"""The Sendmail milter protocol on the wire (≈ the constants of libmilter's mfdef.h and
milter8.c's packet code).

A packet is a 4-byte network-order length (the command byte included), one
command byte and its data. Strings are NUL-terminated; the lengths, masks
and indexes of OPTNEG, CHGHEADER and INSHEADER are 32-bit network order;
the connect port is 16-bit. Everything here is pure: the client does the I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# -- MTA to filter (SMFIC_*) -------------------------------------------------------------
ABORT, BODY, CONNECT, MACRO, BODYEOB = b"A", b"B", b"C", b"D", b"E"
HELO, QUIT_NC, HEADER, MAIL, EOH = b"H", b"K", b"L", b"M", b"N"
OPTNEG, QUIT, RCPT, DATA, UNKNOWN = b"O", b"Q", b"R", b"T", b"U"

# -- filter to MTA (SMFIR_*) -------------------------------------------------------------
ADDRCPT, DELRCPT, ADDRCPT_PAR, SHUTDOWN = b"+", b"-", b"2", b"4"
ACCEPT, REPLBODY, CONTINUE, DISCARD = b"a", b"b", b"c", b"d"
CHGFROM, CONNFAIL, ADDHEADER, INSHEADER = b"e", b"f", b"h", b"i"
SETSYMLIST, CHGHEADER, PROGRESS, QUARANTINE = b"l", b"m", b"p", b"q"
REJECT, SKIP, TEMPFAIL, REPLYCODE = b"r", b"s", b"t", b"y"

REPLY_NAMES = {
    ADDRCPT: "SMFIR_ADDRCPT", DELRCPT: "SMFIR_DELRCPT", ADDRCPT_PAR: "SMFIR_ADDRCPT_PAR",
    SHUTDOWN: "SMFIR_SHUTDOWN", ACCEPT: "SMFIR_ACCEPT", REPLBODY: "SMFIR_REPLBODY",
    CONTINUE: "SMFIR_CONTINUE", DISCARD: "SMFIR_DISCARD", CHGFROM: "SMFIR_CHGFROM",
    CONNFAIL: "SMFIR_CONN_FAIL", ADDHEADER: "SMFIR_ADDHEADER", INSHEADER: "SMFIR_INSHEADER",
    SETSYMLIST: "SMFIR_SETSYMLIST", CHGHEADER: "SMFIR_CHGHEADER", PROGRESS: "SMFIR_PROGRESS",
    QUARANTINE: "SMFIR_QUARANTINE", REJECT: "SMFIR_REJECT", SKIP: "SMFIR_SKIP",
    TEMPFAIL: "SMFIR_TEMPFAIL", REPLYCODE: "SMFIR_REPLYCODE",
}
EVENT_NAMES = {
    CONNECT: "SMFIC_CONNECT", HELO: "SMFIC_HELO", MAIL: "SMFIC_MAIL", RCPT: "SMFIC_RCPT",
    DATA: "SMFIC_DATA", HEADER: "SMFIC_HEADER", EOH: "SMFIC_EOH", BODY: "SMFIC_BODY",
    BODYEOB: "SMFIC_BODYEOB", UNKNOWN: "SMFIC_UNKNOWN", OPTNEG: "SMFIC_OPTNEG",
}

# -- actions the filter may ask for (SMFIF_*) --------------------------------------------
F_ADDHDRS, F_CHGBODY, F_ADDRCPT, F_DELRCPT = 0x01, 0x02, 0x04, 0x08
F_CHGHDRS, F_QUARANTINE, F_CHGFROM, F_ADDRCPT_PAR, F_SETSYMLIST = 0x10, 0x20, 0x40, 0x80, 0x100
#: what Postfix offers (milter8_connect()'s my_actions)
MY_ACTIONS = (F_ADDHDRS | F_ADDRCPT | F_DELRCPT | F_CHGHDRS | F_CHGBODY | F_QUARANTINE
              | F_CHGFROM | F_ADDRCPT_PAR | F_SETSYMLIST)

# -- protocol flags (SMFIP_*) ------------------------------------------------------------
P_NOCONNECT, P_NOHELO, P_NOMAIL, P_NORCPT = 0x1, 0x2, 0x4, 0x8
P_NOBODY, P_NOHDRS, P_NOEOH, P_NR_HDR = 0x10, 0x20, 0x40, 0x80
P_NOUNKNOWN, P_NODATA, P_SKIP, P_RCPT_REJ = 0x100, 0x200, 0x400, 0x800
P_NR_CONN, P_NR_HELO, P_NR_MAIL, P_NR_RCPT = 0x1000, 0x2000, 0x4000, 0x8000
P_NR_DATA, P_NR_UNKN, P_NR_EOH, P_NR_BODY = 0x10000, 0x20000, 0x40000, 0x80000
P_HDR_LEADSPC = 0x100000
P_NOHREPL = P_NR_HDR
P_NOREPLY_MASK = (P_NR_CONN | P_NR_HELO | P_NR_MAIL | P_NR_RCPT | P_NR_DATA | P_NR_UNKN
                  | P_NR_HDR | P_NR_EOH | P_NR_BODY)
NOSEND_MASK = (P_NOCONNECT | P_NOHELO | P_NOMAIL | P_NORCPT | P_NOBODY | P_NOHDRS | P_NOEOH
               | P_NOUNKNOWN | P_NODATA)

V2_MASK = P_NOCONNECT | P_NOHELO | P_NOMAIL | P_NORCPT | P_NOBODY | P_NOHDRS | P_NOEOH
V3_MASK = V2_MASK | P_NOUNKNOWN
V4_MASK = V3_MASK | P_NODATA
V6_MASK = V4_MASK | P_SKIP | P_RCPT_REJ | P_NOREPLY_MASK | P_HDR_LEADSPC
#: milter_protocol words: the events each version may be sent (milter8_event_masks)
EVENT_MASKS = {"6": V6_MASK, "4": V4_MASK, "3": V3_MASK, "2": V2_MASK,
               "no_header_reply": P_NOHREPL}
VERSIONS = {"2": 2, "3": 3, "4": 4, "6": 6}

# -- the macro stages of SETSYMLIST (SMFIM_*) --------------------------------------------
STAGES = ("connect", "helo", "mail", "rcpt", "data", "eom", "eoh")

#: the largest packet taken from a filter (Postfix: XXX_MAX_DATA is INT_MAX / 2; we bound
#: memory more tightly, far above any real reply)
MAX_PACKET = 64 * 1024 * 1024
#: body chunk size (MILTER_CHUNK_SIZE)
CHUNK = 65535

FAMILY_INET, FAMILY_INET6, FAMILY_UNIX, FAMILY_UNKNOWN = b"4", b"6", b"L", b"U"


class ProtocolError(Exception):
    """A packet the filter should not have sent."""


def packet(cmd: bytes, data: bytes = b"") -> bytes:
    return struct.pack("!I", len(data) + 1) + cmd + data


def cstr(*values: str) -> bytes:
    return b"".join(v.encode("utf-8", "surrogateescape") + b"\0" for v in values)


def optneg(version: int, actions: int, protocol: int) -> bytes:
    return packet(OPTNEG, struct.pack("!III", version, actions, protocol))


def macros(event: bytes, pairs: list[tuple[str, str]]) -> bytes:
    return packet(MACRO, event + cstr(*(x for pair in pairs for x in pair)))


def connect(hostname: str, family: bytes, port: int, address: str) -> bytes:
    if family == FAMILY_UNKNOWN:
        return packet(CONNECT, cstr(hostname) + family)
    return packet(CONNECT, cstr(hostname) + family + struct.pack("!H", port) + cstr(address))


def strings(data: bytes, count: int | None = None) -> list[str]:
    """The NUL-terminated strings of ``data`` (exactly ``count`` when given)."""
    if data and not data.endswith(b"\0"):
        raise ProtocolError("string not terminated")
    parts = [p.decode("utf-8", "surrogateescape") for p in data[:-1].split(b"\0")] \
        if data else []
    if count is not None and len(parts) != count:
        raise ProtocolError(f"expected {count} strings, got {len(parts)}")
    return parts


@dataclass
class Negotiated:
    version: int
    actions: int
    protocol: int
    symlists: dict[str, str]


def parse_optneg(data: bytes) -> Negotiated:
    if len(data) < 12:
        raise ProtocolError("short OPTNEG reply")
    version, actions, protocol = struct.unpack("!III", data[:12])
    symlists: dict[str, str] = {}
    rest = data[12:]
    while rest:  # secondary negotiation: per-stage macro lists
        if len(rest) < 5:
            raise ProtocolError("short macro list")
        (stage,) = struct.unpack("!I", rest[:4])
        end = rest.find(b"\0", 4)
        if end < 0:
            raise ProtocolError("macro list not terminated")
        if 0 <= stage < len(STAGES):
            symlists[STAGES[stage]] = rest[4:end].decode("ascii", "replace")
        rest = rest[end + 1:]
    return Negotiated(version, actions, protocol, symlists)


def parse_index_header(data: bytes) -> tuple[int, str, str]:
    """CHGHEADER and INSHEADER: index, name, value."""
    if len(data) < 4:
        raise ProtocolError("short header edit")
    (index,) = struct.unpack("!i", data[:4])
    name, value = strings(data[4:], 2)
    return index, name, value


def parse_args(data: bytes) -> tuple[str, str]:
    """CHGFROM and ADDRCPT_PAR: an address and optional ESMTP arguments."""
    parts = strings(data)
    if not 1 <= len(parts) <= 2:
        raise ProtocolError("bad address arguments")
    return parts[0], parts[1] if len(parts) > 1 else ""
