"""postbus postconf, the editing half: ``-e``/``-X``/``-#`` on main.cf and
``-Me``/``-MX``/``-M#``/``-Pe``/``-PX`` on master.cf, in place, keeping
comments and order exactly as Postfix's postconf does."""

from __future__ import annotations

import os
from dataclasses import dataclass

from postbus.cli.postconf import (
    MASTER_BLANKS,
    SEPARATORS,
    Fatal,
    Session,
    _is_comment,
    _match_service,
    service_pattern,
    split_nameval,
)
from postbus.config.conv import ConfigError
from postbus.config.main_cf import MainCf
from postbus.config.master_cf import MasterEntry, parse_master_cf


def _read_for_edit(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as fp:
            return fp.read()
    except OSError as exc:
        raise Fatal(f"open {path} for reading: {exc.strerror}") from None


def _write(path: str, text: str) -> None:
    temp = path + ".tmp"
    with open(temp, "w", encoding="utf-8", errors="surrogateescape") as fp:
        fp.write(text)
    os.replace(temp, path)


def _check_edit_arg(text: str, what: str) -> str:
    if "\n" in text:
        raise Fatal(f"{what} accept{'s' if what.startswith('-e,') else ''} no multi-line input")
    stripped = text.lstrip(SEPARATORS)
    if stripped.startswith("#"):
        raise Fatal(f"{what} accept{'s' if what.startswith('-e,') else ''} no comment input")
    return stripped


def edit_main(session: Session, args: list[str]) -> None:
    """``-e``, ``-X`` and ``-#`` on main.cf (≈ pcf_edit_main())."""
    flags = session.flags
    requests: dict[str, str | None] = {}
    for arg in args:
        text = _check_edit_arg(arg, "-e, -X, or -#")
        value: str | None = None
        if "e" in flags:
            name, value = split_nameval(text)
        else:
            if not text:
                raise Fatal("-X or -# requires non-blank parameter names")
            if "=" in text:
                raise Fatal("-X or -# requires parameter names without value")
            name = text.rstrip(SEPARATORS)
        if name in requests:
            session.warn(f"ignoring earlier request: '{name} = {requests[name]}'")
            del requests[name]
        requests[name] = value
    original = _read_for_edit(session.main_path)
    try:
        cf = MainCf(original, session.main_path)
    except ConfigError as err:
        raise Fatal(str(err)) from None
    for name, value in requests.items():
        if sum(entry.name == name for entry in cf.entries) > 1:
            session.warn(f'{session.main_path}: multiple entries for "{name}"')
        if "e" in flags:
            cf.set(name, value or "")
            if not value:  # postconf writes "name = " for an empty value
                for entry in cf.entries:
                    if entry.name == name:
                        cf.lines[entry.line - 1] = f"{name} = "
        elif "X" in flags:
            cf.remove(name)
        else:
            cf.comment_out(name)
    _write(session.main_path, cf.render())


@dataclass
class _MasterRequest:
    raw: str
    pattern: list[str]
    value: str | None
    count: int = 0


def edit_master(session: Session, args: list[str]) -> None:
    """``-Me``, ``-MX``, ``-M#``, ``-Pe``, ``-PX`` (≈ pcf_edit_master())."""
    flags = session.flags
    editing = "e" in flags
    params = "P" in flags
    what = "-Me, -Fe, -Pe, -X, or -#"
    requests: list[_MasterRequest] = []
    for arg in args:
        text = _check_edit_arg(arg, what)
        value: str | None = None
        if editing:
            text, value = split_nameval(text, arg)
        else:
            if "=" in text:
                raise Fatal("-X or -# requires names without value")
            text = text.rstrip(SEPARATORS)
        if params:
            pattern = service_pattern(text, 3, 3)
            if pattern is None:
                raise Fatal("-Pe or -PX requires service_name/type/parameter")
            if pattern[2] == "*":
                raise Fatal("-Pe does not accept wild-card parameter name")
            if value is not None and any(ch in MASTER_BLANKS for ch in value):
                raise Fatal("-Pe does not accept whitespace in parameter value")
        else:
            pattern = service_pattern(text, 2, 2)
            if pattern is None:
                raise Fatal("-Me, -MX or -M# requires service_name/type")
        requests.append(_MasterRequest(arg, pattern, value))

    def parse_entry(text: str, where: str) -> MasterEntry:
        try:
            entries = parse_master_cf(text, session.master_path)
        except ConfigError as err:
            raise Fatal(f"{err.reason}: {where}") from None
        if len(entries) != 1:
            raise Fatal(f"bad field count: {where}")
        return entries[0]

    original = _read_for_edit(session.master_path)
    lines = original.splitlines()
    out: list[str] = []
    matched = False
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if _is_comment(line):
            out.append(line)
            continue
        if line[0] in MASTER_BLANKS:  # continuation
            if not matched:
                out.append(line)
            elif "#" in flags:
                out.append("#" + line)
            continue
        matched = False
        fields = line.split()
        if len(fields) < 2:
            raise Fatal(
                f"file {session.master_path}: line {i}: "
                "specify service name and type on the same line"
            )
        name, kind = fields[0], fields[1]
        new_entry: MasterEntry | None = None
        for req in requests:
            tentative = None
            use_tentative = False
            if not params and editing and req.value is not None:
                tentative = parse_entry(req.value, f'"{req.raw}"')
            if _match_service(req.pattern, name, kind):
                matched = True
                req.count += 1
                if params:
                    if new_entry is None:
                        full = [line]
                        # Gobble continuation lines; comments go out first.
                        while i < len(lines) and lines[i][:1] in ("", "#", *MASTER_BLANKS):
                            piece = lines[i]
                            i += 1
                            if _is_comment(piece):
                                out.append(piece)
                            else:
                                full.append(piece)
                        new_entry = parse_entry("\n".join(full), f"line {i}")
                    _edit_param(new_entry, req.pattern[2], req.value if editing else None)
                elif editing and req.count == 1:
                    use_tentative = True
            elif tentative is not None and _match_service(
                [tentative.service, tentative.type], name, kind
            ):
                matched = True
                req.count += 1
                use_tentative = req.count == 1
            if tentative is not None and use_tentative:
                new_entry = tentative
        if new_entry is not None:
            out.append(new_entry.render(fold=True))
        elif not matched:
            out.append(line)
        elif "#" in flags:
            out.append("#" + line)
    for req in requests:
        if req.count:
            continue
        if not params and editing and req.value is not None:
            out.append(parse_entry(req.value, f'"{req.raw}"').render(fold=True))
        elif params:
            session.warn(f'unmatched service_name/type: "{req.raw}"')
    _write(session.master_path, "\n".join(out) + "\n" if out else "")


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


