"""One delivery status notification, composed as Postfix's bounce(8) writes it
(≈ bounce_notify_util.c, with post_mail's Received: and Date: and cleanup's
Message-Id:).

A notification is a multipart/report (RFC 3464) of three parts: a
text/plain part with the template's boiler-plate (not in postmaster
copies) and one wrapped ``<address>: reason`` paragraph per recipient; a
message/delivery-status part with the per-message fields and one block
per recipient; and the message itself, whole or its headers only (RET=HDRS,
or when it is larger than bounce_size_limit). Long report lines are
wrapped at 79 columns with a 4-space indent, as line_wrap() does.

Everything here is a pure function of its inputs: which recipients a
notice names and who receives it is decided in :mod:`qmgr.notices`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from postbus.bounce_template import BounceTemplate
from postbus.mail_date import mail_date

CRLF = "\r\n"
LENGTH = 79
INDENT = 4
_SPACE = b" \t\n\r\v\f"
_ATOM_SPECIALS = " \t\r\n()<>@,;:\\\".[]"


@dataclass(frozen=True)
class Row:
    """One recipient's lines in a report, in the terms of Postfix's bounce logs."""

    address: str  # the final recipient, local part quoted
    action: str  # failed, delayed, delivered, relayed, expanded
    status: str  # enhanced status code
    reason: str  # the human-readable text
    orig_addr: str = ""  # the address before rewriting, when it differs
    dsn_orcpt: str = ""  # "type;address" from RCPT ... ORCPT=
    mta: str = ""  # the remote MTA that answered (a DNS name or address)
    dtype: str = ""  # diagnostic type of dtext ("smtp"), when the peer said it
    dtext: str = ""


@dataclass(frozen=True)
class Original:
    """What a report needs of the message it reports on."""

    queue_id: str
    sender: str  # quoted; MAILER-DAEMON@$myhostname for the null sender
    arrival: float
    content: bytes
    env_id: str = ""
    smtputf8: bool = False  # the message asked for SMTPUTF8
    message_id: str = ""


@dataclass(frozen=True)
class Style:
    """The configuration a report reads."""

    myhostname: str
    mail_name: str
    encoding: str | None  # MIME encoding of the report: "8bit", "7bit" or None
    bounce_size_limit: int
    maximal_queue_lifetime: int  # seconds, for Will-Retry-Until
    threaded: bool = False  # enable_threaded_bounces


@dataclass(frozen=True)
class Report:
    """One notification: its template, whom it is for, and what it says."""

    template: BounceTemplate
    sender: tuple[str, ...]  # the From: header's lines, its addresses qualified
    to: str  # the To: address, quoted and qualified
    postmaster: bool  # a postmaster copy: its subject, no boiler-plate
    rows: tuple[Row, ...]
    headers_only: bool  # return the message headers only (RET=HDRS)
    text: tuple[str, ...] = ()  # the expanded boiler-plate


def line_wrap(text: str, length: int = LENGTH, indent: int = INDENT) -> list[str]:
    """Break ``text`` before the word that would pass ``length`` octets; lines after
    the first are indented by ``indent`` (≈ line_wrap() with a positive indent)."""
    raw = text.encode("utf-8", "surrogateescape")
    out: list[bytes] = []
    size = len(raw)
    curr_indent, curr_len = 0, length
    start = word = 0
    while True:
        next_space = word
        while next_space < size and raw[next_space] not in b" \t":
            next_space += 1
        if word > start and next_space - start > curr_len:
            out.append(b" " * curr_indent + raw[start:word].rstrip(_SPACE))
            while word < size and raw[word] in _SPACE:
                word += 1
            if start == 0:
                curr_indent += indent
                curr_len -= indent
            start = word
        if next_space >= size:
            break
        word = next_space + 1
    out.append(b" " * curr_indent + raw[start:].rstrip(_SPACE))
    return [line.decode("utf-8", "surrogateescape") for line in out]


def _address_type(address: str, original: Original) -> str:
    """``utf-8`` for a non-ASCII address of an SMTPUTF8 message, else ``rfc822``."""
    return "utf-8" if original.smtputf8 and not address.isascii() else "rfc822"


def _returned(content: bytes, headers_only: bool) -> list[bytes]:
    """The message's lines, or its header lines (up to the first that is neither
    a header nor a continuation), without line ends."""
    lines = content.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    if not headers_only:
        return lines
    kept: list[bytes] = []
    for line in lines:
        if not (line[:1] in (b" ", b"\t") or _is_header(line)):
            break
        kept.append(line)
    return kept


def _is_header(line: bytes) -> bool:
    """``Name:`` with a name of printable ASCII and no blanks inside (≈ is_header())."""
    colon = line.find(b":")
    if colon <= 0:
        return False
    name = line[:colon].rstrip(b" \t")
    return bool(name) and all(33 <= c <= 126 for c in name)


def compose(report: Report, original: Original, style: Style, new_id: str, now: float) -> bytes:
    """The notification as queued under ``new_id`` at time ``now``."""
    tpl = report.template
    date = mail_date(now)
    boundary = f"{original.queue_id}.{int(now)}/{style.myhostname}"
    mail_name = "".join("-" if ch in _ATOM_SPECIALS else ch for ch in style.mail_name)
    encoding = style.encoding
    eight_bit = encoding is not None and encoding != "7bit"
    stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime(now))

    out = [
        f"Received: by {style.myhostname} ({style.mail_name})",
        f"\tid {new_id}; {date}",
        f"Date: {date}",
        *report.sender,
        "Subject: " + (tpl.postmaster_subject if report.postmaster and tpl.postmaster_subject
                       else tpl.subject),
        f"To: {report.to}",
    ]
    if style.threaded and original.message_id:
        out += [f"References: {original.message_id}", f"In-Reply-To: {original.message_id}"]
    out += [
        "Auto-Submitted: " + ("auto-generated" if report.postmaster else "auto-replied"),
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
    ]
    if encoding is not None:
        out.append(f"Content-Transfer-Encoding: {tpl.encoding if encoding == '7bit' else encoding}")
    out += [
        f"Message-Id: <{stamp}.{new_id}@{style.myhostname}>",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=" + (
            tpl.charset if tpl.charset.lower() != "us-ascii"
            else "utf-8" if eight_bit else "us-ascii"
        ),
    ]
    if eight_bit:
        out.append(f"Content-Transfer-Encoding: {encoding}")
    out.append("")
    if not report.postmaster:
        out += report.text
    for row in report.rows:
        out.append("")
        if row.orig_addr:
            out += line_wrap(f"<{row.address}> (expanded from <{row.orig_addr}>): {row.reason}")
        else:
            out += line_wrap(f"<{row.address}>: {row.reason}")

    out += ["", f"--{boundary}", "Content-Description: Delivery report",
            "Content-Type: message/" + ("global-" if original.smtputf8 else "")
            + "delivery-status"]
    if eight_bit and original.smtputf8:
        out.append(f"Content-Transfer-Encoding: {encoding}")
    out += ["", f"Reporting-MTA: dns; {style.myhostname}"]
    if original.env_id:
        out.append(f"Original-Envelope-Id: {original.env_id}")
    out.append(f"X-{mail_name}-Queue-ID: {original.queue_id}")
    out.append(f"X-{mail_name}-Sender: {_address_type(original.sender, original)}; "
               f"{original.sender}")
    if original.arrival > 0:
        out.append(f"Arrival-Date: {mail_date(original.arrival)}")
    for row in report.rows:
        out += ["", f"Final-Recipient: {_address_type(row.address, original)}; {row.address}"]
        if row.dsn_orcpt:
            out.append(f"Original-Recipient: {row.dsn_orcpt}")
        elif row.orig_addr:
            out.append(f"Original-Recipient: {_address_type(row.orig_addr, original)}; "
                       f"{row.orig_addr}")
        out.append("Action: " + ("failed" if tpl.kind == "failure" else row.action))
        out.append(f"Status: {row.status}")
        if row.mta:
            out += line_wrap(f"Remote-MTA: dns; {row.mta}")
        if row.dtype and row.dtext:
            out += line_wrap(f"Diagnostic-Code: {row.dtype}; {row.dtext}")
        else:
            out += line_wrap(f"Diagnostic-Code: X-{mail_name}; {row.reason}")
        if tpl.kind == "delay":
            out.append("Will-Retry-Until: "
                       + mail_date(original.arrival + style.maximal_queue_lifetime))

    content = original.content
    limit = style.bounce_size_limit
    headers_only = report.headers_only or (limit > 0 and not 0 < len(content) <= limit)
    undelivered = "Undelivered " if tpl.kind in ("failure", "delay") else ""
    out += [
        "",
        f"--{boundary}",
        f"Content-Description: {undelivered}"
        + ("Message Headers" if headers_only else "Message"),
        "Content-Type: " + (
            ("message/global-headers" if headers_only else "message/global")
            if original.smtputf8 else
            ("text/rfc822-headers" if headers_only else "message/rfc822")
        ),
    ]
    if eight_bit:
        out.append(f"Content-Transfer-Encoding: {encoding}")
    out += ["", f"Return-Path: <{original.sender}>"]
    head = (CRLF.join(out) + CRLF).encode("utf-8", "surrogateescape")
    body = b"".join(line + b"\r\n" for line in _returned(content, headers_only))
    return head + body + f"{CRLF}--{boundary}--{CRLF}".encode()
