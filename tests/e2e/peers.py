"""A remote SMTP peer for end-to-end tests: a real aiosmtpd server on loopback."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from postbus.servers import free_port


@dataclass
class Received:
    sender: str
    recipients: list[str]
    content: bytes


@dataclass
class PeerHandler:
    """Collects messages; ``replies`` scripts the answer to each DATA in turn."""

    replies: list[str] = field(default_factory=list)
    stall: float = 0.0  # seconds to sleep in DATA, once
    messages: list[Received] = field(default_factory=list)
    attempts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self.lock:
            self.attempts += 1
            reply = self.replies.pop(0) if self.replies else "250 2.0.0 Ok: accepted"
            stall, self.stall = self.stall, 0.0
        if stall:
            await asyncio.sleep(stall)
        if reply.startswith("2"):
            content = envelope.original_content or b""
            with self.lock:
                self.messages.append(
                    Received(envelope.mail_from or "", list(envelope.rcpt_tos), content)
                )
        return reply


class Peer:
    def __init__(self, handler: PeerHandler | None = None) -> None:
        self.handler = handler or PeerHandler()
        self.port = free_port()
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port,
            data_size_limit=50_000_000, decode_data=False,
        )

    def __enter__(self) -> Peer:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
