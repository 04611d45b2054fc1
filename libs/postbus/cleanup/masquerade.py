"""Address masquerading (≈ cleanup_masquerade.c).

masquerade_domains strips subdomains: with ``example.com`` listed,
``user@host.example.com`` becomes ``user@example.com``. The list is read
left to right and the first domain that is the address's domain or a
parent of it decides: a ``!`` in front means "leave this one alone" (so
``!sub.example.com, example.com`` keeps ``sub.example.com``), and an
address already in a listed domain is left as it is. Local parts listed in
masquerade_exceptions (``root``, a type:table) are never masqueraded.
masquerade_classes says which addresses are touched (by default the
envelope sender and both header classes, not envelope recipients).
"""

from __future__ import annotations

from postbus.cleanup.canonical import Classes, class_mask
from postbus.cleanup.status import Stat, Status
from postbus.config.loader import Config
from postbus.maps.maps import Maps, open_maps
from postbus.maps.table import TableRetry, fold_key
from postbus.tok822 import quote_822_local, unquote_822_local

ALL_CLASSES = Classes.ENV_FROM | Classes.ENV_RCPT | Classes.HDR_FROM | Classes.HDR_RCPT


class Masquerade:
    def __init__(self, cfg: Config) -> None:
        self.domains = cfg.list("masquerade_domains")
        self.classes = class_mask(cfg, "masquerade_classes", ALL_CLASSES) if self.domains \
            else Classes.NONE
        # masquerade_exceptions: a string list (names, !names, type:table)
        self.exceptions: list[tuple[bool, str, Maps | None]] = []
        for word in cfg.list("masquerade_exceptions"):
            negate = word.startswith("!")
            word = word.lstrip("!")
            maps = open_maps(word, "masquerade_exceptions") if ":" in word else None
            self.exceptions.append((negate, fold_key(word), maps))

    def applies(self, where: Classes) -> bool:
        return bool(self.classes & where)

    async def _excepted(self, status: Status, name: str) -> bool:
        """string_list_match(): the first entry that matches decides."""
        folded = fold_key(name)
        try:
            for negate, word, maps in self.exceptions:
                hit = (await maps.find(folded)) is not None if maps else word == folded
                if hit:
                    return not negate
        except TableRetry:
            status.fail(Stat.WRITE, "masquerade_exceptions map lookup problem -- "
                        "message not accepted, try again later", info=True)
        return False

    async def external(self, status: Status, address: str) -> tuple[str, bool]:
        """Masquerade an external-form address; (result, changed)
        (≈ cleanup_masquerade_external())."""
        at = address.rfind("@")
        if at < 0:
            return address, False
        domain = fold_key(address[at + 1 :])
        if self.exceptions and await self._excepted(status, address[:at]):
            return address, False
        for entry in self.domains:
            masq = entry.lstrip("!")
            truncate = (len(entry) - len(masq)) % 2 == 0
            masq = fold_key(masq)
            if not masq:
                continue
            if masq == domain:
                break
            if len(masq) < len(domain) and domain.endswith("." + masq):
                if truncate:
                    return address[: at + 1] + masq, True
                break
        return address, False

    async def internal(self, status: Status, address: str) -> str:
        """The same for an internal-form address (≈ cleanup_masquerade_internal())."""
        masked, _ = await self.external(status, quote_822_local(address))
        return unquote_822_local(masked)
