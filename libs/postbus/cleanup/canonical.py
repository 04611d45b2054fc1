"""Canonical address mapping (≈ cleanup_map11.c and the canonical parts of cleanup_init.c).

canonical(5): sender_canonical_maps applies to sender addresses,
recipient_canonical_maps to recipient addresses, canonical_maps to both,
each for the address classes its ``*_classes`` parameter names
(envelope_sender, envelope_recipient, header_sender, header_recipient).
The sender or recipient table goes first, then canonical_maps.

A mapping is one-to-one: a multi-valued result uses its first address
(with a warning), and the result is looked up again, up to 10 times, until
it maps to itself. A table that cannot answer keeps the message out of the
queue ("map lookup problem ... try again later").
"""

from __future__ import annotations

import enum
import logging

from postbus.cleanup.addr_map import addr_map
from postbus.cleanup.status import Stat, Status
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.maps.maps import Maps, open_maps
from postbus.maps.table import TableRetry
from postbus.resolve import Resolver
from postbus.rewrite import RewriteRules
from postbus.tok822 import quote_822_local, unquote_822_local

log = logging.getLogger("postbus.cleanup")

MAX_RECURSION = 10


class Classes(enum.Flag):
    """Where an address stands (≈ CLEANUP_CANON_FLAG_*, CLEANUP_MASQ_FLAG_*)."""

    NONE = 0
    ENV_FROM = enum.auto()
    ENV_RCPT = enum.auto()
    HDR_FROM = enum.auto()
    HDR_RCPT = enum.auto()


CLASS_NAMES = {
    "envelope_sender": Classes.ENV_FROM,
    "envelope_recipient": Classes.ENV_RCPT,
    "header_sender": Classes.HDR_FROM,
    "header_recipient": Classes.HDR_RCPT,
}
SENDER_CLASSES = Classes.ENV_FROM | Classes.HDR_FROM
RECIPIENT_CLASSES = Classes.ENV_RCPT | Classes.HDR_RCPT


def class_mask(cfg: Config, param: str, allowed: Classes) -> Classes:
    """A ``*_classes`` parameter as flags (≈ name_mask()); an unknown name is an error."""
    mask = Classes.NONE
    for word in cfg.list(param):
        flag = CLASS_NAMES.get(word)  # case matters, as in name_mask()
        if flag is None or not flag & allowed:
            raise ConfigError(f'unknown {param} value "{word}"', parameter=param)
        mask |= flag
    return mask


def extension_classes(cfg: Config) -> set[str]:
    """propagate_unmatched_extensions as a set of names (≈ ext_prop_mask())."""
    names = {w.lower() for w in cfg.list("propagate_unmatched_extensions")}
    unknown = names - {"canonical", "virtual", "alias", "forward", "include", "generic"}
    if unknown:
        raise ConfigError(f'unknown propagate_unmatched_extensions value "{sorted(unknown)[0]}"',
                          parameter="propagate_unmatched_extensions")
    return names


class Canonical:
    """The canonical tables and the classes they apply to."""

    def __init__(self, cfg: Config, resolver: Resolver) -> None:
        self.resolver = resolver
        self.rules = RewriteRules.local(cfg)
        self.propagate = "canonical" in extension_classes(cfg)
        all_classes = SENDER_CLASSES | RECIPIENT_CLASSES
        # (maps, classes) in the order cleanup applies them to a sender / a recipient
        self.sender: list[tuple[Maps, Classes]] = []
        self.recipient: list[tuple[Maps, Classes]] = []
        tables = (
            ("sender_canonical_maps", "sender_canonical_classes", SENDER_CLASSES, self.sender),
            ("recipient_canonical_maps", "recipient_canonical_classes", RECIPIENT_CLASSES,
             self.recipient),
        )
        for maps_param, classes_param, allowed, into in tables:
            maps = open_maps(cfg.get(maps_param), maps_param)
            if maps:
                into.append((maps, class_mask(cfg, classes_param, allowed)))
        common = open_maps(cfg.get("canonical_maps"), "canonical_maps")
        if common:
            mask = class_mask(cfg, "canonical_classes", all_classes)
            self.sender.append((common, mask))
            self.recipient.append((common, mask))

    def __bool__(self) -> bool:
        return bool(self.sender or self.recipient)

    async def external(self, status: Status, address: str, where: Classes) -> tuple[str, bool]:
        """An external-form address through the tables for its class; (result, changed)."""
        tables = self.sender if where & SENDER_CLASSES else self.recipient
        changed = False
        for maps, classes in tables:
            if where & classes:
                address, did = await self.map11(status, address, maps)
                changed |= did
        return address, changed

    async def internal(self, status: Status, address: str, where: Classes) -> str:
        """The same for an internal-form (envelope) address (≈ cleanup_map11_internal())."""
        mapped, _ = await self.external(status, quote_822_local(address), where)
        return unquote_822_local(mapped)

    async def map11(self, status: Status, address: str, maps: Maps) -> tuple[str, bool]:
        """One-to-one mapping, repeated until an address maps to itself
        (≈ cleanup_map11_external())."""
        changed = False
        for _ in range(MAX_RECURSION):
            try:
                new = await addr_map(self.resolver, maps, unquote_822_local(address),
                                     propagate=self.propagate, rules=self.rules,
                                     external=True)
            except TableRetry:
                status.fail(Stat.WRITE, f"{maps.title} map lookup problem for {address} -- "
                            "message not accepted, try again later")
                return address, changed
            if new is None:
                return address, changed
            if len(new) > 1:
                log.warning("%s: multi-valued %s entry for %s", status.queue_id, maps.title,
                            address)
            changed |= new[0] != address
            to_self = new[0].lower() == address.lower()
            address = new[0]
            if to_self:
                return address, changed
        log.warning("%s: unreasonable %s map nesting for %s -- message not accepted, "
                    "try again later", status.queue_id, maps.title, address)
        return address, changed
