"""postbus postconf: show and edit main.cf and master.cf, as postconf(1) does.

Flags, output and diagnostics follow Postfix 3.7's postconf (postconf.c,
postconf_main.c, postconf_master.c, postconf_edit.c, postconf_user.c,
postconf_unused.c):

- ``postconf [-n|-d] [-h|-H] [-x] [-f] [name ...]``: parameters as
  ``name = value``, sorted; ``-n`` only what main.cf sets, ``-d`` defaults.
  Whitespace in values is normalised; ``-f`` folds long lines.
- ``-e name=value ...`` (also plain ``name=value``), ``-X name``, ``-# name``:
  edit main.cf in place (:class:`~postbus.config.main_cf.MainCf`).
- ``-M [service[/type]]``, ``-Mf``, ``-Me service/type='entry'``, ``-MX``,
  ``-M#``: master.cf entries (:meth:`MasterEntry.render`).
- ``-P [service[/type[/name]]]``, ``-Pe service/type/name=value``, ``-PX``:
  the ``-o name=value`` overrides of master.cf services.
- ``-m``: lookup table types; ``-l``: locking methods; ``-c dir``.

Besides the parameter registry, postconf knows the per-transport names it
derives from master.cf (``relay_destination_concurrency_limit``) and the
user-defined names that some value refers to as ``$name``; other names set
in main.cf or with ``-o`` are reported as unused.  A fatal error exits 1.
"""

from __future__ import annotations

import getopt
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from postbus.config.conv import ConfigError, split_list
from postbus.config.loader import DEFAULT_CONFIG_DIR, ENV_CONFIG_DIR
from postbus.config.main_cf import MainCf, expand, references
from postbus.config.master_cf import MasterEntry, parse_master_cf
from postbus.params import HOST_DEPENDENT, PARAMS, RAW_PARAMS, default_value, host_default

__all__ = ["main"]

PROG = "postconf"
SEPARATORS = " \t\r\n"
LINE_LIMIT = 80
INDENT = "    "
MASTER_BLANKS = " \t\r\n"

#: Option letters in the order postconf names them in diagnostics.
_FLAG_ORDER = "aAbCdefFhHlmMnopPtTxX#"
_MAJOR = "mlMPFp"
_EXCLUSIVE = ("den#X", "fe#X", "xe#X", "de#X", "he#XH")
_COMPATIBLE = {
    "m": "",
    "l": "",
    "p": "eX#fhxdnH",
    "M": "eX#fx",
    "F": "efhxH",
    "P": "eXfhxH",
}

#: Per-transport parameters postconf derives from master.cf commands
#: (≈ pcf_register_service_parameters()): suffix -> global default name.
_SERVICE_SUFFIXES = {
    "_recipient_limit": "default_recipient_limit",
    "_extra_recipient_limit": "default_extra_recipient_limit",
    "_recipient_refill_limit": "default_recipient_refill_limit",
    "_recipient_refill_delay": "default_recipient_refill_delay",
    "_delivery_slot_cost": "default_delivery_slot_cost",
    "_delivery_slot_loan": "default_delivery_slot_loan",
    "_delivery_slot_discount": "default_delivery_slot_discount",
    "_minimum_delivery_slots": "default_minimum_delivery_slots",
    "_initial_destination_concurrency": "initial_destination_concurrency",
    "_destination_concurrency_limit": "default_destination_concurrency_limit",
    "_destination_recipient_limit": "default_destination_recipient_limit",
    "_destination_concurrency_positive_feedback":
        "default_destination_concurrency_positive_feedback",
    "_destination_concurrency_negative_feedback":
        "default_destination_concurrency_negative_feedback",
    "_destination_concurrency_failed_cohort_limit":
        "default_destination_concurrency_failed_cohort_limit",
    "_destination_rate_delay": "default_destination_rate_delay",
    "_transport_rate_delay": "default_transport_rate_delay",
}
_TIME_LIMIT = {"_time_limit": "command_time_limit"}
_DELIVERY_COMMANDS = {
    "local": _SERVICE_SUFFIXES,
    "error": _SERVICE_SUFFIXES,
    "virtual": _SERVICE_SUFFIXES,
    "smtp": _SERVICE_SUFFIXES,
    "lmtp": _SERVICE_SUFFIXES,
    "pipe": {**_TIME_LIMIT, **_SERVICE_SUFFIXES},
    "spawn": _TIME_LIMIT,
}

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


class Fatal(Exception):
    """A postconf fatal error: ``postconf: fatal: <text>``, exit status 1."""


@dataclass
class Session:
    """One postconf run: flags, files and the parameter name spaces."""

    flags: str
    config_dir: str
    dir_overridden: bool
    out: TextIO
    err: TextIO
    overrides: list[str] = field(default_factory=list)
    main: dict[str, str] = field(default_factory=dict)  # ≈ CONFIG_DICT
    master: list[MasterEntry] = field(default_factory=list)
    known: dict[str, str] = field(default_factory=dict)  # name -> default
    local_valid: dict[int, set[str]] = field(default_factory=dict)
    host_defaults: dict[str, str] = field(default_factory=dict)

    def warn(self, text: str) -> None:
        self.out.flush()
        print(f"{PROG}: warning: {text}", file=self.err)

    @property
    def main_path(self) -> str:
        return f"{self.config_dir}/main.cf"

    @property
    def master_path(self) -> str:
        return f"{self.config_dir}/master.cf"


# -- helpers ---------------------------------------------------------------


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


def service_params(entry: MasterEntry) -> dict[str, str]:
    """The ``-o name=value`` settings before the first non-option argument."""
    params: dict[str, str] = {}
    argv = entry.argv
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "--":
            break
        if len(arg) < 2 or arg[1] != "o" or i + 1 >= len(argv):
            i += 1
            continue
        if arg == "-o":
            name, sep, value = argv[i + 1].partition("=")
            if sep and name.strip(SEPARATORS):
                params[name.strip(SEPARATORS)] = value.strip(SEPARATORS)
        i += 2
    return params


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


def _match(pattern: str, value: str) -> bool:
    return pattern == "*" or pattern == value


def _match_service(pattern: list[str], entry_service: str, entry_type: str) -> bool:
    return _match(pattern[0], entry_service) and _match(pattern[1], entry_type)


# -- reading ---------------------------------------------------------------------


def _read_text(path: str, fatal: bool, session: Session) -> str | None:
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
    """Load main.cf into the name space (≈ pcf_read_parameters())."""
    text = _read_text(session.main_path, True, session) or ""
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
        value = split_nameval("".join(line for line in span if not _is_comment(line)))[1]
        earlier = stored.get(entry.name)
        if earlier is not None and earlier != value:
            session.warn(
                f"{session.main_path}, line {entry.line}: overriding earlier entry: "
                f"{entry.name}={earlier}"
            )
        stored[entry.name] = value
        session.main[entry.name] = entry.value
    for text in session.overrides:
        name, value = split_nameval(text)
        session.main[name] = value


def read_master(session: Session, fatal: bool) -> None:
    text = _read_text(session.master_path, fatal, session)
    if text is None:
        return
    try:
        session.master = parse_master_cf(text, session.master_path)
    except ConfigError as err:
        raise Fatal(str(err)) from None


def _derived(name: str) -> bool:
    """A registry name that postconf derives from a master.cf transport
    (smtp_destination_concurrency_limit): known only when that service is."""
    default = PARAMS[name].default
    suffixes = _SERVICE_SUFFIXES.items()
    return any(name.endswith(suffix) and default == f"${base}" for suffix, base in suffixes)


def register_builtin(session: Session) -> None:
    """The registry plus postconf's read-only per-process names."""
    session.known = {name: PARAMS[name].default for name in PARAMS if not _derived(name)}
    session.known.update(service_name="", process_name=PROG, process_id=str(os.getpid()))


def register_services(session: Session) -> None:
    """Per-transport names for delivery agents in master.cf."""
    for entry in session.master:
        for suffix, base in _DELIVERY_COMMANDS.get(entry.command, {}).items():
            name = entry.service + suffix
            if base in PARAMS and name not in session.known:
                session.known[name] = f"${base}"


def register_user(session: Session) -> None:
    """Validate user-defined names that a value refers to (≈ postconf_user.c)."""
    scopes = [(i, service_params(e)) for i, e in enumerate(session.master)]
    session.local_valid = {i: set() for i, params in scopes if params}
    rest_classes: set[str] = set()

    def flag(name: str, scope: int | None, warn: bool = True) -> None:
        supplied = False
        if scope is not None and name in scopes[scope][1]:
            supplied = True
            session.local_valid[scope].add(name)
        elif name in session.main:
            supplied = True
            session.known.setdefault(name, "")
        if scope is None:
            for index, params in scopes:
                if name in params:
                    supplied = True
                    session.local_valid[index].add(name)
        if warn and not supplied and name not in session.known:
            source = "main.cf" if scope is None else "master.cf"
            session.warn(f"{session.config_dir}/{source}: undefined parameter: {name}")

    def scan(value: str, scope: int | None, warn: bool = True) -> None:
        try:
            names = references(value)
        except ConfigError as err:
            raise Fatal(str(err)) from None
        for name in names:
            flag(name, scope, warn)

    def scan_space(params: dict[str, str], scope: int | None) -> None:
        classes = params.get("smtpd_restriction_classes")
        if classes is not None:
            lookup = _lookup_chain(session, scope, defaults_only=False)
            for name in split_list(_expand(classes, lookup)):
                if scope is None:
                    rest_classes.add(name)
                flag(name, scope)
        for name, value in params.items():
            if scope is not None and name in rest_classes:
                session.local_valid[scope].add(name)
            if name in RAW_PARAMS:
                continue
            scan(value, scope)

    for index, params in scopes:
        if params:
            scan_space(params, index)
    for name in list(session.known):
        if name not in session.main and name not in RAW_PARAMS:
            # Defaults may name Postfix parameters Postbus lacks: no warning.
            scan(session.known[name], None, warn=False)
    scan_space(session.main, None)


def flag_unused(session: Session, main_cf: bool = True) -> None:
    """Warn about names nobody uses (≈ postconf_unused.c), main.cf then master.cf."""
    for name, value in session.main.items() if main_cf else ():
        if name not in session.known:
            session.warn(f"{session.main_path}: unused parameter: {name}={value}")
    for index, entry in enumerate(session.master):
        valid = session.local_valid.get(index, set())
        for name, value in service_params(entry).items():
            if name not in session.known and name not in valid:
                session.warn(f"{session.master_path}: unused parameter: {name}={value}")


# -- lookups and expansion ----------------------------------------------------------


def _default(session: Session, name: str) -> str | None:
    """The default of a known name; host-dependent ones follow main.cf
    (mydomain from myhostname) except with -d, which ignores main.cf."""
    if name not in session.known:
        return None
    if name not in HOST_DEPENDENT:
        return session.known[name]
    if name not in session.host_defaults:
        if "d" in session.flags:
            value = default_value(name)
        else:
            lookup = _lookup_chain(session, None, defaults_only=False)
            value = host_default(name, lambda other: _expand(lookup(other) or "", lookup))
        session.host_defaults[name] = value
    return session.host_defaults[name]


def _lookup_chain(
    session: Session, scope: int | None, defaults_only: bool
) -> Callable[[str], str | None]:
    local: dict[str, str] = {}
    if scope is not None:
        local = {"service_name": session.master[scope].service}
        local.update(service_params(session.master[scope]))

    def lookup(name: str) -> str | None:
        if defaults_only:
            return _default(session, name)
        if name in local:
            return local[name]
        if name in session.main:
            return session.main[name]
        return _default(session, name)

    return lookup


def _expand(value: str, lookup: Callable[[str], str | None]) -> str:
    try:
        return expand(value, lookup)
    except ConfigError as err:
        raise Fatal(f"macro processing error: {err}") from None


def _print_value(session: Session, name: str, value: str, raw: bool, scope: int | None) -> None:
    flags = session.flags
    fold = "f" in flags
    if "H" in flags:
        session.out.write(format_line(name, fold))
        return
    if "x" in flags and not raw:
        value = _expand(value, _lookup_chain(session, scope, "d" in flags))
    text = value if "h" in flags else f"{name} = {value}"
    session.out.write(format_line(text, fold))


# -- showing parameters ----------------------------------------------------------------


def show_parameters(session: Session, names: list[str]) -> None:
    """``postconf [-n|-d] [name ...]`` (≈ pcf_show_parameters())."""
    flags = session.flags

    def value_of(name: str) -> str | None:
        if "d" in flags:
            return _default(session, name)
        if name in session.main:
            return session.main[name]
        return None if "n" in flags else _default(session, name)

    if not names:
        for name in sorted(session.known):
            value = value_of(name)
            if value is not None:
                _print_value(session, name, value, name in RAW_PARAMS, None)
        return
    for name in names:
        if name not in session.known:
            session.warn(f"{name}: unknown parameter")
            continue
        value = value_of(name)
        if value is not None:
            _print_value(session, name, value, name in RAW_PARAMS, None)


def run_main_show(session: Session, args: list[str]) -> None:
    defaults = "d" in session.flags
    if not defaults:
        read_main(session)
    register_builtin(session)
    read_master(session, fatal=False)
    register_services(session)
    if not defaults:
        register_user(session)
    show_parameters(session, args)
    if not defaults:
        flag_unused(session)


# -- showing master.cf ----------------------------------------------------------------


def _report_unmatched(session: Session, raw: list[str], counts: list[int]) -> None:
    for text, count in zip(raw, counts, strict=True):
        if count == 0:
            session.warn(f'unmatched request: "{text}"')


def show_master_entries(session: Session, args: list[str]) -> None:
    patterns = []
    for text in args:
        pattern = service_pattern(text, 1, 2)
        if pattern is None:
            raise Fatal("-M option requires service_name[/type]")
        patterns.append(pattern)
    counts = [0] * len(patterns)
    fold = "f" in session.flags
    for entry in session.master:
        if not patterns:
            session.out.write(entry.render(fold) + "\n")
        for i, pattern in enumerate(patterns):
            if _match_service(pattern, entry.service, entry.type):
                counts[i] += 1
                session.out.write(entry.render(fold) + "\n")
    _report_unmatched(session, args, counts)


def show_master_params(session: Session, args: list[str]) -> None:
    patterns = []
    for text in args:
        pattern = service_pattern(text, 1, 3)
        if pattern is None:
            raise Fatal("-P option requires service_name[/type[/parameter]]")
        patterns.append(pattern)
    counts = [0] * len(patterns)

    def show(index: int, entry: MasterEntry, name: str, value: str) -> None:
        _print_value(session, f"{entry.name}/{name}", value, False, index)

    for index, entry in enumerate(session.master):
        params = service_params(entry)
        if not params:
            continue
        if not patterns:
            for name in sorted(params):
                show(index, entry, name, params[name])
        for i, pattern in enumerate(patterns):
            if not _match_service(pattern, entry.service, entry.type):
                continue
            if pattern[2] == "*":
                for name in sorted(params):
                    show(index, entry, name, params[name])
                counts[i] += 1
            elif pattern[2] in params:
                show(index, entry, pattern[2], params[pattern[2]])
                counts[i] += 1
    _report_unmatched(session, args, counts)


def run_master_show(session: Session, args: list[str]) -> None:
    read_master(session, fatal=True)
    read_main(session)
    register_builtin(session)
    register_services(session)
    register_user(session)
    if "P" in session.flags:
        show_master_params(session, args)
    else:
        show_master_entries(session, args)
    flag_unused(session, main_cf=False)


def _is_comment(line: str) -> bool:
    stripped = line.strip(MASTER_BLANKS)
    return not stripped or stripped.startswith("#")


# -- the command -----------------------------------------------------------------------------


def _check_options(flags: str) -> None:
    def names(letters: str) -> str:
        return " ".join(f"-{ch}" for ch in _FLAG_ORDER if ch in letters)

    major = "".join(ch for ch in _MAJOR if ch in flags)
    if len(major) > 1:
        raise Fatal(f"specify one of {names(major)}")
    for group in _EXCLUSIVE:
        chosen = "".join(ch for ch in group if ch in flags)
        if len(chosen) > 1:
            raise Fatal(f"specify one of {names(chosen)}")
    allowed = _COMPATIBLE[major]
    excess = "".join(ch for ch in flags if ch not in allowed and ch != major and ch != "c")
    if excess:
        raise Fatal(f"with option -{major}, do not specify {names(excess)}")


def run(argv: list[str], out: TextIO, err: TextIO) -> int:
    from postbus.cli.postconf_edit import edit_main, edit_master  # imports this module
    try:
        opts, args = getopt.gnu_getopt(argv, "c:defhHlmMno:pPxX#")
    except getopt.GetoptError as exc:
        if "requires argument" in exc.msg:
            print(f"{PROG}: option requires an argument -- '{exc.opt}'", file=err)
        else:
            print(f"{PROG}: invalid option -- '{exc.opt}'", file=err)
        raise Fatal(USAGE) from None
    flags = ""
    config_dir = os.environ.get(ENV_CONFIG_DIR) or ""
    overridden = bool(config_dir)
    overrides: list[str] = []
    for opt, value in opts:
        letter = opt[1]
        if letter == "c":
            config_dir, overridden = value, True
        elif letter == "o":
            overrides.append(value)
        if letter not in flags:
            flags += letter
    if not any(ch in flags for ch in _MAJOR):
        flags += "p"
    if args and "=" in args[0] and any(ch in flags for ch in "pMP") and "e" not in flags:
        flags += "e"
    _check_options(flags.replace("o", ""))
    if "e" in flags and not args:
        raise Fatal("-e requires name=value argument")
    session = Session(
        flags, config_dir or DEFAULT_CONFIG_DIR, overridden, out, err, overrides
    )
    if "m" in flags:
        from postbus.maps.table import registered_types

        for name in registered_types():
            out.write(name + "\n")
    elif "l" in flags:
        out.write("flock\nfcntl\ndotlock\n")
    elif any(ch in flags for ch in "MP") and not any(ch in flags for ch in "eX#"):
        run_master_show(session, args)
    elif any(ch in flags for ch in "eX#"):
        if not args:
            raise Fatal("missing service argument")
        if any(ch in flags for ch in "MP"):
            edit_master(session, args)
        else:
            edit_main(session, args)
    else:
        run_main_show(session, args)
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
        print(f"{PROG}: fatal: {exc}", file=stderr)
        return 1
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
