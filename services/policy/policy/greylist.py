"""Greylisting with postgrey's semantics (postgrey 1.37, smtpd_access_policy()).

A triplet (client network, sender, recipient) seen for the first time is
deferred; a retry after ``postbus_policy_greylist_delay`` passes, with an
``X-Greylist`` header on the first pass. As postgrey does:

* the client network is the address with its /24 (IPv6: /64) prefix; the
  sender loses a BATV ``prvs=`` tag, its ``+extension``, and its numbers
  become ``#`` (VERP senders make one triplet, not one per message);
* a first retry more than ``retry_window`` after the first attempt starts
  over; triplets unseen for ``max_age`` are forgotten (here by Redis
  expiry rather than a maintenance run), as are failed ones after the
  retry window;
* a client whose triplets passed ``auto_whitelist_clients`` times (counted
  at most once an hour) is no longer greylisted (postgrey's AWL);
* whitelisted clients and recipients pass at once.

State lives in Redis and each request is one script (atomic, one round
trip), so that any number of replicas share it; the time is the caller's
(an injectable clock) in whole seconds, as postgrey's. Keys are SHA-1
digests of the triplets (as postgrey --privacy): fixed size, whatever the
client sends.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import re
import time
from collections import deque
from collections.abc import Callable

from postbus.config.loader import Config

from .store import PREFIX, Store
from .whitelist import ClientList, RecipientList

__all__ = ["Greylist", "client_network", "sender_key"]

log = logging.getLogger("postbus.policy")
VERSION = "0.1.0"

# KEYS: triplet, client AWL. ARGV: now, delay, max_age, retry_window, awl_clients.
# -> {awl_hit, diff, last_was_successful, first, newly_whitelisted}
_SCRIPT = """
local now, delay, max_age = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local retry, awl = tonumber(ARGV[4]), tonumber(ARGV[5])
local cc, cl
if awl > 0 then
  local v = redis.call('HMGET', KEYS[2], 'n', 'last')
  cc, cl = tonumber(v[1]), tonumber(v[2])
  if cc and cc >= awl then
    if now >= cl + 3600 or cl > now then
      redis.call('HSET', KEYS[2], 'n', cc + 1, 'last', now)
      redis.call('EXPIRE', KEYS[2], max_age)
    end
    return {1, 0, 1, now, 0}
  end
end
local first, ok = now, 0
local v = redis.call('HMGET', KEYS[1], 'first', 'last')
if v[1] then
  first = tonumber(v[1])
  if tonumber(v[2]) - first >= delay then ok = 1
  elseif now - first > retry then first = now end
  if first > now then first = now end
end
redis.call('HSET', KEYS[1], 'first', first, 'last', now)
local diff = delay - (now - first)
if now - first >= delay then redis.call('EXPIRE', KEYS[1], max_age)
else redis.call('EXPIRE', KEYS[1], retry) end
local newly = 0
if awl > 0 and diff <= 0 and ok == 0 and (not cl or now >= cl + 3600) then
  cc = (cc or 0) + 1
  redis.call('HSET', KEYS[2], 'n', cc, 'last', now)
  redis.call('EXPIRE', KEYS[2], max_age)
  if cc == awl then newly = 1 end
end
return {0, diff, ok, first, newly}
"""

_NUMBER = re.compile(r"\b\d+\b", re.ASCII)
_TEN = re.compile(r"^[0-9a-z]{10}")


def sender_key(sender: str) -> str:
    """postgrey's do_sender_substitutions(): BATV, extension and VERP numbers removed."""
    user, at, domain = sender.partition("@")
    if not at:
        return sender
    if user.startswith("prvs="):
        parts = user.split("=")
        if len(parts) == 3:
            if _TEN.match(parts[1]) and not _TEN.match(parts[2]):
                user = parts[2]
            elif _TEN.match(parts[2]) and not _TEN.match(parts[1]):
                user = parts[1]
            else:
                user = parts[2]
    user = user.partition("+")[0]
    return f"{_NUMBER.sub('#', user)}@{domain}"


@functools.lru_cache(maxsize=4096)  # clients come back: parsing is a tenth of a request
def client_network(address: str, v4: int, v6: int) -> str:
    """The client's network address for the triplet (the address itself if unparsable)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    bits = ip.max_prefixlen
    prefix = v4 if ip.version == 4 else v6
    return str(type(ip)(int(ip) >> (bits - prefix) << (bits - prefix)))


class Greylist:
    name = "greylist"

    def __init__(self, cfg: Config, store: Store, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock
        self.delay = int(cfg.time("postbus_policy_greylist_delay"))
        self.max_age = max(int(cfg.time("postbus_policy_greylist_max_age")), 1)
        self.retry_window = max(int(cfg.time("postbus_policy_greylist_retry_window")), 1)
        self.awl = cfg.int("postbus_policy_greylist_auto_whitelist_clients")
        self.v4 = cfg.int("postbus_policy_greylist_ipv4_prefix")
        self.v6 = cfg.int("postbus_policy_greylist_ipv6_prefix")
        self.action = cfg.get("postbus_policy_greylist_action")
        self.text = cfg.get("postbus_policy_greylist_text")
        self.header = cfg.get("postbus_policy_greylist_header")
        self.hostname = cfg.get("myhostname")
        self.clients = ClientList(cfg.list("postbus_policy_greylist_whitelist_clients"),
                                  "postbus_policy_greylist_whitelist_clients")
        self.recipients = RecipientList(
            cfg.list("postbus_policy_greylist_whitelist_recipients"),
            "postbus_policy_greylist_whitelist_recipients")
        self._instances: deque[str] = deque(maxlen=20)  # postgrey's last 20 messages

    async def check(self, req: dict[str, str]) -> str:
        for name in ("client_address", "client_name", "recipient", "sender"):
            if name not in req:
                log.warning("warning: greylist: attribute missing: %s", name)
                return "DUNNO"
        address, recipient = req["client_address"], req["recipient"]
        if await self.clients.matches(address, req["client_name"]):
            self._log(req, "pass", "client whitelist")
            return "DUNNO"
        if await self.recipients.matches(recipient):
            self._log(req, "pass", "recipient whitelist")
            return "DUNNO"
        now = int(self.clock())
        triplet = "/".join((client_network(address, self.v4, self.v6),
                            sender_key(req["sender"]), recipient)).lower()
        digest = hashlib.sha1(triplet.encode("utf-8", "surrogateescape")).hexdigest()
        awl, diff, ok, first, newly = await self.store.script(
            _SCRIPT, [f"{PREFIX}grey:{digest}", f"{PREFIX}awl:{address.lower()}"],
            [now, self.delay, self.max_age, self.retry_window, self.awl])
        if awl:
            self._log(req, "pass", "client AWL")
            return "DUNNO"
        if newly:
            name = req["client_name"]
            log.info("whitelisted: %s", f"{name}[{address}]" if name else address)
        if diff > 0:
            text = self.text
            if "etrn_domain" in req and not text[:1].isdigit():
                text = "4.2.0 " + text  # postgrey's Exchange workaround, for Postfix >= 2.3
            text = text.replace("%s", str(diff), 1).replace(
                "%r", recipient.rpartition("@")[2], 1)
            self._log(req, "greylist", f"early-retry ({diff}s missing)" if now != first
                      else "new")
            return f"{self.action} {text}"
        if not ok and self.header and self._new_instance(req.get("instance")):
            delay = now - first
            self._log(req, "pass", "triplet found", f"delay={delay}")
            header = (self.header.replace("%t", str(delay), 1).replace("%v", VERSION, 1)
                      .replace("%d", time.strftime("%a, %d %b %Y %H:%M:%S %Z"), 1)
                      .replace("%h", self.hostname, 1))
            return f"PREPEND {header}"
        self._log(req, "pass", "triplet found")
        return "DUNNO"

    def _new_instance(self, instance: str | None) -> bool:
        if instance is None:
            return True
        if instance in self._instances:
            return False
        self._instances.appendleft(instance)
        return True

    @staticmethod
    def _log(req: dict[str, str], action: str, reason: str, extra: str = "") -> None:
        """postgrey's mylog_action() line."""
        if not log.isEnabledFor(logging.INFO):
            return
        info = [f"action={action}", f"reason={reason}"] + ([extra] if extra else [])
        info += [f"{a}={req[a]}" for a in ("client_name", "client_address", "sender",
                                            "recipient") if req.get(a)]
        queue_id = req.get("queue_id")
        log.info("%s%s", f"{queue_id}: " if queue_id else "", ", ".join(info))
