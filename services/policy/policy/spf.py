"""SPF with the results and texts of policyd-spf (spf-engine 3.1, Debian's
postfix-policyd-spf-python), evaluated by pyspf.

As policyd-spf with its default configuration (Header_Type SPF): the HELO
name is checked first (as ``postmaster@helo``), then the MAIL FROM
address; a result listed by ``postbus_policy_spf_helo_reject`` /
``_mail_from_reject`` is rejected with::

    550 5.7.23 Message rejected due to: SPF fail - not authorized. Please see http://...

(``5.7.24`` for a permanent error, ``defer_if_permit 4.7.24 ... deferred``
for a temporary one when ``_temperror_defer`` is set); anything else is
``prepend Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=...;
helo=...; envelope-from=...; receiver=... `` (policyd-spf's spelling, the
lower-case actions and the trailing space included). Clients in
``_skip_addresses`` get an ``X-Comment`` header instead. The receiver is
the recipient's domain. tests/integration/policy/test_spf_vs_policyd_spf.py
compares the answers with Debian's policyd-spf.

One result per message (Postfix's ``instance``): later recipients of a
message get the same rejection, or ``dunno`` once its header was prepended.
pyspf blocks, so it runs in a thread; its DNS goes to
``postbus_dns_servers`` through dnspython.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import OrderedDict
from typing import Any

import dns.exception
import dns.resolver
import spf as pyspf

from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.dns_config import sync_resolver

__all__ = ["Spf"]

log = logging.getLogger("postbus.policy")

POLICIES = ("SPF_Not_Pass", "Softfail", "Fail", "Null", "False", "No_Check")
_REJECTED = {"SPF_Not_Pass": ("Fail", "Softfail", "Neutral"), "Softfail": ("Fail", "Softfail"),
             "Fail": ("Fail",), "Null": ("Fail",)}
_INSTANCES = 1000  # messages whose result is remembered (per process)


def _lookup(resolver: dns.resolver.Resolver) -> Any:
    """pyspf's DNSLookup_dnspython, asking our resolver instead of the system's."""

    def lookup(name: str, qtype: str, tcpfallback: bool = True,
               timeout: float = 30) -> list[tuple[tuple[str, str], Any]]:
        out: list[tuple[tuple[str, str], Any]] = []
        try:
            answers = resolver.resolve(name, qtype, lifetime=timeout, search=False)
        except (dns.resolver.NoAnswer, dns.resolver.NXDOMAIN):
            return out
        except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
            raise pyspf.TempError(f"DNS {exc}") from None
        except dns.exception.DNSException as exc:
            raise pyspf.TempError(f"DNS {exc}") from None
        for rdata in answers:
            if qtype in ("A", "AAAA"):
                out.append(((name, qtype), rdata.address))
            elif qtype == "MX":
                out.append(((name, qtype), (rdata.preference, rdata.exchange)))
            elif qtype == "PTR":
                out.append(((name, qtype), rdata.target.to_text(True)))
            elif qtype in ("TXT", "SPF"):
                out.append(((name, qtype), rdata.strings))
        return out

    return lookup


class Spf:
    name = "spf"

    def __init__(self, cfg: Config) -> None:
        self.helo_policy = self._policy(cfg, "postbus_policy_spf_helo_reject")
        self.mfrom_policy = self._policy(cfg, "postbus_policy_spf_mail_from_reject")
        self.permerror_reject = cfg.bool("postbus_policy_spf_permerror_reject")
        self.temperror_defer = cfg.bool("postbus_policy_spf_temperror_defer")
        self.skip = [ipaddress.ip_network(n.strip("[]"), strict=False)
                     for n in cfg.list("postbus_policy_spf_skip_addresses")]
        self.lookup_time = cfg.time("postbus_policy_spf_lookup_time")
        self.hide_receiver = cfg.bool("postbus_policy_spf_hide_receiver")
        self.reason = cfg.get("postbus_policy_spf_reason_message")
        self.url = cfg.get("postbus_policy_spf_reason_url")
        try:  # a template with other fields would fail at the first rejection: say so now
            self._reject("reject", "Fail", "x", "mfrom", "x", "x", "x")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"bad template field {exc}: use {{rejectdefer}}, {{spf}} and "
                              "{url} in postbus_policy_spf_reason_message, {0} to {3} in "
                              "postbus_policy_spf_reason_url") from None
        # pyspf looks its DNS function up at every query: one resolver per process
        pyspf.DNSLookup = _lookup(sync_resolver(cfg.list("postbus_dns_servers"),
                                                self.lookup_time))
        self._instances: OrderedDict[str, str] = OrderedDict()

    @staticmethod
    def _policy(cfg: Config, param: str) -> str:
        value = cfg.get(param)
        if value not in POLICIES:
            raise ConfigError(f"{value!r} is not supported (use one of {', '.join(POLICIES)})",
                              parameter=param)
        return value

    def _action(self, policy: str, result: str) -> str:
        """reject, defer or prepend (≈ _get_resultcodes())."""
        if result in _REJECTED.get(policy, ()):
            return "reject"
        if policy == "False":
            return "prepend"
        if result == "Temperror" and self.temperror_defer:
            return "defer"
        if result == "Permerror" and self.permerror_reject:
            return "reject"
        return "prepend"

    async def check(self, req: dict[str, str]) -> str:
        instance = req.get("instance", "")
        if instance and instance in self._instances:
            done = self._instances[instance]
            return done if not done.startswith("prepend") else "dunno"  # one header
        answer = await self._evaluate(req)
        if instance and answer != "dunno":
            self._instances[instance] = answer
            if len(self._instances) > _INSTANCES:
                self._instances.popitem(last=False)
        return answer

    async def _evaluate(self, req: dict[str, str]) -> str:
        ip = req.get("client_address", "")
        if not ip:
            return "dunno"
        recipient = req.get("recipient") or "none"
        receiver = "<UNKNOWN>" if self.hide_receiver else (
            recipient.split("@")[1] if "@" in recipient else recipient)
        sender, helo = req.get("sender", ""), req.get("helo_name", "")
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return "dunno"
        if any(address.version == n.version and address in n for n in self.skip):
            return ("prepend X-Comment: SPF check N/A for local connections - "
                    f"client-ip={ip}; helo={helo or '<UNKNOWN>'}; envelope-from={sender}; "
                    f"receiver={receiver} ")
        if not sender and not helo:
            return "dunno"
        if not helo:
            helo = sender.split("@", 1)[1] if "@" in sender else "unknown"
        header = ""
        helo_result = "None"
        if self.helo_policy != "No_Check":
            helo_result, explanation = await self._query(ip, "postmaster@" + helo, helo)
            action = "prepend"
            if self.helo_policy == "Null" and sender:
                helo_result = "None"
            else:
                action = self._action(self.helo_policy, helo_result)
            if helo_result == "None":
                explanation = "no SPF record"
            header = (f"Received-SPF: {helo_result} ({explanation}) identity=helo; "
                      f"client-ip={ip}; helo={helo}; envelope-from={sender or '<>'}; "
                      f"receiver={receiver} ")
            if action in ("reject", "defer"):
                return self._reject(action, helo_result, explanation, "helo", helo, ip,
                                    receiver)
        if sender and self.mfrom_policy != "No_Check":
            result, explanation = await self._query(ip, sender, helo)
            action = self._action(self.mfrom_policy, result)
            if result != "None" or helo_result == "None":
                header = (f"Received-SPF: {result} (mailfrom) identity=mailfrom; "
                          f"client-ip={ip}; helo={helo}; envelope-from={sender}; "
                          f"receiver={receiver} ")
            if action in ("reject", "defer"):
                return self._reject(action, result, explanation, "mfrom", sender, ip, receiver)
        return f"prepend {header}" if header else "dunno"

    async def _query(self, ip: str, sender: str, helo: str) -> tuple[str, str]:
        """pyspf's (result, explanation), the result capitalized as policyd-spf does."""
        query = pyspf.query(i=ip, s=sender, h=helo, querytime=self.lookup_time)
        try:
            result, _code, explanation = await asyncio.to_thread(query.check)
        except Exception as exc:  # pyspf's own bugs must not take the server down
            log.warning("warning: spf: pyspf failed for %s from %s: %s", sender, ip, exc)
            return "Temperror", f"SPF evaluation failed: {exc}"
        log.debug("spf: %s: %s for %s from %s", result, explanation, sender, ip)
        return str(result).lower().capitalize(), str(explanation)

    def _reject(self, action: str, result: str, explanation: str, scope: str, identity: str,
                ip: str, receiver: str) -> str:
        url = self.url.format(scope, identity, ip, receiver)
        text = self.reason.format(rejectdefer="rejected" if action == "reject" else "deferred",
                                  spf=explanation, url=url)
        error = result in ("Permerror", "Temperror")
        if action == "defer":
            return f"defer_if_permit 4.7.24 {text}"
        return f"550 {'5.7.24' if error else '5.7.23'} {text}"
