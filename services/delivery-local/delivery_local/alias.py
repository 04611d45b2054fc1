"""Alias values and what their entries mean (≈ local/alias.c, local/token.c).

An alias value is a comma-separated list; an entry in double quotes may
contain commas (``"|/usr/bin/filter -a, -b"``). Each entry is one of:

* ``|command`` — pipe to a command (if ``allow_mail_to_commands`` has ``alias``);
* ``~/file`` — a file under the home directory (.forward and files it includes);
* ``\\user`` — the user's own mailbox, without aliases or .forward;
* ``/file/name`` — append to a file, or a Maildir when it ends in ``/``
  (if ``allow_mail_to_files`` has ``alias``);
* ``:include:/file`` — more entries, read from that file;
* ``user`` — a local user (aliases again, then the mailbox);
* ``user@domain`` — an address: the message is forwarded (re-queued).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["command", "file", "home", "include", "local", "address"]


@dataclass(frozen=True)
class Target:
    kind: Kind
    value: str


def split_value(value: str) -> list[str]:
    """Split at commas (and newlines) outside double quotes; quotes removed, blanks dropped."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif ch in ",\n" and not quoted:
            items.append("".join(current))
            current = []
        else:
            current.append(ch)
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def classify(entry: str) -> Target:
    if entry.startswith("|"):
        return Target("command", entry[1:].strip())
    if entry.startswith("/"):
        return Target("file", entry)
    if entry.startswith("~"):
        return Target("home", entry)
    if entry.lower().startswith(":include:"):
        return Target("include", entry[9:].strip())
    if "@" in entry:
        return Target("address", entry.strip("<>"))
    return Target("local", entry)


def parse(value: str) -> list[Target]:
    return [classify(entry) for entry in split_value(value)]


def read_include(path: str) -> list[Target]:
    """Entries of an :include: file: one or more per line, # comments skipped."""
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        lines = [line for line in fh.read().splitlines() if not line.lstrip().startswith("#")]
    return parse("\n".join(lines))
