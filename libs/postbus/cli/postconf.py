"""postbus postconf: show and edit main.cf and master.cf, as postconf(1) does.

Flags, output and diagnostics follow Postfix 3.7's postconf (postconf.c and
its siblings); this module is the command line: options, their
compatibility matrix and the choice of what to do.

- ``postconf [-n|-d] [-C class] [-h|-H] [-x] [-f] [-o name=value] [name ...]``
  (:mod:`postconf_show`); ``-e name=value``, ``-X name``, ``-# name``:
  edit main.cf (:mod:`postconf_edit`).
- ``-M``, ``-F``, ``-P`` ``[service[/type[/field or name]]]``: master.cf
  entries, fields and ``-o`` parameters; ``-Me``, ``-Fe``, ``-Pe``,
  ``-MX``, ``-PX``, ``-M#`` edit them.
- ``-a``, ``-A``, ``-b [file]``, ``-t [file]``, ``-T mode``, ``-m``,
  ``-l``: what Postbus supports (:mod:`postconf_other`).

A fatal error prints ``postconf: fatal: text`` and exits 1.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import TextIO

from postbus.cli.postconf_session import (
    PROG,
    Fatal,
    Session,
    format_line,
    printable,
    service_pattern,
    split_nameval,
)
from postbus.config.loader import DEFAULT_CONFIG_DIR, ENV_CONFIG_DIR

__all__ = ["Fatal", "format_line", "main", "service_pattern", "split_nameval"]

_OPTIONS = "aAbc:C:deEfFhHlmMno:pPtT:vxX#"

#: Option letters in the order postconf names them in diagnostics (pcf_compat_names[]).
_FLAG_ORDER = "aAbCdefFhHlmMnopPtTxX#"
#: Mutually exclusive letters: the major modes first (pcf_incompat_options[]).
_MAJOR = "aAbmlTtpMFP"
_EXCLUSIVE = (_MAJOR, "den#X", "fe#X", "xe#X", "ode#X", "he#XH")
#: Each major mode and the only modifiers it takes (pcf_compat_options[]).
_COMPATIBLE = {
    "a": "", "A": "", "b": "", "l": "", "m": "", "T": "", "t": "",
    "p": "eX#fhCxdnoH",
    "M": "eX#fox",
    "F": "efhoxH",
    "P": "eXfhoxH",
}
_CLASS_NAMES = ("builtin", "service", "user", "all")

USAGE = (
    "usage: postconf [-a (server SASL types)] [-A (client SASL types)]"
    " [-b (bounce templates)] [-c config_dir] [-c param_class]"
    " [-d (parameter defaults)] [-e (edit configuration)] [-f (fold lines)]"
    " [-F (master.cf fields)] [-h (no names)] [-H (no values)] [-l (lock types)]"
    " [-m (map types)] [-M (master.cf)] [-n (non-default parameters)]"
    " [-o name=value (override parameter value)] [-p (main.cf, default)]"
    " [-P (master.cf parameters)] [-t (bounce templates)]"
    " [-T compile-version|run-version|public-key-algorithms] [-v (verbose)]"
    " [-x (expand parameter values)] [-X (exclude)] [-# (comment-out)] [name...]"
)


class _Usage(Exception):
    """A command line getopt() refuses; the text is glibc's complaint, if any."""


def _getopt(argv: list[str], rest: list[str]) -> Iterator[tuple[str, str]]:
    """POSIX getopt() with a leading ``+``: options up to the first other
    argument, one at a time, so that errors come in command-line order;
    the remaining arguments are left in ``rest``."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        j = 1
        while j < len(arg):
            letter = arg[j]
            j += 1
            at = _OPTIONS.find(letter)
            if letter == ":" or at < 0:
                raise _Usage(f"{PROG}: invalid option -- '{letter}'")
            if at + 1 < len(_OPTIONS) and _OPTIONS[at + 1] == ":":
                if j < len(arg):
                    value, j = arg[j:], len(arg)
                elif i + 1 < len(argv):
                    i += 1
                    value = argv[i]
                else:
                    raise _Usage(f"{PROG}: option requires an argument -- '{letter}'")
                yield letter, value
            else:
                yield letter, ""
        i += 1
    rest.extend(argv[i:])


def _param_classes(value: str) -> frozenset[str]:
    """``-C builtin,user`` (≈ name_mask_opt() with NAME_MASK_ANY_CASE)."""
    from postbus.cli.postconf_show import CLASSES

    chosen: set[str] = set()
    for word in value.replace(",", " ").split():
        if word.lower() not in CLASSES:
            raise Fatal(f'unknown -C option value "{word}" in "{value}"')
        chosen |= CLASSES[word.lower()]
    return frozenset(chosen)


def _names(letters: str) -> str:
    return " ".join(f"-{ch}" for ch in _FLAG_ORDER if ch in letters)


def _check_options(flags: str) -> None:
    """≈ pcf_check_exclusive_options() and pcf_check_compat_options()."""
    for group in _EXCLUSIVE:
        chosen = "".join(ch for ch in group if ch in flags)
        if len(chosen) > 1:
            raise Fatal(f"specify one of {_names(chosen)}")
    for major, allowed in _COMPATIBLE.items():
        if major in flags:
            excess = "".join(ch for ch in flags if ch != major and ch not in allowed)
            if excess:
                raise Fatal(f"with option -{major}, do not specify {_names(excess)}")


def run(argv: list[str], out: TextIO, err: TextIO) -> int:
    from postbus.cli import postconf_edit, postconf_other, postconf_show

    flags = ""
    config_dir = os.environ.get(ENV_CONFIG_DIR) or ""
    overridden = bool(config_dir)
    overrides: list[str] = []
    classes = _param_classes("all")
    tls_mode: str | None = None
    args: list[str] = []
    try:
        for letter, value in _getopt(argv, args):
            if letter in "bt" and ("b" in flags or "t" in flags):
                raise Fatal("specify one of -b and -t")
            if letter == "T" and tls_mode is not None:
                raise Fatal("At most one -T <mode> option may be specified")
            if letter == "E":
                raise _Usage("")
            if letter == "c":
                config_dir, overridden = value, True
            elif letter == "C":
                classes = _param_classes(value)
            elif letter == "o":
                overrides.append(value)
            elif letter == "T":
                tls_mode = value
            if letter not in flags + "cCv":
                flags += letter
    except _Usage as usage:
        if str(usage):
            print(usage, file=err)
        raise Fatal(USAGE) from None
    if not any(ch in flags for ch in _MAJOR):
        flags += "p"
    if args and "=" in args[0] and any(ch in flags for ch in "pMFP"):
        flags += "e" if "e" not in flags else ""
    _check_options(flags)
    if "e" in flags and not args:
        raise Fatal("-e requires name=value argument")
    session = Session(flags, config_dir or DEFAULT_CONFIG_DIR, overridden, out, err, overrides)
    if "b" in flags or "t" in flags:
        return postconf_other.show_templates(session, args)
    if "m" in flags:
        return postconf_other.show_maps(session)
    if "l" in flags:
        return postconf_other.show_locks(session)
    editing = any(ch in flags for ch in "eX#")
    if any(ch in flags for ch in "MFP") and not editing:
        postconf_show.run_master_show(session, args)
    elif "a" in flags or "A" in flags:
        return postconf_other.show_sasl(session, server="a" in flags)
    elif tls_mode is not None:
        return postconf_other.show_tls(session, tls_mode)
    elif editing:
        if not args:
            raise Fatal("missing service argument")
        if any(ch in flags for ch in "MFP"):
            postconf_edit.edit_master(session, args)
        else:
            postconf_edit.edit_main(session, args)
    else:
        postconf_show.run_main_show(session, args, classes)
    return 0


def main(
    argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run postconf with argv (without the program name); return the exit status."""
    stdout = sys.stdout if out is None else out
    stderr = sys.stderr if err is None else err
    try:
        return run(list(sys.argv[1:] if argv is None else argv), stdout, stderr)
    except Fatal as exc:
        stdout.flush()
        print(printable(f"{PROG}: fatal: {exc}"), file=stderr)
        return 1
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
