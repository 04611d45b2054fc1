"""postbus postconf, the showing half: main.cf parameters (``-n``, ``-d``,
``-C class``) and master.cf entries (``-M``), fields (``-F``) and ``-o``
parameters (``-P``), with ``-f``, ``-h``, ``-H`` and ``-x`` (≈
postconf_main.c and the show functions of postconf_master.c).

Every master.cf line is shown, whatever Postbus runs for it: a service
that Postbus does inside another role (``cleanup``, ``bounce``) or not at
all is still a line of the file, as it is for Postfix.
"""

from __future__ import annotations

from collections.abc import Callable

from postbus.cli.postconf_names import (
    BUILTIN,
    SERVICE,
    USER,
    default,
    expand_value,
    flag_unused,
    lookup_chain,
    register_builtin,
    register_services,
    register_user,
    service_params,
)
from postbus.cli.postconf_session import (
    INDENT,
    LINE_LIMIT,
    Fatal,
    Session,
    format_line,
    match_service,
    read_main,
    read_master,
    service_pattern,
)
from postbus.config.master_cf import FIELD_NAMES, MasterEntry, render_arguments
from postbus.params import RAW_PARAMS

__all__ = ["CLASSES", "run_main_show", "run_master_show"]

#: ``-C`` names and the classes they select (≈ param_class_table[]).
CLASSES = {
    "builtin": frozenset({BUILTIN}),
    "service": frozenset({SERVICE}),
    "user": frozenset({USER}),
    "all": frozenset({BUILTIN, SERVICE, USER}),
}


def _print_value(session: Session, name: str, value: str, raw: bool, scope: int | None) -> None:
    flags = session.flags
    fold = "f" in flags
    if "H" in flags:
        session.out.write(format_line(name, fold))
        return
    if "x" in flags and not raw:
        value = expand_value(value, lookup_chain(session, scope, "d" in flags))
    text = value if "h" in flags else f"{name} = {value}"
    session.out.write(format_line(text, fold))


# -- main.cf ---------------------------------------------------------------------------


def show_parameters(session: Session, names: list[str], classes: frozenset[str]) -> None:
    """``postconf [-n|-d] [-C class] [name ...]`` (≈ pcf_show_parameters())."""
    flags = session.flags

    def value_of(name: str) -> str | None:
        if "d" in flags:
            return default(session, name)
        if name in session.main:
            return session.main[name]
        return None if "n" in flags else default(session, name)

    if not names:
        for name in sorted(session.known):
            value = value_of(name)
            if value is not None and session.classes[name] in classes:
                _print_value(session, name, value, name in RAW_PARAMS, None)
        return
    for name in names:
        if name not in session.known:
            session.warn(f"{name}: unknown parameter")
            continue
        value = value_of(name)
        if value is not None:
            _print_value(session, name, value, name in RAW_PARAMS, None)


def run_main_show(session: Session, args: list[str], classes: frozenset[str]) -> None:
    defaults = "d" in session.flags
    if not defaults:
        read_main(session)
    register_builtin(session)
    read_master(session, fatal=False)
    register_services(session)
    if not defaults:
        register_user(session)
    show_parameters(session, args, classes)
    if not defaults:
        flag_unused(session)


# -- master.cf ---------------------------------------------------------------------------


def _patterns(args: list[str], most: int, usage: str) -> list[list[str]]:
    patterns = []
    for text in args:
        pattern = service_pattern(text, 1, most)
        if pattern is None:
            raise Fatal(usage)
        patterns.append(pattern)
    return patterns


def _report_unmatched(session: Session, raw: list[str], counts: list[int]) -> None:
    for text, count in zip(raw, counts, strict=True):
        if count == 0:
            session.warn(f'unmatched request: "{text}"')


def _expander(session: Session, index: int) -> Callable[[str], str] | None:
    """With -x, $name expansion in the scope of one master.cf service."""
    if "x" not in session.flags:
        return None
    lookup = lookup_chain(session, index, defaults_only=False)
    return lambda value: expand_value(value, lookup)


def show_master_entries(session: Session, args: list[str]) -> None:
    """``postconf -M [service[/type] ...]`` (≈ pcf_show_master_entries())."""
    patterns = _patterns(args, 2, "-M option requires service_name[/type]")
    counts = [0] * len(patterns)
    fold = "f" in session.flags

    def show(index: int, entry: MasterEntry) -> None:
        session.out.write(entry.render(fold, _expander(session, index)) + "\n")

    for index, entry in enumerate(session.master):
        if not patterns:
            show(index, entry)
        for i, pattern in enumerate(patterns):
            if match_service(pattern, entry.service, entry.type):
                counts[i] += 1
                show(index, entry)
    _report_unmatched(session, args, counts)


def render_field(session: Session, index: int, entry: MasterEntry, field: int) -> str:
    """One ``postconf -F`` line (≈ pcf_print_master_field()); a long value
    starts on a new line even without -f, as in postconf."""
    flags = session.flags
    out: list[str] = []
    length = 0
    if "h" not in flags:
        out.append(f"{entry.service}/{entry.type}/{FIELD_NAMES[field]}")
        length = len(out[0])
    if "h" not in flags and "H" not in flags:
        out.append(" = ")
        length += 3
    if "H" not in flags:
        value = entry.fields[field]
        if length > 0 and length + len(value) > LINE_LIMIT:
            out.append("\n" + INDENT)
            length = len(INDENT)
        out.append(value)
        length += len(value)
        if field == len(FIELD_NAMES) - 1:
            expand = _expander(session, index)
            out.append(render_arguments(entry.argv, length, "f" in flags, expand, 1))
    return "".join(out) + "\n"


def field_number(name: str) -> int | None:
    """The index of a field name, None for ``*`` (≈ pcf_parse_field_pattern())."""
    if name == "*":
        return None
    if name not in FIELD_NAMES:
        raise Fatal(f'invalid service attribute name: "{name}"')
    return FIELD_NAMES.index(name)


def show_master_fields(session: Session, args: list[str]) -> None:
    """``postconf -F [service[/type[/field]] ...]`` (≈ pcf_show_master_fields())."""
    patterns = _patterns(args, 3, "-F option requires service_name[/type[/field]]")
    fields = [field_number(pattern[2]) for pattern in patterns]
    counts = [0] * len(patterns)
    every = range(len(FIELD_NAMES))
    for index, entry in enumerate(session.master):
        if not patterns:
            session.out.write("".join(render_field(session, index, entry, f) for f in every))
        for i, pattern in enumerate(patterns):
            if match_service(pattern, entry.service, entry.type):
                counts[i] += 1
                chosen = every if fields[i] is None else [fields[i]]
                for field in chosen:
                    assert field is not None
                    session.out.write(render_field(session, index, entry, field))
    _report_unmatched(session, args, counts)


def show_master_params(session: Session, args: list[str]) -> None:
    """``postconf -P [service[/type[/name]] ...]`` (≈ pcf_show_master_params())."""
    patterns = _patterns(args, 3, "-P option requires service_name[/type[/parameter]]")
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
            if not match_service(pattern, entry.service, entry.type):
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
    if "F" in session.flags:
        show_master_fields(session, args)
    elif "P" in session.flags:
        show_master_params(session, args)
    else:
        show_master_entries(session, args)
    flag_unused(session, main_cf=False)
