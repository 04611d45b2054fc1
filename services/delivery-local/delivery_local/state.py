"""One job recipient on its way through aliases to its mailboxes (≈ LOCAL_STATE, DELIVER_ATTR)."""

from __future__ import annotations

from dataclasses import dataclass, field

from delivery_local.copy import header_lines
from postbus.delivery import Outcome
from postbus.queue.entry import DeliveryJob, Recipient


@dataclass
class State:
    job: DeliveryJob
    text: bytes  # content with LF line ends
    rcpt: Recipient
    leaves: list[tuple[str, Outcome]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # targets already done (≈ been_here)
    original_to: bool = True  # enable_original_recipient: write X-Original-To:

    def done(self, address: str, outcome: Outcome) -> None:
        self.leaves.append((address, outcome))

    def first_time(self, key: str) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def headers(self, address: str) -> bytes:
        """``Return-Path:``, ``X-Original-To:``, ``Delivered-To: address``."""
        original = (self.rcpt.orig_rcpt or self.rcpt.address) if self.original_to else ""
        return header_lines(self.job.sender, original, address)
