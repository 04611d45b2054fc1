"""The log records and handler setup_logging() installs: the same attributes as the
standard LogRecord under its settings, and the same line in the maillog file."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import pytest

from postbus import logging as postbus_logging


@pytest.fixture
def restore_logging():
    saved = (logging._srcfile, logging.logThreads, logging.logProcesses,
             logging.logMultiprocessing, logging.getLogRecordFactory())
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    (logging._srcfile, logging.logThreads, logging.logProcesses,
     logging.logMultiprocessing) = saved[:4]
    logging.setLogRecordFactory(saved[4])
    for handler in list(root.handlers):
        root.removeHandler(handler)
        if isinstance(handler, postbus_logging._AppendHandler):
            os.close(handler.fd)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_record_has_the_standard_attributes(restore_logging, tmp_path: Path) -> None:
    postbus_logging.setup_logging("postbus/smtpd", "mx.test",
                                  maillog_file=str(tmp_path / "maillog"))
    args = ("postbus/smtpd", 20, "(unknown file)", 0, "connect from %s", ("x[1.2.3.4]",),
            None, "(unknown function)", None)
    ours = postbus_logging._Record(*args)
    theirs = logging.LogRecord(*args)
    timing = ("created", "msecs", "relativeCreated")
    assert {k: v for k, v in vars(ours).items() if k not in timing} == \
        {k: v for k, v in vars(theirs).items() if k not in timing}
    assert abs(ours.relativeCreated - theirs.relativeCreated) < 1000
    mapped = postbus_logging._Record("n", 20, "(unknown file)", 0, "a=%(a)s", ({"a": 1},), None)
    assert mapped.getMessage() == "a=1"
    elsewhere = postbus_logging._Record("n", 20, "/x/y.py", 7, "m", (), None, "f")
    assert (elsewhere.filename, elsewhere.module, elsewhere.lineno) == ("y.py", "y", 7)


def test_line_in_the_maillog_file(restore_logging, tmp_path: Path) -> None:
    maillog = tmp_path / "maillog"
    postbus_logging.setup_logging("postbus/smtpd", "mx.test", maillog_file=str(maillog))
    logging.getLogger("postbus.smtpd").info("connect from %s", "x[1.2.3.4]")
    logging.getLogger("postbus.cleanup").warning("%s: message-id=<a@b>", "4F2A1C7D3E")
    lines = maillog.read_text().splitlines()
    pid = os.getpid()
    assert re.fullmatch(rf"\w{{3}} [ \d]\d \d\d:\d\d:\d\d mx\.test postbus/smtpd\[{pid}\]: "
                        r"connect from x\[1\.2\.3\.4\]", lines[0])
    assert lines[1].endswith(f" mx.test postbus/cleanup[{pid}]: warning: "
                             "4F2A1C7D3E: message-id=<a@b>")
    assert len(lines) == 2
