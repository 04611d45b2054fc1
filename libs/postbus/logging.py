"""Log lines in Postfix's format, so pflogsumm and grep habits keep working.

``Nov 25 13:18:27 mail postbus/smtpd[1234]: 4F2A1C7D3E: client=host[1.2.3.4]``

Every service logs through the standard ``logging`` module; this module
only shapes the line (syslog-style prefix, Postfix's ``warning:``/``fatal:``
severity words) and sends it to stderr and, when ``maillog_file`` is set,
appends it to that file as Postfix's postlogd does.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

_START = getattr(logging, "_startTime", time.time())  # relativeCreated counts from it

_SEVERITY = {
    logging.WARNING: "warning: ",
    logging.ERROR: "error: ",
    logging.CRITICAL: "fatal: ",
}


# Loggers named for a Postfix daemon whose work a Postbus role does inside
# its own process: their lines carry that daemon's name, as in Postfix
# (cleanup's ``message-id=`` line comes from the SMTP server process).
BUILT_IN_PROGRAMS = {
    "postbus.cleanup": "cleanup",
    "postbus.bounce": "bounce",
    "postbus.qmgr": "qmgr",
}


_UNKNOWN_FILE = "(unknown file)"  # the pathname of every record once _srcfile is None
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class _Record(logging.LogRecord):
    """A LogRecord with the attributes the standard one has under :func:`setup_logging`'s
    settings (no caller, thread or process lookups), without recomputing the constant
    ones (file name, module) for every line: a service logs on its hot path."""

    def __init__(self, name: str, level: int, pathname: str, lineno: int, msg: object,
                 args: Any, exc_info: Any, func: str | None = None, sinfo: str | None = None,
                 **kwargs: Any) -> None:
        if pathname != _UNKNOWN_FILE or logging.logThreads or logging.logProcesses \
                or logging.logMultiprocessing:
            super().__init__(name, level, pathname, lineno, msg, args, exc_info, func, sinfo,
                             **kwargs)
            return
        ct = time.time()
        self.name = name
        self.msg = msg
        if args and len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            args = args[0]
        self.args = args
        self.levelname = logging.getLevelName(level)
        self.levelno = level
        self.pathname = self.filename = self.module = pathname
        self.exc_info = exc_info
        self.exc_text = None
        self.stack_info = sinfo
        self.lineno = lineno
        self.funcName = func  # type: ignore[assignment]  # None as in LogRecord itself
        self.created = ct
        self.msecs = int((ct - int(ct)) * 1000) + 0.0
        self.relativeCreated = (ct - _START) * 1000
        self.thread = self.threadName = self.processName = self.process = None


class PostfixFormatter(logging.Formatter):
    def __init__(self, ident: str, hostname: str) -> None:
        super().__init__()
        self.ident = ident
        self.hostname = hostname
        base = ident.rsplit("/", 1)[0] if "/" in ident else ident
        self.idents = {name: f"{base}/{program}" for name, program in BUILT_IN_PROGRAMS.items()}
        self._second = -1
        self._stamp_text = ""

    def _stamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # one strftime per second, not per line
            self._second = second
            self._stamp_text = time.strftime("%b %e %H:%M:%S", time.localtime(second))
        return self._stamp_text

    def format(self, record: logging.LogRecord) -> str:
        stamp = self._stamp(record.created)
        text = record.getMessage()
        prefix = _SEVERITY.get(record.levelno, "")
        if prefix and text.startswith(prefix):
            prefix = ""
        if record.exc_info and record.levelno >= logging.ERROR:
            text += " (" + repr(record.exc_info[1]) + ")"
        ident = self.idents.get(record.name, self.ident)
        return f"{stamp} {self.hostname} {ident}[{_pid}]: {prefix}{text}"


class JsonFormatter(PostfixFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": record.created,
                "host": self.hostname,
                "program": self.idents.get(record.name, self.ident),
                "pid": _pid,
                "level": record.levelname.lower(),
                "message": record.getMessage(),
            }
        )


class _AppendHandler(logging.Handler):
    """One ``write`` per line on an O_APPEND file: lines from many processes never mix."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def handle(self, record: logging.LogRecord) -> bool:
        """As Handler.handle() without its lock: one O_APPEND write needs none."""
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            os.write(self.fd, (self.format(record) + "\n").encode("utf-8", "replace"))
        except OSError:
            self.handleError(record)


# Records logged before setup_logging() (configuration warnings found while
# loading the configuration that says where to log): (logger, level, text).
_held: list[tuple[str, int, str]] = []
_set_up = False


def hold_or_log(name: str, level: int, text: str) -> None:
    """Log now when logging is set up, else when :func:`setup_logging` runs."""
    if _set_up:
        logging.getLogger(name).log(level, "%s", text)
    else:
        _held.append((name, level, text))


def setup_logging(
    ident: str,
    hostname: str,
    *,
    maillog_file: str = "",
    json_format: bool = False,
    verbose: bool = False,
) -> None:
    """Configure the root logger for one process; ``ident`` is e.g. ``postbus/smtpd``."""
    # Log records need no caller, thread or process lookups (the line carries
    # the pid itself): skipping them makes each line noticeably cheaper.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging.setLogRecordFactory(_Record)
    formatter_cls = JsonFormatter if json_format else PostfixFormatter
    formatter = formatter_cls(ident, hostname)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    # With maillog_file set, the file has every line and stderr only warnings
    # and worse (one write per line on the hot path); else stderr has all.
    stderr = logging.StreamHandler(sys.stderr)
    handlers: list[logging.Handler] = [stderr]
    if maillog_file:
        stderr.setLevel(logging.WARNING)
        handlers.append(_AppendHandler(maillog_file))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    global _set_up
    _set_up = True
    while _held:
        name, level, text = _held.pop(0)
        logging.getLogger(name).log(level, "%s", text)
    for noisy in ("nats", "asyncio", "uvicorn.access", "mail.log"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def peer_name(writer: asyncio.StreamWriter) -> str:
    """A listener's client as log lines name it: ``addr:port``, ``[addr]:port`` for IPv6."""
    peer = writer.get_extra_info("peername")
    if not peer:
        return "unknown"
    host = str(peer[0])
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
