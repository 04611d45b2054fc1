"""Where a virtual mailbox is and whose it is (≈ virtual/mailbox.c's deliver_mailbox()).

The full address is looked up in ``virtual_mailbox_maps`` (then without the
extension, then ``@domain``); not found bounces as unknown user. The result
is a path relative to ``virtual_mailbox_base`` (a Maildir when it ends in
``/``). A result that could leave the base (absolute, a ``..`` component, a
control character) defers with Postfix's "mail system configuration error"
and a warning naming the table and the value; Postfix itself refuses
``/../`` and keeps an absolute result under the base, Postbus refuses both.

As root, the file operations run with ``virtual_uid_maps`` /
``virtual_gid_maps`` (both required; a uid below ``virtual_minimum_uid`` or
gid 0 defers, as Postfix). Not as root, the agent delivers as itself; a
value those tables do give must still be valid.
"""

from __future__ import annotations

import os

from delivery_local.names import printable, relative_parts
from delivery_local.privs import AGENT, Rights, is_root
from delivery_local.store import Destination, config_error
from postbus.config.loader import Config
from postbus.delivery import Outcome
from postbus.maps.addr_find import Strategy, mail_addr_find
from postbus.maps.maps import Maps, open_maps

STRATEGY = Strategy.FULL | Strategy.NOEXT | Strategy.AT_DOMAIN


class VirtualMailboxes:
    """virtual_mailbox_maps and the owner tables, read once per configuration."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.mailboxes = open_maps(cfg.get("virtual_mailbox_maps"), "virtual_mailbox_maps")
        self.uids = open_maps(cfg.get("virtual_uid_maps"), "virtual_uid_maps")
        self.gids = open_maps(cfg.get("virtual_gid_maps"), "virtual_gid_maps")
        self.delimiter = cfg.get("recipient_delimiter")
        self.minimum_uid = cfg.int("virtual_minimum_uid")
        self.strict = cfg.bool("strict_mailbox_ownership")

    async def _find(self, maps: Maps, address: str) -> str | None:
        found = await mail_addr_find(maps, address, STRATEGY, recipient_delimiter=self.delimiter)
        return None if found is None else found.value

    async def destination(self, address: str) -> Destination | Outcome:
        """The mailbox of ``address``, or the outcome that ends its delivery."""
        value = await self._find(self.mailboxes, address)
        if value is None:
            return Outcome("bounced", "5.1.1", f'unknown user: "{printable(address)}"')
        base = self.cfg.get("virtual_mailbox_base")
        if not base.startswith("/"):
            return config_error(f"do not specify relative pathname: virtual_mailbox_base = {base}")
        parts = relative_parts(value)
        if parts is None:
            return config_error(f"recipient {printable(address)}: bad mailbox path "
                                f"{printable(value)} in virtual_mailbox_maps")
        rights = await self._rights(address)
        if isinstance(rights, Outcome):
            return rights
        owner_uid = -1
        if self.strict:
            owner_uid = rights.uid if rights != AGENT else os.geteuid()
        return Destination(
            "virtual", base, parts, value.endswith("/"), rights=rights, owner_uid=owner_uid,
            user=address, recipient=address,
        )

    async def _rights(self, address: str) -> Rights | Outcome:
        root = is_root()
        uid_value = await self._find(self.uids, address)
        gid_value = await self._find(self.gids, address)
        if uid_value is None or gid_value is None:
            if not root:
                return AGENT
            table = "virtual_uid_maps" if uid_value is None else "virtual_gid_maps"
            return config_error(f"recipient {printable(address)}: not found in {table}")
        uid, gid = _number(uid_value), _number(gid_value)
        if uid is None or uid < self.minimum_uid:
            return config_error(f"recipient {printable(address)}: bad uid "
                                f"{printable(uid_value)} in virtual_uid_maps")
        if gid is None or gid == 0:
            return config_error(f"recipient {printable(address)}: bad gid "
                                f"{printable(gid_value)} in virtual_gid_maps")
        return Rights(uid, gid) if root else AGENT


def _number(text: str) -> int | None:
    """A uid or gid as Postfix's sane_strtoul() takes it: digits only, below 2**32 - 1."""
    text = text.strip()
    if not text.isascii() or not text.isdigit() or int(text) >= 2**32 - 1:
        return None
    return int(text)
