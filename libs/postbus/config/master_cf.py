"""master.cf parsing and printing (≈ master_ent.c, postconf_master.c).

Each logical line (continuation and comment rules as in main.cf) holds::

    service type private unpriv chroot wakeup maxproc command [args...]

Fields keep their text as written (``-`` stands for the default) so that
:meth:`MasterEntry.render` can print them like ``postconf -M``; the resolved
values come from :meth:`MasterEntry.is_private` and friends.  Defaults per
master(5) for Postfix 3.x: private ``y``, unpriv ``y``, chroot ``n``,
wakeup ``0`` (never), maxproc ``$default_process_limit``.

Daemon arguments are kept twice. :attr:`MasterEntry.argv` is postconf's
normalised form, for ``postconf -M`` and its edits: ``-oname=value``
becomes ``-o name=value``, ``-o { name = value }`` (Postfix 3.0) becomes
``-o name=value`` and a non-option argument in ``{}`` loses its braces.
:attr:`MasterEntry.overrides` and :attr:`MasterEntry.args` are what the
daemon gets, read as getopt(3) reads them.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field

from postbus.config.conv import ConfigError, split_list

__all__ = [
    "FIELD_NAMES", "SERVICE_PORTS", "MasterEntry", "parse_master_cf", "parse_master_entry",
    "render_arguments", "service_port",
]

_BLANKS = " \t\r\n"
_SPACE = " \t\r\n\v\f"  # ISSPACE()
_TYPES = frozenset({"inet", "unix", "unix-dgram", "fifo", "pass"})
_OPTIONS_WITH_VALUE = "o"
_COLUMN_GOAL = (0, 11, 17, 25, 33, 41, 49, 57)
#: The field names of ``postconf -F`` (≈ pcf_field_name_offset[]).
FIELD_NAMES = ("service", "type", "private", "unprivileged", "chroot", "wakeup",
               "process_limit", "command")
_LINE_LIMIT = 80
_INDENT = "    "

#: Well-known service names, so ``smtp inet`` works without /etc/services.
SERVICE_PORTS: dict[str, int] = {
    "smtp": 25,
    "submission": 587,
    "smtps": 465,
    "submissions": 465,
    "lmtp": 24,
    "qmqp": 628,
}


def service_port(name: str) -> int:
    """Port number of a numeric or named service (≈ find_inet_port())."""
    if name.isascii() and name.isdigit():
        port = int(name)
        if 0 < port < 65536:
            return port
        raise ConfigError(f'bad port number: "{name}"')
    if name in SERVICE_PORTS:
        return SERVICE_PORTS[name]
    try:
        return socket.getservbyname(name, "tcp")
    except OSError:
        raise ConfigError(f'unknown service: "{name}"') from None


Warn = Callable[[str], None] | None


def _balanced(text: str) -> int:
    """Length of the balanced ``{...}`` that starts text, 0 if none (≈ balpar())."""
    level = 0
    for index, ch in enumerate(text):
        if ch == "{":
            level += 1
        elif ch == "}":
            level -= 1
            if level == 0:
                return index + 1
    return 0


def _strip_braces(text: str, warn: Warn) -> str:
    """``{ text }`` → ``text`` (≈ extpar() with EXTPAR_FLAG_STRIP).

    A missing ``}`` or text after it is an error; with ``warn`` (postconf)
    it is reported and the text used as Postfix's postconf uses it.
    """
    length = _balanced(text)
    error = None
    if length == 0:
        error, inner = f"missing '}}' in \"{text}\"", text[1:]
    else:
        if length < len(text):
            error = f"syntax error after '}}' in \"{text}\""
        inner = text[1 : length - 1]
    if error is not None:
        if warn is None:
            raise ConfigError(error)
        warn(error)
    return inner.strip(_SPACE)


def _normalize_nameval(text: str, warn: Warn) -> str:
    """``name = value`` → ``name=value`` (≈ pcf_normalize_nameval()); text that is
    not name=value stays as it is (with ``warn``, Postfix's warning)."""
    stripped = text.lstrip(_SPACE)
    end = next((i for i, ch in enumerate(stripped) if ch in _SPACE + "="), len(stripped))
    rest = stripped[end:].lstrip(_SPACE)
    if not stripped or stripped[0] == "=":
        error = "missing attribute name"
    elif not rest.startswith("="):
        error = "missing '=' after attribute name"
    else:
        return f"{stripped[:end]}={rest[1:].strip(_SPACE)}"
    if warn is not None:
        warn(f'{error}: "{text}"')
    return text


def _normalize_args(args: list[str], warn: Warn = None) -> list[str]:
    """Daemon arguments in postconf's canonical form, for printing and editing
    (≈ pcf_normalize_daemon_args(), quirks included: an option word is split
    at any later ``o``, so ``-oname=no`` prints as ``-o name=n -o``)."""
    argv = list(args)
    at = 0
    while at < len(argv):
        arg = argv[at]
        if not arg.startswith("-") or arg == "--":
            break
        # Split "-stuffozz" into "-stuff" and "-ozz".
        for pos in range(2, len(arg)):
            if arg[pos] in _OPTIONS_WITH_VALUE:
                argv.insert(at + 1, "-" + arg[pos:])
                arg = argv[at] = arg[:pos]
                break
        if len(arg) < 2 or arg[1] not in _OPTIONS_WITH_VALUE:
            at += 1
            continue
        if len(arg) > 2:  # "-oname=value" becomes "-o" "name=value"
            argv[at : at + 1] = [arg[:2], arg[2:]]
        if at + 1 < len(argv):
            at += 1
            if argv[at].startswith("{"):
                argv[at] = _normalize_nameval(_strip_braces(argv[at], warn), warn)
        at += 1
    for index in range(at, len(argv)):
        if argv[index].startswith("{"):
            argv[index] = _strip_braces(argv[index], warn)
    return argv


def _daemon_arguments(args: list[str], warn: Warn = None) -> tuple[list[str], dict[str, str]]:
    """What a daemon gets: its arguments other than ``-o``, and the ``-o``
    settings, in order, read as getopt(3) reads them (``-vo name=value``,
    ``-oname=value``, ``-o { name = value }``); other arguments lose their
    braces."""
    rest: list[str] = []
    overrides: dict[str, str] = {}
    at = 0
    while at < len(args) and args[at].startswith("-") and args[at] != "--":
        letters = args[at][1:]
        at += 1
        pos = letters.find("o")
        if pos < 0:
            rest.append("-" + letters)
            continue
        if pos > 0:
            rest.append("-" + letters[:pos])
        value = letters[pos + 1 :]
        if not value and at < len(args):
            value, at = args[at], at + 1
        if value.startswith("{"):
            value = _normalize_nameval(_strip_braces(value, warn), None)
        name, sep, setting = value.partition("=")
        if sep and name.strip(_BLANKS):
            overrides[name.strip(_BLANKS)] = setting.strip(_BLANKS)
    rest += [_strip_braces(arg, warn) if arg.startswith("{") else arg for arg in args[at:]]
    return rest, overrides


@dataclass
class MasterEntry:
    """One master.cf service."""

    service: str
    type: str
    private: str
    unpriv: str
    chroot: str
    wakeup: str
    maxproc: str
    command: str
    args: list[str] = field(default_factory=list)  # arguments other than -o pairs
    overrides: dict[str, str] = field(default_factory=dict)  # -o name=value, in order
    line: int = 0
    file: str = "master.cf"
    argv: list[str] = field(default_factory=list)  # all arguments, normalised, in order

    # -- resolved fields ---------------------------------------------------

    @property
    def name(self) -> str:
        """``service/type``, the key postconf uses (``smtp/inet``)."""
        return f"{self.service}/{self.type}"

    def is_private(self) -> bool:
        return self.private != "n"

    def is_unpriv(self) -> bool:
        return self.unpriv != "n"

    def is_chroot(self) -> bool:
        return self.chroot == "y"

    def wakeup_seconds(self) -> int:
        """Wakeup period in seconds; 0 means never.  A ``?`` suffix is dropped."""
        text = self.wakeup.rstrip("?")
        return 0 if text in ("-", "") else int(text)

    def max_processes(self, default_process_limit: int = 100) -> int:
        """Process limit; 0 means no limit."""
        return default_process_limit if self.maxproc == "-" else int(self.maxproc)

    def listen_address(self) -> tuple[str, int] | None:
        """``(host, port)`` an inet service listens on; host ``""`` means all.

        ``smtp`` → ("", 25), ``127.0.0.1:2525`` → ("127.0.0.1", 2525),
        ``[::1]:2525`` → ("::1", 2525), ``2525`` → ("", 2525).
        """
        if self.type != "inet":
            return None
        host, sep, port = self.service.rpartition(":")
        if not sep:
            host, port = "", self.service
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        try:
            return host, service_port(port)
        except ConfigError as err:
            raise err.located(file=self.file, line=self.line) from None

    # -- printing ------------------------------------------------------------

    @property
    def fields(self) -> list[str]:
        """The eight fields as written, in :data:`FIELD_NAMES` order."""
        return [self.service, self.type, self.private, self.unpriv, self.chroot,
                self.wakeup, self.maxproc, self.command]

    def set_field(self, index: int, value: str, warn: Warn = None) -> None:
        """Replace one field, as ``postconf -Fe`` does (≈ pcf_edit_master_field()):
        a new ``command`` brings its own arguments. Checks the fields like the
        parser, quoting the new value in the error."""
        fields = self.fields
        if index == len(FIELD_NAMES) - 1:
            words = split_list(value, _BLANKS)
            fields[index:] = words[:1]
            self.argv = _normalize_args(words[1:], warn)
            self.args, self.overrides = _daemon_arguments(words[1:], warn and (lambda text: None))
        else:
            fields[index] = value
        _check(fields, value, self.file, self.line)
        (self.service, self.type, self.private, self.unpriv, self.chroot, self.wakeup,
         self.maxproc) = fields[:7]
        self.command = fields[7] if len(fields) > 7 else ""

    def render(self, fold: bool = False, expand: Callable[[str], str] | None = None) -> str:
        """The entry as ``postconf -M`` prints it (``-Mf`` with fold, ``-Mx``
        with ``expand`` applied to each ``-o`` value).

        Like postconf, a first non-option argument with blanks is printed
        without braces; later ones get ``{}``.
        """
        out: list[str] = []
        length = 0
        for index, text in enumerate(self.fields):
            if length > 0:
                pad = max(1, _COLUMN_GOAL[index] - length)
                out.append(" " * pad)
                length += pad
            out.append(text)
            length += len(text)
        return "".join(out) + render_arguments(self.argv, length, fold, expand)


def render_arguments(
    argv: list[str], length: int, fold: bool,
    expand: Callable[[str], str] | None = None, option_gap: int = 3,
) -> str:
    """Daemon arguments after a command printed up to column ``length``
    (≈ the argument loop of pcf_print_master_entry() and, with option_gap 1,
    of pcf_print_master_field()): an option with a value starts and ends a
    line; with fold, other words wrap at 80 columns.
    """
    out: list[str] = []
    in_options = True
    first_plain = True
    i = 0
    while i < len(argv):
        arg = argv[i]
        value: str | None = None
        braces = False
        size = len(arg)
        if in_options and (not arg.startswith("-") or arg == "--"):
            in_options = False
        elif in_options and len(arg) > 1 and arg[1] in _OPTIONS_WITH_VALUE and i + 1 < len(argv):
            length = _LINE_LIMIT
            value = argv[i + 1]
            if expand is not None and arg == "-o":
                value = expand(value)
            braces = any(ch in _BLANKS for ch in value)
            size += len(value) + option_gap + (2 if braces else 0)
        if not in_options:
            braces = not first_plain and any(ch in _BLANKS for ch in arg)
            first_plain = False
        if length > len(_INDENT):
            if not fold or length + 1 + size < _LINE_LIMIT:
                out.append(" ")
                length += 1
            else:
                out.append("\n" + _INDENT)
                length = len(_INDENT)
        text = f"{{{arg}}}" if braces and value is None else arg
        out.append(text)
        length += len(text)
        if value is not None:
            out.append(" " + (f"{{{value}}}" if braces else value))
            length = _LINE_LIMIT
            i += 1
        i += 1
    return "".join(out)


def _check(fields: list[str], text: str, filename: str, lineno: int) -> None:
    """Per-field sanity checks (≈ pcf_check_master_entry())."""

    def fail(what: str, value: str) -> ConfigError:
        reason = f'invalid {what} field "{value}" in "{text}"'
        return ConfigError(reason, file=filename, line=lineno)

    if fields[1] not in _TYPES:
        raise fail("type", fields[1])
    for what, value in zip(FIELD_NAMES[2:5], fields[2:5], strict=True):
        if value not in ("y", "n", "-"):
            raise fail(what, value)
    wakeup = fields[5][:-1] if fields[5].endswith("?") else fields[5]
    if wakeup != "-" and not (wakeup.isascii() and (wakeup.isdigit() or not wakeup)):
        raise fail("wakeup", fields[5])
    if fields[6] != "-" and not (fields[6].isascii() and fields[6].isdigit()):
        raise fail("process_limit", fields[6])


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines; skip blank and comment lines (≈ readllines())."""
    result: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip(_BLANKS)
        if not stripped or stripped.startswith("#"):
            continue
        if line[0] in _BLANKS and result:
            start, joined = result[-1]
            result[-1] = (start, f"{joined} {stripped}")
        else:
            result.append((number, stripped))
    return result


def parse_master_entry(
    logical: str, filename: str = "master.cf", lineno: int = 0, warn: Warn = None
) -> MasterEntry:
    """One entry from its logical line (≈ pcf_parse_master_entry()); ``warn``
    receives the brace slips that postconf only warns about, without it
    they are errors."""
    fields = split_list(logical, _BLANKS)
    if len(fields) < 8:
        raise ConfigError("bad field count", file=filename, line=lineno)
    _check(fields, logical, filename, lineno)
    try:
        argv = _normalize_args(fields[8:], warn)
        args, overrides = _daemon_arguments(fields[8:], warn and (lambda text: None))
    except ConfigError as err:
        raise err.located(file=filename, line=lineno) from None
    return MasterEntry(
        service=fields[0],
        type=fields[1],
        private=fields[2],
        unpriv=fields[3],
        chroot=fields[4],
        wakeup=fields[5],
        maxproc=fields[6],
        command=fields[7],
        args=args,
        overrides=overrides,
        line=lineno,
        file=filename,
        argv=argv,
    )


def parse_master_cf(
    text: str, filename: str = "master.cf", warn: Warn = None
) -> list[MasterEntry]:
    """Parse master.cf text into entries, in file order (see :func:`parse_master_entry`)."""
    return [parse_master_entry(logical, filename, lineno, warn)
            for lineno, logical in _logical_lines(text)]
