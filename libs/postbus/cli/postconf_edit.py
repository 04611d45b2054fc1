"""postbus postconf, the editing half: ``-e``, ``-X`` and ``-#`` on main.cf;
``-Me``, ``-Fe``, ``-Pe``, ``-MX``, ``-PX`` and ``-M#`` on master.cf
(≈ postconf_edit.c).

Both files are copied line by line, as Postfix's postconf copies them, so
that comments, blank lines, line ends and the order of everything not
edited stay byte for byte; an edited master.cf entry is printed like
``postconf -Mf`` prints it. Any service line can be edited, whether
Postbus runs it as a role of its own, inside another role or not at all.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

from postbus.cli.postconf_session import (
    MASTER_BLANKS,
    Fatal,
    Session,
    master_error,
    match_service,
    service_pattern,
    split_nameval,
)
from postbus.cli.postconf_show import field_number
from postbus.config.conv import ConfigError
from postbus.config.master_cf import FIELD_NAMES, MasterEntry, parse_master_entry

__all__ = ["edit_main", "edit_master"]

_SPACE = " \t\n\v\f\r"  # ISSPACE()
_LINE = re.compile(r"[^\n]*\n|[^\n]+\Z")  # ≈ vstring_get(): only newline ends a line
_EDIT_OPTIONS = "-Me, -Fe, -Pe, -X, or -#"
_COMMAND = len(FIELD_NAMES) - 1


def _edit(path: str, edit: Callable[[list[str]], str]) -> None:
    """Rewrite a file through ``file.tmp`` (≈ edit_file_open(), edit_file_close()):
    ``edit`` gets the lines with their line ends (the last may have none)
    and returns the new text. On a fatal error the file stays as it was."""
    temp = path + ".tmp"
    try:
        fd = os.open(temp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    except OSError as exc:
        raise Fatal(f"open {temp}: {exc.strerror}") from None
    with open(fd, "w", encoding="utf-8", errors="surrogateescape", newline="") as tmp:
        try:
            try:
                with open(path, encoding="utf-8", errors="surrogateescape", newline="") as fp:
                    lines = _LINE.findall(fp.read())
            except OSError as exc:
                raise Fatal(f"open {path} for reading: {exc.strerror}") from None
            tmp.write(edit(lines))
        except BaseException:
            os.unlink(temp)
            raise
    os.replace(temp, path)


def _content(line: str) -> str | None:
    """The text of a line from its first non-blank, None for a comment or a
    blank line (≈ pcf_find_cf_info())."""
    text = line.lstrip(_SPACE)
    return None if not text or text.startswith("#") else text


def _check_request(text: str, options: str) -> str:
    if "\n" in text:
        raise Fatal(f"{options} no multi-line input")
    stripped = text.lstrip(_SPACE)
    if stripped.startswith("#"):
        raise Fatal(f"{options} no comment input")
    return stripped


# -- main.cf ---------------------------------------------------------------------------


def edit_main(session: Session, args: list[str]) -> None:
    """``-e``, ``-X`` and ``-#`` on main.cf (≈ pcf_edit_main()).

    New names are appended in the order given (Postfix: hash-table order).
    """
    flags = session.flags
    requests: dict[str, str | None] = {}
    for arg in args:
        text = _check_request(arg, "-e, -X, or -# accepts")
        value: str | None = None
        if "e" in flags:
            name, value = split_nameval(text)
        else:
            if not text:
                raise Fatal("-X or -# requires non-blank parameter names")
            if "=" in text:
                raise Fatal("-X or -# requires parameter names without value")
            name = text  # as in Postfix: trailing blanks stay (a trimblanks() no-op)
        if name in requests:
            earlier = name if requests[name] is None else f"{name} = {requests[name]}"
            session.warn(f"ignoring earlier request: '{earlier}'")  # Postfix: a crash
            del requests[name]
        requests[name] = value
    path = session.main_path
    _edit(path, lambda lines: _edit_main_lines(session, requests, lines))


def _edit_main_lines(session: Session, requests: dict[str, str | None], lines: list[str]) -> str:
    flags = session.flags
    path = session.main_path
    found = dict.fromkeys(requests, 0)
    out: list[str] = []
    interesting = False
    for line in lines:
        text = _content(line)
        if text is None:
            out.append(line)
        elif len(text) < len(line):  # continued text
            if not interesting:
                out.append(line)
            elif "#" in flags:
                out.append("#" + line)
        else:
            key = text[: next((i for i, ch in enumerate(text) if ch in _SPACE + "="), len(text))]
            interesting = key in requests
            if not interesting:
                out.append(line)
                continue
            found[key] += 1
            if found[key] == 2:
                session.warn(f'{path}: multiple entries for "{key}"')
            if "e" in flags:
                out.append(f"{key} = {requests[key]}\n")
            elif "#" in flags:
                out.append("#" + line)
    if "e" in flags:
        out += [f"{name} = {value}\n" for name, value in requests.items() if not found[name]]
    return "".join(out)


# -- master.cf -------------------------------------------------------------------------


@dataclass
class _Request:
    raw: str
    pattern: list[str]
    value: str | None
    field: int = -1
    count: int = 0


def _requests(session: Session, args: list[str]) -> list[_Request]:
    flags = session.flags
    requests = []
    for arg in args:
        text = _check_request(arg, f"{_EDIT_OPTIONS} accept")
        value: str | None = None
        if "e" in flags:
            text, value = split_nameval(text, arg)
        else:
            if "=" in text:
                raise Fatal("-X or -# requires names without value")
        if "M" in flags:
            pattern = service_pattern(text, 2, 2)
            if pattern is None:
                raise Fatal("-Me, -MX or -M# requires service_name/type")
            requests.append(_Request(arg, pattern, value))
        elif "F" in flags:
            pattern = service_pattern(text, 3, 3)
            if pattern is None:
                raise Fatal("-Fe or -FX requires service_name/type/field_name")
            field = field_number(pattern[2])
            if field is None:
                raise Fatal("-Fe does not accept wild-card field name")
            if value is not None and field < _COMMAND and _has_blank(value):
                raise Fatal("-Fe does not accept whitespace in non-command field")
            requests.append(_Request(arg, pattern, value, field))
        else:
            pattern = service_pattern(text, 3, 3)
            if pattern is None:
                raise Fatal("-Pe or -PX requires service_name/type/parameter")
            if pattern[2] == "*":
                raise Fatal("-Pe does not accept wild-card parameter name")
            if value is not None and _has_blank(value):
                raise Fatal("-Pe does not accept whitespace in parameter value")
            requests.append(_Request(arg, pattern, value))
    return requests


def _has_blank(text: str) -> bool:
    return any(ch in MASTER_BLANKS for ch in text)


def _parse_entry(text: str, session: Session, where: str | None, lineno: int = 0) -> MasterEntry:
    """One entry from request text (errors quote ``where``) or from the file."""
    try:
        return parse_master_entry(text, session.master_path, lineno,
                                  warn=lambda text: session.warn(f"master.cf: {text}"))
    except ConfigError as err:
        if err.reason.startswith("invalid "):
            raise Fatal(err.reason.replace("\n", " ")) from None
        if where is None:
            raise master_error(err, session.master_path) from None
        raise Fatal(f"{err.reason}: {where}") from None


def _set_field(entry: MasterEntry, field: int, value: str, session: Session) -> None:
    try:
        entry.set_field(field, value, warn=lambda text: session.warn(f"master.cf: {text}"))
    except ConfigError as err:
        raise Fatal(err.reason.replace("\n", " ")) from None


def edit_master(session: Session, args: list[str]) -> None:
    """``-Me``, ``-Fe``, ``-Pe``, ``-MX``, ``-PX``, ``-M#`` (≈ pcf_edit_master()).

    ``-Me name/type=entry`` replaces the first entry that matches name/type
    or the new entry's own name and type, removes the other matches, and
    appends the entry when none matched; ``-Fe`` and ``-Pe`` change the
    matching entries in place and warn about a request nothing matched.
    """
    requests = _requests(session, args)
    _edit(session.master_path, lambda lines: _edit_master_lines(session, requests, lines))


def _edit_master_lines(session: Session, requests: list[_Request], lines: list[str]) -> str:
    flags = session.flags
    whole = "M" in flags and "e" in flags
    rewrite = "e" in flags or ("P" in flags and "X" in flags)
    path = session.master_path
    out: list[str] = []
    matched = False
    at = 0
    lineno = 0
    while at < len(lines):
        line = lines[at]
        at += 1
        lineno += 1
        text = _content(line)
        if text is None:
            out.append(line)
            continue
        if len(text) < len(line):  # continued text
            if not matched:
                out.append(line)
            elif "#" in flags:
                out.append("#" + line)
            continue
        matched = False
        words = text.split()
        if len(words) < 2:
            raise Fatal(f"file {path}: line {lineno}: specify service name and type "
                        "on the same line")
        name, kind = words[0], words[1]
        if "=" in name:
            raise Fatal(f'file {path}: line {lineno}: service name syntax "{name}" is '
                        f"unsupported with {_EDIT_OPTIONS}")
        if "=" in kind or "/" in kind:
            raise Fatal(f'file {path}: line {lineno}: service type syntax "{kind}" is '
                        f"unsupported with {_EDIT_OPTIONS}")
        new_entry: MasterEntry | None = None
        for req in requests:
            tentative = None
            use_tentative = False
            if whole:
                assert req.value is not None
                tentative = _parse_entry(req.value, session, f'"{req.raw}"')
            if match_service(req.pattern, name, kind):
                matched = True
                req.count += 1
                if rewrite and "M" not in flags:
                    if new_entry is None:
                        full = line
                        # Gobble continuation lines; comments and blank lines go out first.
                        # (Postfix does not count these lines in later messages.)
                        while at < len(lines) and lines[at][:1] in ("#", *_SPACE):
                            if _content(lines[at]) is None:
                                out.append(lines[at])
                            else:
                                full += lines[at]
                            at += 1
                        new_entry = _parse_entry(full, session, None, lineno)
                    if "F" in flags:
                        assert req.value is not None
                        _set_field(new_entry, req.field, req.value, session)
                    else:
                        _edit_param(new_entry, req.pattern[2], req.value)
                elif whole and req.count == 1:
                    use_tentative = True
            elif tentative is not None and match_service(
                [tentative.service, tentative.type], name, kind
            ):
                matched = True
                req.count += 1
                use_tentative = req.count == 1
            if tentative is not None and use_tentative:
                new_entry = tentative
        if new_entry is not None:
            out.append(new_entry.render(fold=True) + "\n")
        elif not matched:
            out.append(line)
        elif "#" in flags:
            out.append("#" + line)
    for req in requests:
        if req.count:
            continue
        if whole:
            assert req.value is not None
            out.append(_parse_entry(req.value, session, f'"{req.raw}"').render(fold=True) + "\n")
        elif "M" not in flags:
            session.warn(f'unmatched service_name/type: "{req.raw}"')
    return "".join(out)


def _edit_param(entry: MasterEntry, name: str, value: str | None) -> None:
    """Update, add (value given) or remove ``-o name=value`` (≈ pcf_edit_master_param())."""
    argv = entry.argv
    found = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-") or arg == "--":
            break
        if len(arg) > 1 and arg[1] == "o" and i + 1 < len(argv):
            if arg == "-o" and argv[i + 1].startswith(name + "="):
                found = True
                if value is not None:
                    argv[i + 1] = f"{name}={value}"
                else:
                    del argv[i : i + 2]
                    continue
            i += 1
        i += 1
    if value is not None and not found:
        argv[i:i] = ["-o", f"{name}={value}"]
