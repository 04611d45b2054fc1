"""What main.cf says about milters (≈ milter.c's milter_new() and its per-milter overrides).

``smtpd_milters`` and ``non_smtpd_milters`` list ``inet:host:port``,
``unix:/path`` (``local:`` is the same) or a braced group naming one milter
with its own settings, as Postfix 3.0 has it::

    smtpd_milters = inet:127.0.0.1:8891,
        { unix:/run/m.sock, connect_timeout=10s, default_action=accept, protocol=6 }

An unknown override, a bad time or an unknown milter_default_action or
milter_protocol word is refused at start with the parameter's name
(Postfix would find out at the first message).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postbus.config.conv import ConfigError, parse_time, split_list
from postbus.config.loader import Config
from postbus.milter import codec

DEFAULT_ACTIONS = frozenset({"accept", "reject", "tempfail", "quarantine", "shutdown"})

#: milter macro stages and the parameter naming each one's macros
MACRO_PARAMS = {
    "connect": "milter_connect_macros", "helo": "milter_helo_macros",
    "mail": "milter_mail_macros", "rcpt": "milter_rcpt_macros",
    "data": "milter_data_macros", "eoh": "milter_end_of_header_macros",
    "eom": "milter_end_of_data_macros", "unknown": "milter_unknown_command_macros",
}


@dataclass(frozen=True)
class MilterSpec:
    """One milter and its timeouts, protocol and default action."""

    name: str  # as configured: inet:host:port or unix:/path
    protocol: str = "6"
    default_action: str = "tempfail"
    connect_timeout: float = 30.0
    command_timeout: float = 30.0
    content_timeout: float = 300.0


@dataclass
class MilterSettings:
    """The milters of one list (smtpd_milters or non_smtpd_milters) and the macros."""

    milters: list[MilterSpec]
    macros: dict[str, list[str]] = field(default_factory=dict)
    macro_defaults: dict[str, str] = field(default_factory=dict)
    daemon_name: str = ""
    macro_v: str = ""
    myhostname: str = ""

    def __bool__(self) -> bool:
        return bool(self.milters)

    @classmethod
    def from_config(cls, cfg: Config, parameter: str) -> MilterSettings:
        base = MilterSpec(
            name="",
            protocol=cfg.get("milter_protocol"),
            default_action=cfg.get("milter_default_action"),
            connect_timeout=cfg.time("milter_connect_timeout"),
            command_timeout=cfg.time("milter_command_timeout"),
            content_timeout=cfg.time("milter_content_timeout"),
        )
        check(base, "milter_protocol", "milter_default_action")
        milters = [parse_milter(token, base, parameter) for token in cfg.list(parameter)]
        defaults: dict[str, str] = {}
        for item in split_list(cfg.get("milter_macro_defaults")):
            name, eq, value = item.partition("=")
            if not eq or not name:
                raise ConfigError(f'bad milter_macro_defaults entry "{item}": need name=value',
                                  parameter="milter_macro_defaults")
            defaults[name] = value.strip("{}").strip() if value.startswith("{") else value
        return cls(
            milters=milters,
            macros={stage: cfg.list(p) for stage, p in MACRO_PARAMS.items()},
            macro_defaults=defaults,
            daemon_name=cfg.get("milter_macro_daemon_name"),
            macro_v=cfg.get("milter_macro_v"),
            myhostname=cfg.get("myhostname"),
        )


def parse_milter(token: str, base: MilterSpec, parameter: str) -> MilterSpec:
    """``inet:host:port`` or ``{ endpoint, name=value, ... }``."""
    if not token.startswith("{"):
        return _endpoint(MilterSpec(token, *_rest(base)), parameter)
    inner = token[1:-1] if token.endswith("}") else token[1:]
    words = split_list(inner, ",")
    words = [w.strip() for w in words if w.strip()]
    if not words:
        raise ConfigError(f"empty milter group in {parameter}", parameter=parameter)
    spec = MilterSpec(words[0], *_rest(base))
    values = spec.__dict__.copy()
    for word in words[1:]:
        key, eq, value = (x.strip() for x in word.partition("="))
        if not eq or key not in {"protocol", "default_action", "connect_timeout",
                                 "command_timeout", "content_timeout"}:
            raise ConfigError(f'unknown milter setting "{word}" in {parameter}',
                              parameter=parameter)
        try:
            values[key] = parse_time(value, "s", min=1) if key.endswith("timeout") else value
        except ConfigError as err:
            raise ConfigError(f"{err} in {parameter}", parameter=parameter) from None
    spec = MilterSpec(**values)
    check(spec, parameter, parameter)
    return _endpoint(spec, parameter)


def _rest(base: MilterSpec) -> tuple[str, str, float, float, float]:
    return (base.protocol, base.default_action, base.connect_timeout, base.command_timeout,
            base.content_timeout)


def _endpoint(spec: MilterSpec, parameter: str) -> MilterSpec:
    transport, _, endpoint = spec.name.partition(":")
    if transport not in {"inet", "unix", "local"} or not endpoint:
        raise ConfigError(f'milter service needs transport:endpoint instead of "{spec.name}"',
                          parameter=parameter)
    return spec


def check(spec: MilterSpec, protocol_param: str, action_param: str) -> None:
    version = protocol_version(spec.protocol)
    if version is None:
        raise ConfigError(f'bad milter protocol information: "{spec.protocol}"',
                          parameter=protocol_param)
    if spec.default_action.lower() not in DEFAULT_ACTIONS:
        raise ConfigError(f'unrecognized milter default action: "{spec.default_action}"',
                          parameter=action_param)


def protocol_version(protocol: str) -> tuple[int, int] | None:
    """milter_protocol -> (version, the events we may send), None when malformed."""
    version = events = 0
    for word in split_list(protocol):
        mask = codec.EVENT_MASKS.get(word)
        vers = codec.VERSIONS.get(word, 0)
        if mask is None or (vers and version):
            return None
        version = version or vers
        events |= mask
    if not version or not events:
        return None
    return version, events
