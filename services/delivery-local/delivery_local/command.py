"""Running a delivery command (≈ global/pipe_command.c, sys_exits.c).

The command runs under ``/bin/sh -c`` (or ``local_command_shell``) with the
message (From_ line and local headers first) on stdin, the environment the
caller built (:mod:`delivery_local.runner`), and ``command_time_limit``.
The outcome is Postfix's: output starting with ``D.S.N text`` is the
verdict (class 4 defers); a sysexits.h status maps as sys_exits.c does
(75, EX_TEMPFAIL, defers: ``temporary failure. Command output: ...``);
any other non-zero status bounces as ``Command died with status N:
"command". Command output: ...``; a signal defers. The output is quoted as
Postfix quotes it (first 4096 bytes, tabs and newlines as spaces).

As root the command runs with the rights it is given (default_privs, the
owner of an ``:include:`` file, the recipient): that uid and gid, no
supplementary groups, working directory ``/`` or
``command_execution_directory`` (entered as that user). It never runs as
root: rights of uid 0 defer.

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
import re
import shutil
from collections.abc import Callable, Mapping

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


def exported(names: list[str]) -> dict[str, str]:
    """export_environment: ``NAME`` passes the agent's value on, ``NAME=value`` sets it
    (≈ clean_env.c); nothing else of the agent's environment reaches a command."""
    env: dict[str, str] = {}
    for item in names:
        name, eq, value = item.partition("=")
        if eq:
            env[name] = value
        elif name in os.environ:
            env[name] = os.environ[name]
    return env


def command_output(output: bytes) -> str:
    """The first 4096 bytes a command wrote, as Postfix quotes them: tabs and newlines as
    spaces, other unprintable characters as ``_`` (≈ pipe_command.c)."""
    text = output[:4096].decode("utf-8", "replace").replace("\t", " ").replace("\n", " ")
    return "".join(ch if ch.isprintable() else "_" for ch in text)


def _dsn_text(said: str) -> tuple[str, str] | None:
    """Output that starts with a "D.S.N text" status (the command's own verdict)."""
    m = _DSN_OUTPUT.match(said)
    return (m.group(1), m.group(2)) if m else None


_DSN_OUTPUT = re.compile(r"([245]\.\d{1,3}\.\d{1,3})(?:\s+|$)(.*)", re.S)


def _become(uid: int, gid: int) -> Callable[[], None]:
    """A preexec_fn: no supplementary groups, then the target's gid and uid."""

    def become() -> None:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return become


def _argv(command: str, shell: str, cwd: str) -> list[str]:
    """``local_command_shell`` (split at spaces) or /bin/sh -c; a working directory is
    entered by the command's own shell, with the command's rights (as Postfix chdir()s
    after dropping privileges), and passed as an argument, never spliced into a script."""
    argv = [*shell.split(), command] if shell.strip() else ["/bin/sh", "-c", command]
    if cwd:
        argv = ["/bin/sh", "-c", _CHDIR, "sh", cwd, *argv]
    return argv


#: Enter $1 or fail as Postfix's pipe_command() child does (EX_TEMPFAIL, its words).
_CHDIR = """cd "$1" 2>/dev/null || {
  if [ ! -e "$1" ]; then e="No such file or directory"
  elif [ ! -d "$1" ]; then e="Not a directory"; else e="Permission denied"; fi
  echo "local: fatal: cannot change directory to \\"$1\\" for uid=$(id -u) gid=$(id -g): $e"
  exit 75
}
shift
exec "$@"
"""


async def deliver_command(
    command: str,
    data: bytes,
    env: Mapping[str, str],
    *,
    time_limit: float,
    rights: Rights = AGENT,
    file_limit: int = 0,
    shell: str = "",
    cwd: str = "",
) -> Outcome:
    """Run ``command`` with ``data`` on stdin; the outcome as Postfix reports it."""
    extra: dict[str, object] = {"cwd": "/"}
    if is_root():
        if rights.uid <= 0 or rights.gid < 0:
            return Outcome("deferred", "4.3.0", f"refusing to run a command as {rights}")
        # not user=/group=/extra_groups=: uvloop (the services' loop) refuses them
        extra["preexec_fn"] = _become(rights.uid, rights.gid)
    argv = _argv(command, shell, cwd)
    if file_limit > 0:
        if PRLIMIT is not None:
            argv = [PRLIMIT, f"--fsize={file_limit}", "--", *argv]
        else:
            log.warning("prlimit (util-linux) not found: mailbox_size_limit does not bound "
                        "the files of command deliveries")
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
            **extra,  # type: ignore[arg-type]
        )
    except OSError as exc:
        log.warning("cannot run %s: %s", argv[0], exc.strerror)
        return Outcome("deferred", "4.3.0", f"Delivery failed: {exc.strerror}")
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
    said = command_output(output)
    tail = f". Command output: {said}" if said else ""
    if status < 0:
        return Outcome("deferred", "4.3.0",
                       f'Command died with signal {-status}: "{command}"{tail}')
    dsn_text = _dsn_text(said)
    if dsn_text is not None:
        dsn, text = dsn_text  # Postfix: class 4 defers, any other bounces
        return Outcome("deferred" if dsn[0] == "4" else "bounced", dsn, text)
    if status in SYS_EXITS:
        dsn, text = SYS_EXITS[status]
        return Outcome.by_dsn(dsn, f"{text}{tail}")
    return Outcome("bounced", "5.3.0", f'Command died with status {status}: "{command}"{tail}')
