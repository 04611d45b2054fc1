"""Refuse what Postbus would ignore: the check every process makes at load.

A parameter Postbus does not support yet (:mod:`postbus.param_status`)
that main.cf, a master.cf ``-o`` override or a command line sets to anything
but its default stops the process, Postfix style::

    /etc/postbus/main.cf, line 42: parameter header_checks is not supported yet by Postbus

With ``postbus_unsupported_parameters = warn`` the same text becomes one
warning per parameter (once per process), and the setting is ignored.

"Its default" is compared the way Postfix would see it: both sides expanded
in this configuration (``smtpd_tls_key_file = $smtpd_tls_cert_file`` is the
default whatever the certificate), then read as the parameter's kind, so
``smtpd_tls_security_level =`` is the empty default, ``5d`` equals ``120h``
and ``a, b`` equals ``a b`` for a list. Only names that are set count: a
``$name`` in another value that refers to a parameter does not set it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from postbus.config.conv import (
    ConfigError,
    parse_bool,
    parse_int,
    parse_size,
    parse_time,
    split_list,
)
from postbus.config.main_cf import expand
from postbus.param_status import HONOURED_VALUES, ONLY_VALUES, status
from postbus.params import RAW_PARAMS, Param

if TYPE_CHECKING:
    from postbus.config.loader import Config

__all__ = ["SWITCH", "UnsupportedParameter", "check_support", "warn_early"]

#: The parameter that turns refusals into warnings.
SWITCH = "postbus_unsupported_parameters"
MODES = ("refuse", "warn")

log = logging.getLogger("postbus.config")
_warned: set[str] = set()  # one warning per parameter and process, reloads included


class UnsupportedParameter(ConfigError):
    """``FILE, line N: parameter NAME is not supported yet by Postbus``."""

    def _format(self) -> str:
        text = super()._format()
        if self.parameter:  # "parameter x: is ..." reads "parameter x is ..."
            text = text.replace(f"parameter {self.parameter}: ", f"parameter {self.parameter} ", 1)
        return text


def _normal(value: str, param: Param) -> object:
    """A value as the parameter's kind sees it (the text when it does not convert)."""
    try:
        if param.kind == "bool":
            return parse_bool(value)
        if param.kind == "int":
            return parse_int(value)
        if param.kind == "size":
            return parse_size(value)
        if param.kind == "time":
            return parse_time(value, param.time_unit)
    except ConfigError:
        pass
    if param.kind == "list":
        return split_list(value)
    return " ".join(value.split())


def _is_default(cfg: Config, name: str, param: Param) -> bool:
    default = param.default
    if name not in RAW_PARAMS:
        try:
            default = expand(default, cfg.lookup, name=name)
        except ConfigError:
            return False
    return _normal(cfg.get(name), param) == _normal(default, param)


def _words(value: str) -> list[str]:
    words = [w.lower() for w in split_list(value)]
    return words or [""]


def _problem(cfg: Config, name: str) -> UnsupportedParameter | ConfigError | None:
    """Why the setting of ``name`` cannot be honoured, or None."""
    param = cfg.param(name)
    if param is None:
        return None  # a user-defined $variable
    file, line = cfg.origin(name)
    state = status(name)
    if state == "not_applicable":
        return None
    if state == "implemented":
        allowed = ONLY_VALUES.get(name)
        if allowed is None:
            return None
        bad = [w for w in _words(cfg.get(name)) if w not in allowed]
        if not bad:
            return None
        return ConfigError(f"{bad[0]} is not supported yet by Postbus",
                           file=file, line=line, parameter=name)
    if _is_default(cfg, name, param):
        return None
    honoured = HONOURED_VALUES.get(name)
    if honoured is not None and all(w in honoured for w in _words(cfg.get(name))):
        return None
    return UnsupportedParameter("is not supported yet by Postbus",
                                file=file, line=line, parameter=name)


def _problems(cfg: Config) -> list[ConfigError]:
    problems = [p for name in cfg.set_names() if (p := _problem(cfg, name)) is not None]
    if cfg.service is None:
        # The master (postbus start) answers for every service's -o overrides too.
        for entry in cfg.master:
            if not entry.overrides:
                continue
            other = cfg.for_service(f"{entry.service}/{entry.type}")
            problems += [p for name in entry.overrides
                         if (p := _problem(other, name)) is not None]
    return problems


def check_support(cfg: Config) -> list[ConfigError]:
    """Raise the first unsupported setting; with the warn switch, return them all
    (each also logged once per process) instead."""
    mode = cfg.get(SWITCH).strip().lower()
    if mode not in MODES:
        file, line = cfg.origin(SWITCH)
        raise ConfigError(f'bad value "{mode}": expected refuse or warn',
                          file=file, line=line, parameter=SWITCH)
    problems = _problems(cfg)
    if problems and mode == "refuse":
        raise problems[0]
    seen: set[str] = set()
    kept: list[ConfigError] = []
    for problem in problems:
        key = f"{problem.parameter}@{problem.file}"
        if key in seen:
            continue
        seen.add(key)
        kept.append(problem)
        if key not in _warned:
            _warned.add(key)
            warn_early(f"{problem}; ignored ({SWITCH} = warn)")
    return kept


# -- warnings found before the log is set up -------------------------------------------


def warn_early(text: str) -> None:
    """Log a warning now, or when :func:`postbus.logging.setup_logging` runs: a
    process finds configuration warnings while it loads the configuration that
    says where to log."""
    from postbus import logging as postbus_logging

    postbus_logging.hold_or_log(log.name, logging.WARNING, text)
