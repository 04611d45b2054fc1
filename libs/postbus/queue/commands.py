"""Queue commands the qmgr carries out (≈ the triggers postqueue sends to qmgr(8)
and flush(8): mail_flush_deferred(), flush_send_file(), flush_send_site()).

postqueue asks, one qmgr replica answers: a core NATS request on
``postbus.cmd.<verb>`` (queue group ``qmgr``), a JSON body naming what to
flush, a JSON reply ``{"status": ...}`` with flush(8)'s statuses:

* ``flush`` (postqueue -f): every deferred message is tried now. The reply
  comes once the qmgr has begun, as Postfix's postqueue returns once its
  trigger is in; the qmgr goes through the deferred entries in the
  background.
* ``send_file`` {"queue_id"} (postqueue -i): that message, if deferred, is
  tried now. ``bad`` for a string that cannot be a queue ID.
* ``send_site`` {"site"} (postqueue -s): deferred mail with a deferred
  recipient in that domain, or routed to that next hop, is tried now;
  ``deny`` when the site is not in ``fast_flush_domains`` (Postfix's flush
  server keeps no log for it either).

No reply within the timeout (no qmgr, no NATS) is ``fail``: "mail system is
down", as Postfix says when its trigger cannot be delivered.
"""

from __future__ import annotations

import orjson
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from postbus.bus import subjects as s
from postbus.queue.entry import QueueEntry

FLUSH, SEND_FILE, SEND_SITE = "flush", "send_file", "send_site"
VERBS = (FLUSH, SEND_FILE, SEND_SITE)
OK, BAD, DENY, FAIL = "ok", "bad", "deny", "fail"
REPLY_TIMEOUT = 10.0  # seconds postqueue waits for a qmgr to answer


async def request(nc: NATS, verb: str, timeout: float = REPLY_TIMEOUT, **args: str) -> str:
    """Ask a qmgr to carry out ``verb``; its status, ``fail`` when none answers."""
    try:
        reply = await nc.request(s.command_subject(verb), orjson.dumps(args), timeout=timeout)
    except (NoRespondersError, NatsTimeoutError, TimeoutError, NatsError):
        return FAIL
    try:
        status = orjson.loads(reply.data).get("status")
    except (ValueError, AttributeError):
        return FAIL
    return status if status in (OK, BAD, DENY, FAIL) else FAIL


def encode_reply(status: str, **extra: int) -> bytes:
    return orjson.dumps({"status": status, **extra})


def decode_request(data: bytes) -> dict[str, str]:
    """A command's arguments; ValueError when they are not a JSON object of strings."""
    args = orjson.loads(data or b"{}")
    if not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values()):
        raise ValueError("arguments must be a JSON object of strings")
    return args


def bare_site(site: str) -> str:
    """``[10.0.0.1]:2525`` -> ``10.0.0.1``; ``Example.COM.`` -> ``example.com``."""
    site = site.strip().lower().rstrip(".")
    if site.startswith("["):
        site = site[1:].split("]", 1)[0]
    elif site.count(":") == 1:
        site = site.split(":", 1)[0]
    return site


def for_site(entry: QueueEntry, site: str) -> bool:
    """Has this entry a deferred recipient in domain ``site``, or routed to next hop
    ``site`` (compared without brackets and port)?"""
    want = bare_site(site)
    for rcpt in entry.recipients:
        if rcpt.state != "deferred":
            continue
        if bare_site(rcpt.address.rpartition("@")[2]) == want:
            return True
        _, _, nexthop = rcpt.transport.partition(":")
        if nexthop and bare_site(nexthop) == want:
            return True
    return False
