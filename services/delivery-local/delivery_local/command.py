"""Delivery to a command from an alias (≈ local/command.c, pipe_command.c, sys_exits.c).

The command runs under ``/bin/sh -c`` with the message (From_ line and
local headers first) on stdin, the usual environment (``SENDER``,
``RECIPIENT``, ``LOCAL``, ``DOMAIN``, ``EXTENSION``...), and
``command_time_limit``. The exit status maps to a DSN as sys_exits.c
does: 75 (EX_TEMPFAIL) defers, other sysexits codes and any other
non-zero status bounce.

As root the command runs with the rights it is given (default_privs, or the
owner of an ``:include:`` file): that uid and gid, no supplementary groups,
working directory ``/``. It never runs as root: rights of uid 0 defer.

mailbox_size_limit bounds every file the command writes, as Postfix's
local(8) passes its RLIMIT_FSIZE on: util-linux's prlimit sets it on the
command's own process (lowering one's own limit needs no privilege), then
runs the shell. Postfix's commands inherit SIGXFSZ ignored and see EFBIG;
here the signal stops the command ("Command died with status 153"): a
bounce either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import Mapping

from delivery_local.privs import AGENT, Rights, is_root
from postbus.delivery import Outcome

log = logging.getLogger("postbus.delivery")
PRLIMIT = shutil.which("prlimit", path="/usr/bin:/bin")

# sysexits.h code -> (dsn, text) (≈ sys_exits.c)
SYS_EXITS: dict[int, tuple[str, str]] = {
    64: ("5.3.0", "command line usage error"),
    65: ("5.6.0", "data format error"),
    66: ("5.3.0", "cannot open input"),
    67: ("5.1.1", "user unknown"),
    68: ("5.1.2", "host name unknown"),
    69: ("5.3.0", "service unavailable"),
    70: ("5.3.0", "internal software error"),
    71: ("4.3.0", "system resource problem"),
    72: ("5.3.0", "critical OS file missing"),
    73: ("5.2.0", "can't create user output file"),
    74: ("5.3.0", "input/output error"),
    75: ("4.3.0", "temporary failure"),
    76: ("5.5.0", "remote error in protocol"),
    77: ("5.7.0", "permission denied"),
    78: ("5.3.5", "local configuration error"),
}


async def deliver_command(
    command: str,
    data: bytes,
    env: Mapping[str, str],
    *,
    time_limit: float,
    rights: Rights = AGENT,
    file_limit: int = 0,
) -> Outcome:
    """Run ``command`` with ``data`` on stdin; the outcome as Postfix reports it."""
    extra: dict[str, object] = {}
    if is_root():
        if rights.uid <= 0 or rights.gid < 0:
            return Outcome("deferred", "4.3.0", f"refusing to run a command as {rights}")
        extra = {"user": rights.uid, "group": rights.gid, "extra_groups": [], "cwd": "/"}
    argv = ["/bin/sh", "-c", command]
    if file_limit > 0:
        if PRLIMIT is not None:
            argv = [PRLIMIT, f"--fsize={file_limit}", "--", *argv]
        else:
            log.warning("prlimit (util-linux) not found: mailbox_size_limit does not bound "
                        "the files of command deliveries")
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
        start_new_session=True,
        **extra,  # type: ignore[arg-type]
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(data), time_limit)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        await proc.wait()
        return Outcome("bounced", "5.3.0", f'Command time limit exceeded: "{command}"')
    except (BrokenPipeError, ConnectionResetError):
        output = b""
        await proc.wait()
    status = proc.returncode or 0
    if status == 0:
        return Outcome("sent", "2.0.0", f"delivered to command: {command}")
    said = " ".join(output.decode("utf-8", "replace").split())[:200]
    tail = f". Command output: {said} " if said else ""
    if status < 0:
        return Outcome("bounced", "5.3.0", f'Command died with signal {-status}: "{command}"{tail}')
    if status in SYS_EXITS:
        dsn, text = SYS_EXITS[status]
        return Outcome.by_dsn(dsn, f"{text}{tail}".rstrip())
    return Outcome("bounced", "5.3.0", f'Command died with status {status}: "{command}"{tail}')
