"""Restrictions registered by name, and restriction lists compiled from their words.

A restriction list (``smtpd_relay_restrictions = permit_mynetworks,
defer_unauth_destination``) is compiled once at start by :func:`compile_words`;
an unknown name is a configuration error then, not a surprise at the first
mail.  A name may take an argument: ``check_*_access type:table``,
``check_policy_service server`` (or ``{ server, name=value ... }``), an RBL
domain.  A name listed in smtpd_restriction_classes stands for the list in
the parameter of that name (compiled once, so classes may refer to each
other; evaluation depth is bounded as in Postfix).

Each restriction is a coroutine ``fn(policy, state, step)`` returning ``None``
(DUNNO: go on), :data:`PERMIT` (stop this list, accept) or a reply line
(stop, reject or defer).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from postbus.config.conv import ConfigError, split_list
from postbus.maps.maps import Maps, open_maps

if TYPE_CHECKING:
    from ingress_smtpd.restrictions.stages import Policy
    from ingress_smtpd.restrictions.state import CheckState

Restriction = Callable[["Policy", "CheckState", "Step"], Awaitable[str | None]]


@dataclass
class Entry:
    fn: Restriction
    arg: str = ""  # "table": type:table, "server": a policy server, "domain": an RBL domain


REGISTRY: dict[str, Entry] = {}

#: Restrictions Postfix has that Postbus refuses at start, with the reason.
REFUSED: dict[str, str] = {
    **{name: "is not supported: Postbus has no address verification service (verify(8))"
       for name in ("reject_unverified_sender", "reject_unverified_recipient")},
    **{name: "is not supported yet by Postbus" for name in (
        "permit_inet_interfaces", "permit_mx_backup",
        "reject_unknown_forward_client_hostname",
        "check_address_map", "check_relay_domains", "reject_maps_rbl")},
}
#: Postfix's old names for the same restrictions.
ALIASES = {"reject_unknown_client": "reject_unknown_client_hostname",
           "reject_unknown_hostname": "reject_unknown_helo_hostname",
           "reject_invalid_hostname": "reject_invalid_helo_hostname",
           "reject_non_fqdn_hostname": "reject_non_fqdn_helo_hostname",
           "reject_rbl": "reject_rbl_client"}


def restriction(name: str, *, arg: str = "") -> Callable[[Restriction], Restriction]:
    def register(fn: Restriction) -> Restriction:
        REGISTRY[name] = Entry(fn, arg)
        return fn

    return register


@dataclass
class Step:
    name: str
    fn: Restriction
    maps: Maps | None = None
    arg: Any = None  # a policy client, an RBL domain, a class's steps
    steps: list[Step] = field(default_factory=list)  # a restriction class


class Compiler:
    """Compiles restriction lists of one configuration; knows its restriction classes."""

    def __init__(self, classes: dict[str, str], make_policy_client: Callable[[str, str], Any]):
        self.classes = classes  # class name -> its list's text
        self.compiled: dict[str, list[Step]] = {}
        self.make_policy_client = make_policy_client

    def compile(self, words: list[str], param: str) -> list[Step]:
        """ConfigError names an unknown restriction or a missing argument."""
        steps: list[Step] = []
        i = 0
        while i < len(words):
            name = words[i]
            low = ALIASES.get(name.lower(), name.lower())
            if low in self.classes:
                steps.append(Step(low, _run_class, steps=self._class(low)))
                i += 1
                continue
            if low in REFUSED and low not in REGISTRY:
                raise ConfigError(f"restriction {name} {REFUSED[low]}", parameter=param)
            entry = REGISTRY.get(low)
            if entry is None and ":" in name:  # a bare type:table (Postfix's short-hand)
                raise ConfigError(f"specify a check_*_access restriction before the table "
                                  f'"{name}"', parameter=param)
            if entry is None:
                raise ConfigError(f'unknown smtpd restriction: "{name}"', parameter=param)
            step = Step(low, entry.fn)
            if entry.arg:
                i += 1
                value = words[i] if i < len(words) else ""
                if entry.arg == "table":
                    if ":" not in value:
                        raise ConfigError(f"restriction {name} requires type:table",
                                          parameter=param)
                    step.maps = open_maps(value, param)
                elif entry.arg == "seconds":
                    if not value.isdigit():
                        raise ConfigError(f"restriction {name} must be followed by number",
                                          parameter=param)
                    step.arg = int(value)
                elif entry.arg == "server":
                    if ":" not in value:
                        raise ConfigError(f"restriction {name} must be followed by "
                                          "transport:server", parameter=param)
                    step.arg = self.make_policy_client(value, param)
                else:
                    if not value:
                        raise ConfigError(f"restriction {name} requires domain name argument",
                                          parameter=param)
                    step.arg = value
            steps.append(step)
            i += 1
        return steps

    def compile_classes(self) -> None:
        """Every class now, so an error in one is found at start (not at the first
        access table that names it)."""
        for name in self.classes:
            self._class(name)

    def _class(self, name: str) -> list[Step]:
        steps = self.compiled.get(name)
        if steps is None:
            steps = self.compiled[name] = []  # filled in place: classes may recurse
            steps.extend(self.compile(split_list(self.classes[name]), name))
        return steps


async def _run_class(policy: Policy, state: CheckState, step: Step) -> str | None:
    return await policy.evaluate(step.steps, state)
