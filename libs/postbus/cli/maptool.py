"""What postmap and postalias share before they touch a table: options, argv, messages.

:class:`Tool` holds what differs between the two commands (name, flags,
source syntax, output separator); :func:`parse_args` reads argv with
getopt as Postfix does (options may follow operands, as with glibc).
Messages go to stderr as ``postmap: warning: text`` and ``postmap: fatal:
text`` (:class:`Fatal`, exit status 1), as Postfix's tools print them.
"""

from __future__ import annotations

import getopt
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from postbus.config.loader import Config
from postbus.maps import store

__all__ = ["Fatal", "Options", "SourceParser", "Tool", "parse_args", "setup_logging"]


class Fatal(Exception):
    """Ends the command with ``<prog>: fatal: <text>`` and exit status 1."""


@dataclass
class Options:
    query: str | None = None
    delete: str | None = None
    sequence: bool = False
    incremental: bool = False
    fold: bool = True
    base64: bool = False
    dup_mode: store.Mode = "warn"
    verbose: int = 0
    message_mode: bool = False
    #: A new database file takes the source file's group/other permissions (not with -p).
    save_perm: bool = True
    #: Run as the source file's owner when started as root (not with -o).
    as_owner: bool = True
    #: ``--push=URL``: also upload each changed table to maps-api at URL.
    push: str | None = None
    config_dir: str | None = None
    maps: list[str] = field(default_factory=list)


#: Parses a source text into (line, key, value), keys as they will be stored.
SourceParser = Callable[[str, str, Options], Iterator[tuple[int, str, str]]]


@dataclass
class Tool:
    """What differs between postmap and postalias."""

    prog: str
    optstring: str
    usage: str
    parse: SourceParser
    #: ``-q -`` and ``-s`` output line: postmap "key<TAB>value", postalias "key:<TAB>value".
    separator: str = "\t"
    #: Entries a full build adds (postalias: the sendmail/NIS signatures).
    extra_entries: Callable[[Config], list[tuple[str, str]]] = lambda cfg: []


class _StderrHandler(logging.Handler):
    """``postmap: warning: text`` on stderr, as Postfix's command-line tools print."""

    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        level = {logging.WARNING: "warning: ", logging.ERROR: "error: ",
                 logging.CRITICAL: "fatal: "}.get(record.levelno, "")
        text = record.getMessage()
        if text.startswith(level):
            level = ""
        sys.stderr.write(f"{self.prog}: {level}{text}\n")
        sys.stderr.flush()


def setup_logging(prog: str, verbose: int) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_StderrHandler(prog))
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    for noisy in ("nats", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)


def parse_args(tool: Tool, argv: list[str]) -> Options:
    """getopt as Postfix does it (options may follow operands, as with glibc)."""
    opts = Options()
    try:
        pairs, rest = getopt.gnu_getopt(argv, tool.optstring, ["push="])
    except getopt.GetoptError as exc:
        if "requires argument" in exc.msg:
            sys.stderr.write(f"{tool.prog}: option requires an argument -- '{exc.opt}'\n")
        else:
            sys.stderr.write(f"{tool.prog}: invalid option -- '{exc.opt}'\n")
        raise Fatal(tool.usage) from None
    for flag, value in pairs:
        if flag == "-c":
            opts.config_dir = value
        elif flag == "-d":
            if opts.sequence or opts.query is not None or opts.delete is not None:
                raise Fatal("specify only one of -s -q or -d")
            opts.delete = value
        elif flag == "-q":
            if opts.sequence or opts.delete is not None:
                raise Fatal("specify only one of -s -q or -d")
            opts.query = value
        elif flag == "-s":
            if opts.query is not None or opts.delete is not None:
                raise Fatal("specify only one of -s or -q or -d")
            opts.sequence = True
        elif flag == "--push":
            opts.push = value.rstrip("/")
        else:
            _flag(opts, flag)
    if opts.message_mode and opts.query != "-":
        raise Fatal('specify -b -h or -m only with "-q -"')
    if opts.message_mode:
        raise Fatal("-b, -h and -m (message query modes) are not supported")
    if not rest:
        raise Fatal(tool.usage)
    if opts.push is not None:
        if opts.query is not None or opts.sequence:
            raise Fatal("--push changes tables: it cannot be used with -q or -s")
        if not opts.fold:
            raise Fatal("--push cannot be used with -f: maps-api stores keys in lower case")
    opts.maps = rest
    return opts


def _flag(opts: Options, flag: str) -> None:
    """The flags that only set an option."""
    if flag == "-i":
        opts.incremental = True
    elif flag == "-f":
        opts.fold = False
    elif flag == "-F":
        opts.base64 = True
    elif flag == "-r":
        opts.dup_mode = "replace"
    elif flag == "-w":
        opts.dup_mode = "ignore"
    elif flag == "-v":
        opts.verbose += 1
    elif flag == "-p":
        opts.save_perm = False
    elif flag == "-o":
        opts.as_owner = False
    elif flag in ("-b", "-h", "-m"):
        opts.message_mode = True
