"""One job recipient on its way through aliases to its mailboxes (≈ LOCAL_STATE, DELIVER_ATTR)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from delivery_local.copy import header_lines
from postbus.delivery import Outcome
from postbus.queue.entry import DeliveryJob, Recipient


@dataclass(frozen=True)
class Client:
    """What the queue entry says about the SMTP client (CLIENT_* of a command)."""

    name: str = ""
    addr: str = ""
    helo: str = ""
    protocol: str = ""


NO_CLIENT = Client()


@dataclass
class State:
    job: DeliveryJob
    text: bytes  # content with LF line ends
    rcpt: Recipient
    leaves: list[tuple[str, Outcome]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # targets already done (≈ been_here)
    original_to: bool = True  # enable_original_recipient: write X-Original-To:
    # what an expansion changes for the targets below it (≈ msg_attr, restored on the way up)
    sender: str = ""  # the envelope sender; an owner- alias replaces it
    owner: str = ""  # the list owner or the .forward user: other local names are re-queued
    orig_rcpt: str | None = None  # ORCPT override ("" below an owner- alias)
    indirect: bool = False  # below an :include: file: local names not aliases are re-queued
    unmatched: str = ""  # delimiter and extension to add to the expansion's addresses
    # Delivered-To: the job's recipient (frozen_delivered_to = yes, Postfix's default)
    delivered: str = ""
    # copies to queue once the recipient is done: (Delivered-To, sender) -> recipients
    forwards: dict[tuple[str, str], list[Recipient]] = field(default_factory=dict)
    passes: list[tuple[str, str]] = field(default_factory=list)  # (address, transport:nexthop)
    client_of: Callable[[str], Awaitable[Client]] | None = None  # by queue ID, when asked
    _client: Client | None = None

    async def client(self) -> Client:
        """The message's client (looked up once, for commands only)."""
        if self._client is None:
            self._client = NO_CLIENT
            if self.client_of is not None:
                self._client = await self.client_of(self.job.queue_id)
        return self._client

    def __post_init__(self) -> None:
        self.sender = self.sender or self.job.sender
        self.delivered = self.delivered or self.rcpt.address

    @property
    def original(self) -> str:
        """The original recipient (X-Original-To:, ORIGINAL_RECIPIENT, forwarded copies)."""
        if self.orig_rcpt is not None:
            return self.orig_rcpt
        return self.rcpt.orig_rcpt or self.rcpt.address

    @contextlib.contextmanager
    def below(self, **changes: object) -> Iterator[None]:
        """Change sender, owner or orig_rcpt for one expansion, then restore them."""
        saved = {name: getattr(self, name) for name in changes}
        for name, value in changes.items():
            setattr(self, name, value)
        try:
            yield
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    def done(self, address: str, outcome: Outcome) -> None:
        self.leaves.append((address, outcome))

    def first_time(self, key: str) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def headers(self, address: str, *, delivered: bool = True) -> bytes:
        """``Return-Path:``, ``X-Original-To:``, ``Delivered-To:`` (the job's recipient, as
        Postfix's frozen_delivered_to; without it for prepend_delivered_header)."""
        original = self.original if self.original_to else ""
        return header_lines(self.sender, original, self.delivered if delivered else "")
