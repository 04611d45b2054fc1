"""Reading SMTP replies (≈ smtp_chat.c's smtp_chat_resp()), for every client we have.

A reply is one or more lines ``CODE-text`` ending with ``CODE text``
(RFC 5321 4.2.1). :class:`ReplyLines` gathers them line by line from the
wire into one :class:`Reply`; the reply's class gives the status and its
enhanced status code (RFC 3463) is read as Postfix reads it. The EHLO
reply's keywords are read by :func:`ehlo_features`. What a server *sends*
is :mod:`postbus.smtp.replies`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "NotAReply", "Reply", "ReplyLines", "Status", "ehlo_features", "reply_dsn", "reply_status",
]

Status = Literal["sent", "deferred", "bounced"]

_DSN_RE = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")


def reply_status(code: int) -> Status:
    """2xx sent, 4xx deferred, anything else bounced (Postfix treats odd codes as hard)."""
    if 200 <= code < 300:
        return "sent"
    if 400 <= code < 500:
        return "deferred"
    return "bounced"


def reply_dsn(code: int, text: str) -> str:
    """The enhanced status code of a reply (≈ smtp_chat_resp()).

    A code at the start of the text counts only when its class digit agrees
    with the reply code; otherwise Postfix derives ``X.0.0`` from the reply
    class (and ``5.5.0`` for a reply outside 2xx/4xx/5xx).
    """
    match = _DSN_RE.match(text.lstrip())
    first = str(code)[:1]
    if match and match.group(1) == first:
        return match.group(0)
    return f"{first}.0.0" if first in ("2", "4", "5") else "5.5.0"


@dataclass(frozen=True)
class Reply:
    """One SMTP/LMTP reply: ``text`` is every line's text joined with newlines."""

    code: int
    text: str

    @property
    def status(self) -> Status:
        return reply_status(self.code)

    @property
    def dsn(self) -> str:
        return reply_dsn(self.code, self.text)

    def __str__(self) -> str:
        """The reply as Postfix logs it: ``550 5.1.1 text``, lines joined by spaces."""
        return f"{self.code} {' '.join(self.text.splitlines())}".rstrip()


class NotAReply(ValueError):
    """A line that is not an SMTP reply line, or a reply with too many lines."""


class ReplyLines:
    """Reply lines in, whole replies out: :meth:`add` returns the reply a last line ends."""

    __slots__ = ("lines", "max_lines")

    def __init__(self, max_lines: int = 1000) -> None:
        self.lines: list[str] = []
        self.max_lines = max_lines

    def add(self, line: bytes) -> Reply | None:
        """One line without or with its line end; NotAReply when it is not one."""
        code = line[:3]
        if len(code) != 3 or not code.isdigit() or len(self.lines) >= self.max_lines:
            raise NotAReply(line[:80].decode("latin-1"))
        text = line[4:].strip(b" \t\r\n").decode("utf-8", "surrogateescape")
        if line[3:4] == b"-":
            self.lines.append(text)
            return None
        if self.lines:  # the last line of several
            self.lines.append(text)
            text = "\n".join(self.lines)
            self.lines = []
        return Reply(int(code), text)


def ehlo_features(text: str) -> dict[str, str]:
    """EHLO/LHLO keywords (lower case) and their parameters; the first line is the greeting.

    The old-style ``AUTH=method ...`` line counts as ``auth`` when no ``AUTH``
    line says otherwise, as Postfix reads it."""
    features: dict[str, str] = {}
    for line in text.split("\n")[1:]:
        line = line.strip()
        if not line:
            continue
        if line[:5].upper() == "AUTH=":
            features.setdefault("auth", line[5:].strip())
            continue
        keyword, _, params = line.partition(" ")
        features[keyword.lower()] = params.strip()
    return features
