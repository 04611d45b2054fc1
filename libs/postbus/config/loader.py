"""The per-process configuration (≈ mail_conf.c + mail_params.c).

A :class:`Config` is built once per process from four layers, lowest first:

1. registry defaults (:mod:`postbus.params`), with ``config_directory``
   set to the directory actually read and ``service_name`` to the service;
   ``POSTBUS_NATS_URL`` / ``POSTBUS_REDIS_URL`` from the environment stand
   in for the defaults of postbus_nats_url / postbus_redis_url (containers);
2. main.cf;
3. the ``-o name=value`` overrides of the named master.cf service;
4. explicit overrides (tests, command-line flags).

Values are kept raw and expanded lazily at use, as Postfix does, so
``mydestination = $myhostname`` follows a later change of myhostname in any
layer.  Every registry parameter is still expanded and type-checked once at
load, so a bad value fails the start with the file, line and parameter
named, not the first mail that needs it.

Names Postfix does not know are allowed in main.cf (user-defined
``$variables``); :attr:`Config.unknown_names` lists them and
:meth:`Config.unused_names` those no value refers to (postconf warns about
these).

:meth:`Config.load` also refuses what Postbus would ignore: a parameter it
does not support yet, set to anything but its default
(:mod:`postbus.config.support`), so every process, at start and at reload,
applies the same rule.  Tools that only show or edit files opt out.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from postbus.config import support
from postbus.config.conv import (
    ConfigError,
    parse_bool,
    parse_int,
    parse_size,
    parse_time,
    split_list,
)
from postbus.config.main_cf import MainCf, expand, references
from postbus.config.master_cf import MasterEntry, parse_master_cf
from postbus.params import HOST_DEPENDENT, PARAMS, RAW_PARAMS, Param, host_default

__all__ = ["DEFAULT_CONFIG_DIR", "ENV_CONFIG_DIR", "ENV_DEFAULTS", "Config"]

DEFAULT_CONFIG_DIR = "/etc/postbus"
ENV_CONFIG_DIR = "POSTBUS_CONFIG_DIR"

#: Environment variables that replace a registry default (for containers).
ENV_DEFAULTS: dict[str, str] = {
    "postbus_nats_url": "POSTBUS_NATS_URL",
    "postbus_redis_url": "POSTBUS_REDIS_URL",
}

#: Per-transport parameters Postfix derives for every master.cf transport
#: (≈ pcf_register_service_parameters()): ``<transport>_<suffix>`` defaults
#: to ``$<global parameter>``.  Postbus reads none of them yet (not_yet).
TRANSPORT_SUFFIXES: dict[str, str] = {
    "destination_concurrency_limit": "default_destination_concurrency_limit",
    "destination_recipient_limit": "default_destination_recipient_limit",
    "destination_rate_delay": "default_destination_rate_delay",
    "initial_destination_concurrency": "initial_destination_concurrency",
    "recipient_limit": "default_recipient_limit",
    "extra_recipient_limit": "default_extra_recipient_limit",
    "recipient_refill_limit": "default_recipient_refill_limit",
    "recipient_refill_delay": "default_recipient_refill_delay",
    "delivery_slot_cost": "default_delivery_slot_cost",
    "delivery_slot_loan": "default_delivery_slot_loan",
    "delivery_slot_discount": "default_delivery_slot_discount",
    "minimum_delivery_slots": "default_minimum_delivery_slots",
    "destination_concurrency_positive_feedback":
        "default_destination_concurrency_positive_feedback",
    "destination_concurrency_negative_feedback":
        "default_destination_concurrency_negative_feedback",
    "destination_concurrency_failed_cohort_limit":
        "default_destination_concurrency_failed_cohort_limit",
    "transport_rate_delay": "default_transport_rate_delay",
    "time_limit": "command_time_limit",
}

T = TypeVar("T")

# Where a value came from: (file, line); file None means a default.
_Origin = tuple[str | None, int | None]


class Config:
    """Parameters of one process: raw values, lazy expansion, typed accessors."""

    def __init__(
        self,
        *,
        config_dir: Path,
        main_cf: MainCf,
        master: list[MasterEntry],
        service: str | None = None,
        overrides: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        validate: builtins.bool = True,
        check_support: builtins.bool = False,
    ) -> None:
        self.config_dir = config_dir
        self.main_cf = main_cf
        self.master = master
        self.service = service
        self._values: dict[str, str] = {}
        self._origin: dict[str, _Origin] = {}
        self._cache: dict[str, str] = {}
        env = os.environ if environ is None else environ

        self._put("config_directory", str(config_dir), (None, None))
        for name, var in ENV_DEFAULTS.items():
            if env.get(var):
                self._put(name, env[var], (f"environment {var}", None))
        self._defaulted = set(self._values)
        self._entry: MasterEntry | None = None
        if service is not None:
            self._entry = self.master_entry(service)
            if self._entry is None:
                raise ConfigError(f'no master.cf service "{service}"')
            self._put("service_name", self._entry.service, (None, None))
            self._defaulted.add("service_name")

        for entry in main_cf.entries:
            self._put(entry.name, entry.value, (main_cf.filename, entry.line))
        if self._entry is not None:
            for name, value in self._entry.overrides.items():
                self._put(name, value, (self._entry.file, self._entry.line))
        for name, value in (overrides or {}).items():
            self._put(name, value, ("override", None))
        self.unknown_names: builtins.list[str] = [
            name for name in main_cf.names() if self._param(name) is None
        ]
        if validate:
            self.validate()
        #: Unsupported settings let through by postbus_unsupported_parameters = warn.
        self.unsupported: builtins.list[ConfigError] = (
            support.check_support(self) if check_support else []
        )

    def _put(self, name: str, value: str, origin: _Origin) -> None:
        self._values[name] = value
        self._origin[name] = origin

    # -- construction --------------------------------------------------------

    @classmethod
    def load(
        cls,
        config_dir: str | Path | None = None,
        service: str | None = None,
        overrides: Mapping[str, str] | None = None,
        *,
        check_support: builtins.bool = True,
    ) -> Config:
        """Read main.cf and master.cf from config_dir.

        config_dir defaults to ``$POSTBUS_CONFIG_DIR`` or /etc/postbus.  A
        missing file counts as empty, so a container can run on defaults
        and environment variables alone.  ``check_support=False`` skips the
        refusal of unsupported parameters (for tools that handle no mail).
        """
        directory = Path(config_dir or os.environ.get(ENV_CONFIG_DIR) or DEFAULT_CONFIG_DIR)
        main_cf = MainCf.read(str(directory / "main.cf"))
        master_path = directory / "master.cf"
        try:
            master_text = master_path.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            master_text = ""
        master = parse_master_cf(master_text, str(master_path))
        return cls(
            config_dir=directory,
            main_cf=main_cf,
            master=master,
            service=service,
            overrides=overrides,
            check_support=check_support,
        )

    @classmethod
    def from_text(
        cls,
        main_cf: str,
        master_cf: str = "",
        *,
        service: str | None = None,
        overrides: Mapping[str, str] | None = None,
        config_dir: str | Path = DEFAULT_CONFIG_DIR,
        environ: Mapping[str, str] | None = None,
        check_support: builtins.bool = False,
    ) -> Config:
        """Build a Config from file contents (for tests); environ defaults to empty."""
        directory = Path(config_dir)
        return cls(
            config_dir=directory,
            main_cf=MainCf(main_cf, str(directory / "main.cf")),
            master=parse_master_cf(master_cf, str(directory / "master.cf")),
            service=service,
            overrides=overrides,
            environ={} if environ is None else environ,
            check_support=check_support,
        )

    def for_service(self, service: str) -> Config:
        """The same files as another master.cf service sees them (with its -o)."""
        return Config(config_dir=self.config_dir, main_cf=self.main_cf, master=self.master,
                      service=service, validate=False)

    # -- lookup ----------------------------------------------------------------

    def param(self, name: str) -> Param | None:
        """The registry entry for name, including derived per-transport names."""
        return self._param(name)

    def lookup(self, name: str) -> str | None:
        """Raw value of name for $name expansion; None when nobody defines it."""
        return self._lookup(name)

    @staticmethod
    def _param(name: str) -> Param | None:
        """The registry entry for name, including derived per-transport names."""
        param = PARAMS.get(name)
        if param is not None:
            return param
        for suffix, base in TRANSPORT_SUFFIXES.items():
            if name.endswith("_" + suffix) and len(name) > len(suffix) + 1:
                proto = PARAMS[base]
                return Param(
                    name, f"${base}", proto.kind, proto.doc, proto.min, proto.max, proto.time_unit
                )
        return None

    def _lookup(self, name: str) -> str | None:
        """Raw value of name for expansion; None when it is not defined."""
        if name in self._values:
            return self._values[name]
        if name in HOST_DEPENDENT:
            value = host_default(name, self.get)
            self._values[name] = value
            self._origin[name] = (None, None)
            self._defaulted.add(name)
            return value
        param = self._param(name)
        return None if param is None else param.default

    def raw(self, name: str) -> str:
        """The unexpanded value; KeyError for a name nobody defines."""
        value = self._lookup(name)
        if value is None:
            raise KeyError(f"unknown parameter: {name}")
        return value

    def get(self, name: str) -> str:
        """The value with ``$name`` references expanded (cached).

        RAW_PARAMS (forward_path, default_rbl_reply, ...) come back unexpanded,
        as Postfix daemons receive them; their users expand them per delivery.
        """
        if name in self._cache:
            return self._cache[name]
        raw = self.raw(name)
        if name in RAW_PARAMS:
            return raw
        try:
            value = expand(raw, self._lookup, name=name)
        except ConfigError as err:
            raise self._locate(err, name) from None
        self._cache[name] = value
        return value

    def _locate(self, err: ConfigError, name: str) -> ConfigError:
        file, line = self._origin.get(name, (None, None))
        return err.located(file=file, line=line, parameter=name)

    def _convert(self, name: str, parse: Callable[[str, Param], T]) -> T:
        value = self.get(name)
        param = self._param(name) or Param(name, "", "str", "")
        try:
            return parse(value, param)
        except ConfigError as err:
            raise self._locate(err, name) from None

    # -- typed accessors ---------------------------------------------------------

    def int(self, name: str) -> builtins.int:
        return self._convert(name, lambda v, p: parse_int(v, min=p.min, max=p.max))

    def bool(self, name: str) -> builtins.bool:
        return self._convert(name, lambda v, p: parse_bool(v))

    def time(self, name: str) -> float:
        """Seconds; a bare number is in the parameter's unit (e.g. days)."""
        return self._convert(
            name, lambda v, p: parse_time(v, p.time_unit, min=p.min, max=p.max)
        )

    def size(self, name: str) -> builtins.int:
        return self._convert(name, lambda v, p: parse_size(v, min=p.min, max=p.max))

    def list(self, name: str) -> builtins.list[str]:
        """Expanded value split on commas and whitespace, ``{...}`` kept whole."""
        return split_list(self.get(name))

    def validate(self) -> None:
        """Expand and type-check every known parameter; raise the first error.

        Parameters set in the files are checked first, in file order, so the
        error points at the line the administrator wrote.
        """
        checkers: dict[str, Callable[[str], object]] = {
            "int": self.int,
            "bool": self.bool,
            "time": self.time,
            "size": self.size,
            "list": self.list,
            "str": self.get,
        }
        ordered = [n for n in self._values if n not in self._defaulted]
        ordered += [n for n in PARAMS if n not in self._values or n in self._defaulted]
        for name in ordered:
            param = self._param(name)
            if param is None:
                self.get(name)
            else:
                checkers[param.kind](name)

    # -- master.cf -----------------------------------------------------------------

    def master_entry(self, service: str) -> MasterEntry | None:
        """The master.cf entry for ``service`` or ``service/type``.

        A bare name matches the first entry with that service name (``smtp``
        is the inet listener when it comes first, as in the stock file).
        """
        name, _, kind = service.partition("/")
        for entry in self.master:
            if entry.service == name and (not kind or entry.type == kind):
                return entry
        return None

    # -- introspection (postconf -n, warnings) ----------------------------------------

    def main_cf_names(self) -> builtins.list[str]:
        """Names set in main.cf, in file order (what ``postconf -n`` shows)."""
        return self.main_cf.names()

    def is_set(self, name: str) -> builtins.bool:
        """True when name is set by main.cf, master.cf -o, overrides or environment."""
        return self._origin.get(name, (None, None))[0] is not None

    def set_names(self) -> builtins.list[str]:
        """Names set by main.cf, this service's -o, overrides or environment, in order."""
        return [name for name in self._values if self.is_set(name)]

    def origin(self, name: str) -> tuple[str | None, builtins.int | None]:
        """(file, line) that set name; (None, None) for a default."""
        return self._origin.get(name, (None, None))

    def unused_names(self) -> builtins.list[str]:
        """User-defined names in main.cf that no main.cf or master.cf value uses."""
        used: set[str] = set()
        texts = list(self._values.values())
        for entry in self.master:
            texts += list(entry.overrides.values()) + entry.args
        for text in texts:
            try:
                used.update(references(text))
            except ConfigError:
                continue
        return [name for name in self.unknown_names if name not in used]

