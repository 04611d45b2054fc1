"""How a role that cannot start says why (≈ Postfix msg_fatal()).

A condition that stops a role at start (a configuration error, a listener
that cannot bind) is one ``fatal:`` line, in the maillog and on stderr,
and exit status 1: the master reads that line from the child's stderr and
`postbus start` prints it. Only a bug (an unexpected exception) adds a
traceback, on stderr.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import NoReturn

from postbus.config.conv import ConfigError
from postbus.config.loader import DEFAULT_CONFIG_DIR, ENV_CONFIG_DIR, Config
from postbus.config.main_cf import MainCf
from postbus.logging import setup_logging

log = logging.getLogger("postbus.service")


def fatal(text: str) -> NoReturn:
    """Postfix's msg_fatal(): one ``fatal:`` line, exit status 1."""
    log.critical("%s", text)
    sys.exit(1)


def crash(program: str) -> NoReturn:
    """A bug: say so in the log, and leave the traceback on stderr for the developer."""
    log.critical("%s: unexpected error", program, exc_info=True)
    traceback.print_exc()
    sys.exit(1)


def located(err: ConfigError, cfg: Config) -> ConfigError:
    """Name the file and line that set the parameter a role found wrong."""
    if err.parameter and not err.file:
        file, line = cfg.origin(err.parameter)
        return err.located(file=file, line=line)
    return err


_BIND_ERROR = re.compile(r"error while attempting to bind on address \('?([^',]*)'?, (\d+)")


def bind_error(exc: OSError) -> str | None:
    """Postfix's ``bind ADDR port PORT: REASON`` for a listener that cannot bind."""
    match = _BIND_ERROR.search(str(exc))
    if match is None or exc.errno is None:
        return None
    host, port = match.groups()
    text = f"bind {host or '0.0.0.0'} port {port}: {os.strerror(exc.errno)}"
    if exc.errno == errno.EACCES and int(port) < 1024:
        text += " (a port below 1024 needs root or CAP_NET_BIND_SERVICE)"
    return text


def log_early(program: str, config_dir: str | None) -> None:
    """Logging for a role whose configuration does not load: stderr, and the
    maillog too when main.cf still names one (Postfix's msg_fatal reaches syslog)."""
    ident, hostname, maillog = f"postbus/{program}", "localhost", ""
    with contextlib.suppress(Exception):
        directory = Path(config_dir or os.environ.get(ENV_CONFIG_DIR) or DEFAULT_CONFIG_DIR)
        main_cf = MainCf.read(str(directory / "main.cf"))
        cfg = Config(config_dir=directory, main_cf=main_cf, master=[], validate=False)
        ident = f"{cfg.get('syslog_name')}/{program}"
        hostname = cfg.get("myhostname")
        maillog = cfg.get("maillog_file")
    setup_logging(ident, hostname)
    with contextlib.suppress(Exception):
        setup_logging(ident, hostname, maillog_file=maillog)
