"""postbus postconf, the name spaces: which names exist, in which class, and
their values (≈ postconf_builtin.c, postconf_service.c, postconf_user.c,
postconf_unused.c and postconf_lookup.c).

Besides the parameter registry (class ``builtin``), postconf knows the
per-transport names it derives from master.cf (``service``:
``relay_destination_concurrency_limit``) and the names that some value
refers to as ``$name`` and that main.cf or a ``-o`` sets (``user``); other
names set in main.cf or with ``-o`` are reported as unused.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from postbus.cli.postconf_session import PROG, Fatal, Session, split_nameval
from postbus.config.conv import ConfigError, split_list
from postbus.config.main_cf import expand, references
from postbus.config.master_cf import MasterEntry
from postbus.params import HOST_DEPENDENT, PARAMS, RAW_PARAMS, default_value, host_default

__all__ = [
    "BUILTIN", "SERVICE", "USER", "expand_value", "flag_unused", "lookup_chain",
    "register_builtin", "register_services", "register_user", "service_params",
]

BUILTIN, SERVICE, USER = "builtin", "service", "user"

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
            try:
                name, value = split_nameval(argv[i + 1])
            except Fatal:  # not name=value: no parameter (postconf -M warned)
                pass
            else:
                params[name] = value
        i += 2
    return params


# -- registering names -----------------------------------------------------------


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
    session.classes = dict.fromkeys(session.known, BUILTIN)


def register_services(session: Session) -> None:
    """Per-transport names for delivery agents in master.cf."""
    for entry in session.master:
        for suffix, base in _DELIVERY_COMMANDS.get(entry.command, {}).items():
            name = entry.service + suffix
            if base not in PARAMS:
                continue
            # A name with a registry default of its own (local_destination_
            # concurrency_limit = 2) keeps it, in the service class.
            session.known.setdefault(name, f"${base}")
            session.classes[name] = SERVICE


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
            if name not in session.known:
                session.known[name] = ""
                session.classes[name] = USER
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
            lookup = lookup_chain(session, scope, defaults_only=False)
            for name in split_list(expand_value(classes, lookup)):
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


# -- lookups and expansion ---------------------------------------------------------


def default(session: Session, name: str) -> str | None:
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
            lookup = lookup_chain(session, None, defaults_only=False)
            value = host_default(name, lambda other: expand_value(lookup(other) or "", lookup))
        session.host_defaults[name] = value
    return session.host_defaults[name]


def lookup_chain(
    session: Session, scope: int | None, defaults_only: bool
) -> Callable[[str], str | None]:
    """Name lookup in a service's scope (``-o`` and its read-only names), then
    main.cf, then the defaults (≈ pcf_lookup_parameter_value())."""
    local: dict[str, str] = {}
    if scope is not None:
        entry = session.master[scope]
        local = service_params(entry)
        local.update(process_name=os.path.basename(entry.command), service_name=entry.service)

    def lookup(name: str) -> str | None:
        if defaults_only:
            return default(session, name)
        if name in local:
            return local[name]
        if name in session.main:
            return session.main[name]
        return default(session, name)

    return lookup


def expand_value(value: str, lookup: Callable[[str], str | None]) -> str:
    try:
        return expand(value, lookup)
    except ConfigError as err:
        raise Fatal(f"macro processing error: {err}") from None
