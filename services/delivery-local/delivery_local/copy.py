"""The bytes that land in a mailbox (≈ mail_copy.c).

Postfix stores lines without line ends and writes them with ``\\n``;
local delivery prepends ``Return-Path:``, ``X-Original-To:`` and
``Delivered-To:`` (in that order); an mbox message also gets a ``From
sender  date`` line first, ``>From `` quoting and a blank line at the end.
"""

from __future__ import annotations

import re
import time

MAILER_DAEMON = "MAILER-DAEMON"

_FROM_LINE = re.compile(rb"(?m)^From ")


def unix_text(content: bytes) -> bytes:
    """CRLF (or CR) line ends as LF, and a final newline."""
    text = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return text if not text or text.endswith(b"\n") else text + b"\n"


def header_lines(sender: str, orig_rcpt: str, delivered_to: str) -> bytes:
    lines = f"Return-Path: <{sender}>\n"
    if orig_rcpt:
        lines += f"X-Original-To: {orig_rcpt}\n"
    if delivered_to:
        lines += f"Delivered-To: {delivered_to.lower()}\n"
    return lines.encode("utf-8", "surrogateescape")


def from_line(sender: str, when: float | None = None) -> bytes:
    """``From sender  Thu Nov 25 13:18:27 2025`` (two spaces, as Postfix writes it)."""
    stamp = time.asctime(time.localtime(time.time() if when is None else when))
    return f"From {sender or MAILER_DAEMON}  {stamp}\n".encode("utf-8", "surrogateescape")


def mbox_message(text: bytes, sender: str, headers: bytes) -> bytes:
    """One mbox entry: From_ line, our headers, ``>From`` quoted text, blank line."""
    return from_line(sender) + _FROM_LINE.sub(b">From ", headers + text) + b"\n"


def delivered_to_seen(text: bytes, address: str) -> bool:
    """Loop check: the message's header already has ``Delivered-To: address``."""
    want = address.lower().encode("utf-8", "surrogateescape")
    for line in text.split(b"\n"):
        if not line:
            return False
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"delivered-to" and value.strip().lower() == want:
            return True
    return False
