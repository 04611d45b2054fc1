"""Real postconf(1), live where Postfix is installed, else its recorded answers.

:func:`postconf` runs ``postconf -c DIR ARGS`` (through
:class:`tests.recorded.Recording`, so a comparison never skips) and returns
``(status, stdout, stderr)`` as this host would see them: the recording
keeps the configuration directory and this host's name and domain as
placeholders, put back on the way out, so a recording made on one host
answers for another. Two things Postfix prints differ by host and run and
are masked on both sides with :func:`mask`: ``process_id`` and, in the
full listings of defaults, the computed ``mynetworks``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from postbus.params import host_default
from tests.recorded import Recording

POSTCONF = shutil.which("postconf")

_DIR = "@@DIR@@"
_PLACEHOLDERS = (("@@HOSTNAME@@", "myhostname"), ("@@DOMAIN@@", "mydomain"))
_PID = re.compile(r"^process_id = \d+$", re.M)
_NETWORKS = re.compile(r"^mynetworks = .*$", re.M)


def mask(text: str, args: tuple[str, ...] | list[str]) -> str:
    """Hide what differs between runs and hosts, whoever prints it: process_id,
    and in the full listings of defaults (``postconf``, ``postconf -d``) mynetworks."""
    text = _PID.sub("process_id = @@PID@@", text)
    if tuple(args) in ((), ("-d",)):
        text = _NETWORKS.sub("mynetworks = @@NETWORKS@@", text)
    return text


def _hide(text: str, directory: Path, args: tuple[str, ...]) -> str:
    text = mask(text, args).replace(str(directory), _DIR)
    for placeholder, name in _PLACEHOLDERS:
        text = text.replace(host_default(name), placeholder)
    return text


def _show(text: str, directory: Path) -> str:
    text = text.replace(_DIR, str(directory))
    for placeholder, name in _PLACEHOLDERS:
        text = text.replace(placeholder, host_default(name))
    return text


def postconf(
    recording: Recording, key: str, directory: Path, *args: str,
    sort_stderr: bool = True, files: tuple[str, ...] = (), sort_files: bool = False,
    stderr: bool = True, unique_stderr: bool = False,
) -> tuple[int, str, str, dict[str, str]]:
    """``postconf -c directory args``: status, stdout, stderr and, after an edit,
    the named files' contents. stderr is sorted unless told otherwise: Postfix
    reports unused parameters in hash-table order, which varies between runs
    (as it appends several new names with -e: ``sort_files``); ``stderr=False``
    leaves it out (some warnings repeat a varying number of times), ``unique_stderr``
    keeps each line once."""

    def text_of(name: str) -> str:
        lines = (directory / name).read_text().splitlines(keepends=True)
        return _hide("".join(sorted(lines) if sort_files else lines), directory, ("file",))

    def live() -> list[object]:
        assert POSTCONF is not None
        # argv[0] "postconf": Postfix names itself by it in diagnostics
        run = subprocess.run(["postconf", "-c", str(directory), *args], executable=POSTCONF,
                             capture_output=True, text=True, timeout=60, check=False)
        err = run.stderr.splitlines(keepends=True) if stderr else []
        if unique_stderr:
            err = list(dict.fromkeys(err))
        return [
            run.returncode,
            _hide(run.stdout, directory, args),
            _hide("".join(sorted(err) if sort_stderr else err), directory, args),
            {name: text_of(name) for name in files},
        ]

    status, out, err, texts = recording.answer(key, live if POSTCONF else None)
    if POSTCONF is None:  # as live Postfix would have left them
        for name, text in texts.items():
            (directory / name).write_text(_show(text, directory))
    return (
        status, _show(out, directory), _show(err, directory),
        {name: _show(text, directory) for name, text in texts.items()},
    )
