"""postbus postconf, one run: its flags and files, the text rules every part
shares (name = value, line folding, service patterns) and the reading of
main.cf and master.cf (≈ postconf.h, postconf_print.c, postconf_match.c,
pcf_read_parameters() and pcf_read_master())."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TextIO

from postbus.config.conv import ConfigError
from postbus.config.main_cf import MainCf
from postbus.config.master_cf import MasterEntry, parse_master_cf

__all__ = [
    "Fatal", "Session", "format_line", "is_comment", "match_service", "printable",
    "read_main", "read_master", "service_pattern", "split_nameval",
]

PROG = "postconf"
SEPARATORS = " \t\r\n"
MASTER_BLANKS = " \t\r\n"
LINE_LIMIT = 80
INDENT = "    "


class Fatal(Exception):
    """A postconf fatal error: ``postconf: fatal: <text>``, exit status 1."""


@dataclass
class Session:
    """One postconf run: flags, files and the parameter name spaces.

    ``flags`` holds the option letters as postconf's mode bits: ``p`` (or
    another major mode) is always there, ``e`` is added for a bare
    ``name=value`` argument.
    """

    flags: str
    config_dir: str
    dir_overridden: bool
    out: TextIO
    err: TextIO
    overrides: list[str] = field(default_factory=list)
    main: dict[str, str] = field(default_factory=dict)  # ≈ CONFIG_DICT
    master: list[MasterEntry] = field(default_factory=list)
    known: dict[str, str] = field(default_factory=dict)  # name -> default
    classes: dict[str, str] = field(default_factory=dict)  # name -> builtin|service|user
    local_valid: dict[int, set[str]] = field(default_factory=dict)
    host_defaults: dict[str, str] = field(default_factory=dict)

    def warn(self, text: str) -> None:
        self.say(f"{PROG}: warning: {text}")

    def say(self, text: str) -> None:
        """A diagnostic line, control characters shown as ``?`` (≈ msg_printf())."""
        self.out.flush()
        print(printable(text), file=self.err)

    @property
    def main_path(self) -> str:
        return f"{self.config_dir}/main.cf"

    @property
    def master_path(self) -> str:
        return f"{self.config_dir}/master.cf"


# -- text ------------------------------------------------------------------------


def printable(text: str) -> str:
    """Control characters as ``?``, as Postfix's diagnostics show them."""
    return "".join("?" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch for ch in text)


def split_nameval(text: str, shown: str | None = None) -> tuple[str, str]:
    """``name = value`` with blanks trimmed (≈ split_nameval()); shown is
    the text quoted in the error message (default: text)."""
    stripped = text.lstrip(SEPARATORS)
    quoted = text if shown is None else shown
    if not stripped or stripped[0] == "=":
        raise Fatal(f'missing attribute name: "{quoted}"')
    end = next((i for i, ch in enumerate(stripped) if ch in SEPARATORS + "="), len(stripped))
    rest = stripped[end:].lstrip(SEPARATORS)
    if not rest.startswith("="):
        raise Fatal(f'missing \'=\' after attribute name: "{quoted}"')
    return stripped[:end], rest[1:].strip(SEPARATORS)


def format_line(text: str, fold: bool) -> str:
    """Normalise whitespace and optionally fold (≈ pcf_print_line())."""
    out: list[str] = []
    length = 0
    for word in text.split():
        if length > 0:
            if not fold or length + len(word) < LINE_LIMIT:
                out.append(" ")
                length += 1
            else:
                out.append("\n" + INDENT)
                length = len(INDENT)
        out.append(word)
        length += len(word)
    return "".join(out) + "\n"


def service_pattern(text: str, least: int, most: int) -> list[str] | None:
    """Split ``name/type[/x]`` with ``*`` wildcards (≈ pcf_parse_service_pattern())."""
    if text.startswith("/"):
        return None
    parts = [p for p in text.split("/") if p]
    if not least <= len(parts) <= most:
        return None
    if any(p != "*" and "*" in p for p in parts):
        return None
    return parts + ["*"] * (most - len(parts))


def match(pattern: str, value: str) -> bool:
    return pattern == "*" or pattern == value


def match_service(pattern: list[str], entry_service: str, entry_type: str) -> bool:
    return match(pattern[0], entry_service) and match(pattern[1], entry_type)


def is_comment(line: str) -> bool:
    stripped = line.strip(MASTER_BLANKS)
    return not stripped or stripped.startswith("#")


# -- reading ---------------------------------------------------------------------


def read_text(path: str, fatal: bool, session: Session) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fp:
            return fp.read()
    except OSError as exc:
        message = f"open {path}: {exc.strerror}"
        if fatal:
            raise Fatal(message) from None
        session.warn(message)
        return None


def read_main(session: Session) -> None:
    """Load main.cf into the name space, then the -o overrides (≈ pcf_read_parameters())."""
    text = read_text(session.main_path, True, session) or ""
    try:
        cf = MainCf(text, session.main_path)
    except ConfigError as err:
        raise Fatal(str(err)) from None
    if session.dir_overridden:
        session.main["config_directory"] = session.config_dir
    # Postfix joins continuation lines without dropping their leading
    # blanks; compare and report values as it stores them.
    stored: dict[str, str] = dict(session.main)
    for entry in cf.entries:
        span = cf.lines[entry.line - 1 : entry.end - 1]
        value = split_nameval("".join(line for line in span if not is_comment(line)))[1]
        earlier = stored.get(entry.name)
        if earlier is not None and earlier != value:
            session.warn(
                f"{session.main_path}, line {entry.line}: overriding earlier entry: "
                f"{entry.name}={earlier}"
            )
        stored[entry.name] = value
        session.main[entry.name] = entry.value
    for text in session.overrides:
        try:
            name, value = split_nameval(text)
        except Fatal as err:
            reason = str(err).rpartition(": ")[0]
            raise Fatal(f"invalid parameter override: {text}: {reason}") from None
        session.main[name] = value


def master_error(err: ConfigError, path: str) -> Fatal:
    """A master.cf error as postconf words it: field checks stand alone."""
    if err.reason.startswith("invalid "):
        return Fatal(err.reason)
    return Fatal(f"file {path}: line {err.line}: {err.reason}")


def read_master(session: Session, fatal: bool) -> None:
    """Load master.cf (≈ pcf_read_master()); brace slips are warnings, as in postconf."""
    text = read_text(session.master_path, fatal, session)
    if text is None:
        return
    try:
        session.master = parse_master_cf(
            text, session.master_path, warn=lambda text: session.warn(f"master.cf: {text}")
        )
    except ConfigError as err:
        raise master_error(err, session.master_path) from None
