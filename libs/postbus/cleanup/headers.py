"""Addresses in message headers (≈ cleanup_message.c's cleanup_rewrite_sender(),
cleanup_rewrite_recip(), cleanup_fold_header(), header_opts.c).

In the primary header block, each address in a sender header (From:,
Sender:, Reply-To:, Resent-From:, ...) or a recipient header (To:, Cc:,
Bcc:, Resent-To:, ...) is rewritten in the header rewriting context:
"local" for clients in local_header_rewrite_clients, "remote" with
remote_header_rewrite_domain otherwise (no rewriting at all when that is
empty). Then canonical mapping and masquerading apply for the
header_sender / header_recipient classes. A header whose addresses all
stay the same is left byte for byte as it was; a changed one is written
out again by Postfix's rules: one address per line, lines joined while
they fit in 70 columns, continuation lines indented with a TAB.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from postbus import tok822_tree as t
from postbus.cleanup.canonical import Canonical, Classes
from postbus.cleanup.masquerade import Masquerade
from postbus.cleanup.status import Status
from postbus.rewrite import RewriteRules


@dataclass(frozen=True)
class HeaderOpts:
    """What cleanup does with a known header (≈ HEADER_OPTS)."""

    name: str  # as Postfix spells it; its length says where the value starts
    sender: bool = False
    recipient: bool = False
    resent: bool = False


_KNOWN: Final = [
    HeaderOpts("Apparently-To", recipient=True),
    HeaderOpts("Bcc", recipient=True),
    HeaderOpts("Cc", recipient=True),
    HeaderOpts("Disposition-Notification-To", sender=True),
    HeaderOpts("Errors-To", sender=True),
    HeaderOpts("From", sender=True),
    HeaderOpts("Mail-Followup-To", sender=True),
    HeaderOpts("Reply-To", sender=True),
    HeaderOpts("Resent-Bcc", recipient=True, resent=True),
    HeaderOpts("Resent-Cc", recipient=True, resent=True),
    HeaderOpts("Resent-Date", resent=True),
    HeaderOpts("Resent-From", sender=True, resent=True),
    HeaderOpts("Resent-Message-Id", resent=True),
    HeaderOpts("Resent-Reply-To", recipient=True, resent=True),
    HeaderOpts("Resent-Sender", sender=True, resent=True),
    HeaderOpts("Resent-To", recipient=True, resent=True),
    HeaderOpts("Return-Path", sender=True),
    HeaderOpts("Return-Receipt-To", sender=True),
    HeaderOpts("Sender", sender=True),
    HeaderOpts("To", recipient=True),
]
HEADERS: Final = {opts.name.lower(): opts for opts in _KNOWN}
ADDRESS_HEADERS: Final = frozenset(
    opts.name.lower().encode() for opts in _KNOWN if opts.sender or opts.recipient)
RESENT_HEADERS: Final = frozenset(opts.name.lower() for opts in _KNOWN if opts.resent)
FOLD_COLUMNS: Final = 70


def header_opts(header: str) -> HeaderOpts | None:
    """The options of a header line ``Name: value`` (≈ header_opts_find())."""
    return HEADERS.get(header[: header.find(":")].rstrip(" \t").lower())


def fold(header: str) -> str:
    """Join a rewritten address list's lines while they fit (≈ cleanup_fold_header())."""
    lines = header.split("\n")
    out = [lines[0]]
    width = len(lines[0])
    for line in lines[1:]:
        if width + 1 + len(line) < FOLD_COLUMNS:
            out[-1] += " " + line
            width += 1 + len(line)
        else:
            out.append(line)
            width = len(line)
    return "\n".join(out)


def output_lines(header: str, size_limit: int) -> list[str]:
    """A header as it goes into the queue (≈ cleanup_out_header()): continuation lines
    of a rewritten header get a TAB; a header past header_size_limit is cut at the
    last line boundary, or mid-line when that would lose more than 10%."""
    out: list[str] = []
    pos = 0
    for line in header.split("\n"):
        end = pos + len(line)
        if end > size_limit:
            if pos > 0.9 * size_limit:
                break
            line = line[: size_limit - pos]
            out.append(line if not out or line[:1] in (" ", "\t") else "\t" + line)
            break
        out.append(line if not out or line[:1] in (" ", "\t") else "\t" + line)
        pos = end + 1
    return out


#: A header value that is one plain address, bare or in angle brackets: what the
#: tokenizer would give back as it is (atoms, dots, one @; no comment, quote or route).
_PLAIN = re.compile(r"[ \t]*(?:<([\w!#$%&'*+/=?^`{|}~.-]+@[\w.-]+)>"
                    r"|([\w!#$%&'*+/=?^`{|}~.-]+@[\w.-]+))[ \t]*", re.ASCII)


class HeaderRewriter:
    """Rewrites the address headers of one context (local or remote)."""

    def __init__(self, context: RewriteRules, canonical: Canonical, masquerade: Masquerade,
                 token_limit: int) -> None:
        self.context = context
        self.canonical = canonical
        self.masquerade = masquerade
        self.token_limit = token_limit

    async def rewrite(self, status: Status, header: str, opts: HeaderOpts,
                      mapping: bool = True) -> str | None:
        """The header with its addresses rewritten, or None when none changed.

        ``header`` is the whole header, continuation lines joined with
        ``\\n``; ``mapping`` is off when address mappings are (receive_override_options)."""
        where = Classes.HDR_FROM if opts.sender else Classes.HDR_RCPT
        if not (mapping and (self.canonical or self.masquerade.applies(where))):
            # the usual header: one plain address that the context leaves alone
            # needs no parse (the answer below would be None too)
            plain = _PLAIN.fullmatch(header, len(opts.name) + 1)
            if plain is not None:
                text = plain.group(1) or plain.group(2)
                if self.context.external(text) == text:
                    return None
        tree = t.parse(header[len(opts.name) + 1 :], self.token_limit)
        changed = False
        addresses = t.addresses(tree)
        for addr in addresses:
            # each step reads the address node out and scans its result back in (an
            # unchanged text only when the header is written out again, below)
            text = t.externalize(addr.head)
            new = self.context.external(text)
            if new != text:
                changed = True
                text = t.replace_addr(addr, new)
            if mapping and self.canonical:
                new, did = await self.canonical.external(status, text, where)
                changed |= did
                if new != text:
                    text = t.replace_addr(addr, new)
            if mapping and self.masquerade.applies(where):
                new, did = await self.masquerade.external(status, text)
                changed |= did
                if new != text:
                    t.replace_addr(addr, new)
        if not changed:
            return None
        for addr in addresses:
            t.replace_addr(addr, t.externalize(addr.head))
        return fold(header[: len(opts.name)] + ": " + t.externalize(tree, t.HEAD))

