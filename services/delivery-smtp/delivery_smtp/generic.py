"""smtp_generic_maps: addresses rewritten on the way out (≈ smtp_map11.c, smtp_misc.c and
smtp_proto.c's smtp_header_rewrite()).

Typically a locally valid address made globally valid for the Internet.
The envelope sender (not the null sender), each envelope recipient, and
each address in the sender and recipient headers of the primary header
block (From:, To:, Cc:, Reply-To:, ...) are looked up as canonical maps
are (full address, without the extension, ``user`` when local,
``@domain``); a result ``@otherdomain`` keeps the local part, and a
multi-valued one gives its first address with a warning. A mapping is
one lookup, not repeated. A header with no address found is sent byte for
byte as queued; a changed one is written out again by Postfix's rules
(one address per line, lines joined while they fit in 70 columns,
continuation lines indented with a TAB). The log and the notices keep the
queued addresses, as Postfix's do; the LMTP client reads lmtp_generic_maps.
"""

from __future__ import annotations

import dataclasses
import logging

from postbus import tok822_tree as t
from postbus.cleanup.addr_map import addr_map
from postbus.cleanup.canonical import extension_classes
from postbus.cleanup.content import header_lines
from postbus.cleanup.headers import fold, header_opts
from postbus.config.loader import Config
from postbus.maps.maps import Maps, open_maps
from postbus.queue.entry import DeliveryJob
from postbus.resolve import Resolver
from postbus.rewrite import RewriteRules
from postbus.tok822 import quote_822_local

log = logging.getLogger("postbus.delivery")


class GenericMaps:
    """The generic table of one transport (empty: nothing is rewritten)."""

    def __init__(self, cfg: Config, lmtp: bool) -> None:
        self.param = "lmtp_generic_maps" if lmtp else "smtp_generic_maps"
        self.maps: Maps = open_maps(cfg.get(self.param), self.param)
        self.propagate = "generic" in extension_classes(cfg)
        self.resolver = Resolver(cfg) if self.maps else None
        self.rules = RewriteRules.local(cfg)

    def __bool__(self) -> bool:
        return bool(self.maps)

    async def address(self, address: str) -> str | None:
        """The mapped internal-form address, or None when the table does not list it
        (≈ smtp_map11_internal()); TableRetry when the table cannot answer."""
        if not address or self.resolver is None:
            return None
        found = await addr_map(self.resolver, self.maps, address, propagate=self.propagate,
                               rules=self.rules)
        if found is None:
            return None
        if len(found) > 1:
            log.warning("multi-valued %s result for %s", self.maps.title, address)
        return found[0]

    async def job(self, job: DeliveryJob) -> DeliveryJob:
        """The job as sent: envelope sender and recipients mapped."""
        sender = await self.address(job.sender) or job.sender
        recipients = [
            dataclasses.replace(r, address=await self.address(r.address) or r.address)
            for r in job.recipients
        ]
        return dataclasses.replace(job, sender=sender, recipients=recipients)

    async def content(self, content: bytes) -> bytes:
        """The content with the primary header block's addresses mapped."""
        if content.startswith(b"\r\n"):
            return content  # no header block at all
        end = content.find(b"\r\n\r\n")
        block, body = (content, b"") if end < 0 else (content[: end + 2], content[end + 2 :])
        out: list[bytes] = []
        changed = False
        for raw in header_lines(block):
            new = await self._header(raw)
            changed |= new is not None
            out.append(raw if new is None else new)
        return b"".join(out) + body if changed else content

    async def _header(self, raw: bytes) -> bytes | None:
        """One header (CRLF lines) rewritten, or None when no address in it is listed."""
        if raw[:1] in (b" ", b"\t") or b":" not in raw:
            return None
        header = raw.decode("utf-8", "surrogateescape").rstrip("\r\n").replace("\r\n", "\n")
        opts = header_opts(header)
        if opts is None or not (opts.sender or opts.recipient):
            return None
        if header[: len(opts.name) + 1].lower() != opts.name.lower() + ":":
            return None  # "Name :" forms are normalized by cleanup before the queue
        tree = t.parse(header[len(opts.name) + 1 :])
        changed = False
        for addr in t.addresses(tree):
            internal = t.internalize(addr.head)
            mapped = await self.address(internal)
            changed |= mapped is not None
            t.replace_addr(addr, quote_822_local(internal if mapped is None else mapped))
        if not changed:
            return None
        folded = fold(header[: len(opts.name)] + ": " + t.externalize(tree, t.HEAD))
        lines = folded.split("\n")
        lines[1:] = [x if x[:1] in (" ", "\t") else "\t" + x for x in lines[1:]]
        return "".join(x + "\r\n" for x in lines).encode("utf-8", "surrogateescape")

