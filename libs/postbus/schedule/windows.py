"""Per-destination concurrency windows shared by every replica (≈ qmgr_queue.c,
qmgr_feedback.c; SCHEDULER_README).

A destination is Postfix's in-core queue: a transport and a queue name (the
next hop, or ``localpart@nexthop`` for a transport that delivers one
recipient at a time). Each has a concurrency window: it starts at
``initial_destination_concurrency``, grows by positive feedback after
deliveries that worked, up to ``<transport>_destination_concurrency_limit``,
and shrinks by negative feedback after deliveries where the destination
itself failed. Failed pseudo-cohorts beyond
``<transport>_destination_concurrency_failed_cohort_limit`` mark it dead:
its mail is deferred ("delivery temporarily suspended: ...") until
``minimal_backoff_time`` has passed. ``<transport>_destination_rate_delay``
fixes the window at one and spaces deliveries out.

The state lives in Redis, so that it holds across any number of qmgr and
delivery replicas: per destination a hash (window, feedback counters,
dead-until, next start) and a sorted set of busy slots, one per job being
delivered, scored by when its lease runs out (as KumoMTA keeps connection
leases). Each change is one Lua script (:mod:`postbus.schedule.window_scripts`),
atomic and one round trip. A slot whose lease ran out is not simply
dropped: :meth:`Windows.expired` hands it to the sweep
(:mod:`postbus.schedule.gate`), which keeps it while the job is still on
the bus (a delivery may take longer than a lease) and frees it otherwise
(its agent died). Redis losing its data costs the windows'
history, not mail.

A job refused a slot may take a ticket: the destination's tickets, one
queue for every agent, oldest first, get the slots freed next, granted in
the same call that frees them (:meth:`Windows.free`). So jobs waiting in
several agents are served in the order they came, as in one agent, instead
of each agent serving its own from the slots it happens to hold.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from postbus.config.loader import Config
from postbus.maps import context
from postbus.redis_script import run_script
from postbus.schedule.window_scripts import (
    ACQUIRE,
    EXPIRED,
    FREE,
    GIVE_UP,
    READY,
    RELEASE,
    RENEW,
    REVIVE,
)

PREFIX = "postbus:dest:"
WAITING = PREFIX + "waiting"  # destinations with parked jobs
LEASES = PREFIX + "leases"  # every busy slot, scored by when its lease runs out
STATE_TTL = 3600.0  # seconds an idle destination's window is remembered
#: Seconds a ticket is served (its job waits up to postbus.schedule.gate.MOST_WAIT,
#: then gives it up; older ones are left by an agent that died).
TICKET_TTL = 8.0
#: Seconds by which a job waiting in the agent that frees a slot may go before an older
#: one waiting in another: no word between agents, and the slot never idles meanwhile.
OWN_FIRST = 0.1
SUSPENDED = "delivery temporarily suspended: "


@dataclass(frozen=True)
class Feedback:
    """A feedback amount: ``base`` or, per window, ``base / window`` (≈ QMGR_FEEDBACK)."""

    base: float
    per_window: bool

    @classmethod
    def parse(cls, text: str) -> Feedback:
        """``1``, ``0.5``, ``1/8`` or ``1/concurrency``; else 1, as Postfix (which warns)."""
        num, slash, denom = text.replace(" ", "").partition("/")
        try:
            base = float(num)
            if slash and denom == "concurrency":
                return cls(base, True) if 0 <= base <= 1 else cls(1.0, False)
            if slash:
                base /= float(denom)
        except (ValueError, ZeroDivisionError):
            return cls(1.0, False)
        return cls(base, False) if 0 <= base <= 1 else cls(1.0, False)


@dataclass(frozen=True)
class Limits:
    """One transport's scheduling parameters (``<transport>_...`` or the defaults)."""

    initial: int
    limit: int  # 0: none
    recipient_limit: int
    rate_delay: float
    positive: Feedback
    negative: Feedback
    cohort_limit: int
    backoff: float  # how long a dead destination stays suspended

    @classmethod
    def of(cls, cfg: Config, transport: str) -> Limits:
        def name(suffix: str) -> str:
            return f"{transport}_{suffix}"

        return cls(
            initial=max(1, cfg.int(name("initial_destination_concurrency"))),
            limit=max(0, cfg.int(name("destination_concurrency_limit"))),
            recipient_limit=max(1, cfg.int(name("destination_recipient_limit"))),
            rate_delay=cfg.time(name("destination_rate_delay")),
            positive=Feedback.parse(cfg.get(name("destination_concurrency_positive_feedback"))),
            negative=Feedback.parse(cfg.get(name("destination_concurrency_negative_feedback"))),
            cohort_limit=cfg.int(name("destination_concurrency_failed_cohort_limit")),
            backoff=cfg.time("minimal_backoff_time"),
        )


def destination_name(limits: Limits, transport: str, nexthop: str, recipient: str,
                     delimiter: str) -> str:
    """Postfix's queue name: the next hop, or for one-recipient transports the
    recipient's local part (extension removed) at the next hop; lower case."""
    if limits.recipient_limit != 1 or transport in ("error", "retry"):
        return nexthop.lower()
    local = recipient.rpartition("@")[0] if "@" in recipient else recipient
    for char in delimiter:
        if char in local:
            local = local.split(char, 1)[0]
            break
    return f"{local}@{nexthop}".lower()


def subject_key(transport: str, destination: str) -> str:
    """A destination as one subject token (names may hold dots, brackets, spaces)."""
    return hashlib.blake2b(f"{transport}\n{destination}".encode(), digest_size=10).hexdigest()


@dataclass(frozen=True)
class Grant:
    """The answer to a request for a slot."""

    verdict: Literal["go", "wait", "dead"]
    dsn: str = ""
    reason: str = ""  # for "dead": why deliveries are suspended (with Postfix's prefix)
    after: float = 0.0  # for "wait" under a rate delay: when the next may start
    queued: bool = False  # for "wait": jobs are parked for this destination already


@dataclass(frozen=True)
class Released:
    """What freeing a slot did: the destination may have died (then its parked jobs
    are deferred) or have room for a parked one."""

    held: bool  # the slot was held (False: freed already, no feedback given)
    dead: Grant | None = None
    waiting: bool = False
    after: float = 0.0  # under a rate delay: when the next may start
    granted: tuple[tuple[str, str], ...] = ()  # (agent, member) of tickets given the slot


@dataclass(frozen=True)
class Destination:
    transport: str
    name: str

    @property
    def ident(self) -> str:
        return f"{self.transport}\t{self.name}"

    @property
    def key(self) -> str:
        return subject_key(self.transport, self.name)

    @property
    def state(self) -> str:
        return f"{PREFIX}{self.transport}:{self.name}"

    @property
    def busy(self) -> str:
        return self.state + ":busy"

    @property
    def tickets(self) -> str:
        """Jobs waiting in the agents for a slot here, by when they were refused."""
        return self.state + ":tickets"

    @classmethod
    def from_ident(cls, ident: str) -> Destination:
        transport, _, name = ident.partition("\t")
        return cls(transport, name)


class Windows:
    """The shared windows: take and free slots, feedback, dead destinations."""

    def __init__(self, cfg: Config, lease: float, agent: str = "") -> None:
        self.cfg = cfg
        self.lease = lease
        self.agent = agent or secrets.token_hex(6)  # among the agents that wait for slots
        self._limits: dict[str, Limits] = {}

    def limits(self, transport: str) -> Limits:
        if transport not in self._limits:
            self._limits[transport] = Limits.of(self.cfg, transport)
        return self._limits[transport]

    @staticmethod
    def redis() -> Redis:
        return context.redis_client()

    async def _run(self, script: str, keys: list[str], args: list[str | int | float]) -> Any:
        return await run_script(self.redis(), script, keys, args)

    async def acquire(self, dest: Destination, member: str, ticket: bool = False) -> Grant:
        """A slot for a job; ``ticket``: when refused, and no parked job goes first,
        the job waits in line for the next slot freed (:meth:`free` serves it; a job
        that stops waiting calls :meth:`give_up`)."""
        return _grant(await self._run(ACQUIRE, self._keys(dest),
                                      self._acquire_args(dest, member, ticket)))

    async def give_up(self, dest: Destination, member: str) -> Grant:
        """Stop waiting in line: "go" when the ticket was served meanwhile (or a slot is
        free now), else as :meth:`acquire` without a ticket."""
        return _grant(await self._run(GIVE_UP, self._keys(dest),
                                      self._acquire_args(dest, member, True)))

    def _acquire_args(self, dest: Destination, member: str,
                      ticket: bool) -> list[str | int | float]:
        lim = self.limits(dest.transport)
        return [member, self.lease, lim.initial, lim.limit, lim.rate_delay, int(STATE_TTL),
                dest.ident, f"{self.agent}\n{member}" if ticket else ""]

    async def release(self, dest: Destination, member: str, hop_dsn: str = "",
                      hop_reason: str = "") -> Released:
        """Free a job's slot with Postfix's feedback: negative when the destination
        itself failed (``hop_dsn`` set), positive otherwise."""
        got = await self._run(RELEASE, self._keys(dest),
                              self._release_args(dest, member, hop_dsn, hop_reason))
        return _released(got)

    async def free(self, dest: Destination, member: str, hop_dsn: str = "",
                   hop_reason: str = "") -> Released:
        """:meth:`release`, then the oldest tickets take the room left, in the same
        call, unless the destination died, parked jobs are owed the slot, or a
        rate delay runs (``granted``: whose tickets were served)."""
        got = await self._run(FREE, self._keys(dest),
                              self._release_args(dest, member, hop_dsn, hop_reason))
        freed = _released(got)
        served = tuple(_ticket(t) for t in got[5:])
        return Released(freed.held, freed.dead, freed.waiting, freed.after, served)

    @staticmethod
    def _keys(dest: Destination) -> list[str]:
        return [dest.state, dest.busy, LEASES, WAITING, dest.tickets]

    def _release_args(self, dest: Destination, member: str, hop_dsn: str,
                      hop_reason: str) -> list[str | int | float]:
        lim = self.limits(dest.transport)
        reason = SUSPENDED + (hop_reason or "unknown error")
        return [member, int(bool(hop_dsn)), lim.positive.base, int(lim.positive.per_window),
                lim.negative.base, int(lim.negative.per_window), lim.initial, lim.limit,
                lim.cohort_limit, hop_dsn or "4.0.0", reason, lim.backoff, lim.rate_delay,
                int(STATE_TTL), dest.ident, self.lease, TICKET_TTL, self.agent, OWN_FIRST]

    async def renew(self, dest: Destination, member: str) -> bool:
        """Keep a slot whose job is still on the bus; False when it was freed meanwhile."""
        kept = await self._run(RENEW, [dest.busy, LEASES], [member, self.lease, dest.ident])
        return bool(kept)

    async def forget(self, dest: Destination, member: str) -> None:
        """Free a slot whose job is gone without a result (no feedback)."""
        await self.redis().zrem(dest.busy, member)
        await self.redis().zrem(LEASES, f"{dest.ident}\n{member}")

    async def ready(self) -> list[Destination]:
        """Destinations with parked jobs that may move on now."""
        raw = await self._run(READY, [WAITING], [PREFIX])
        return [Destination.from_ident(_text(i)) for i in raw]

    async def expired(self, limit: int = 200) -> list[tuple[Destination, str]]:
        """Slots whose lease ran out, oldest first."""
        raw = await self._run(EXPIRED, [LEASES], [limit])
        out = []
        for item in raw:
            ident, _, member = _text(item).rpartition("\n")
            out.append((Destination.from_ident(ident), member))
        return out

    async def mark_waiting(self, dest: Destination) -> None:
        await self.redis().sadd(WAITING, dest.ident)

    async def unmark_waiting(self, dest: Destination) -> None:
        await self.redis().srem(WAITING, dest.ident)


async def revive_dead() -> int:
    """Postfix's QMGR_REQ_FLUSH_DEAD (postqueue -f, sendmail -q): every destination
    suspended as dead may be tried again now. How many were dead."""
    client = context.redis_client()
    script = client.register_script(REVIVE)
    revived, batch = 0, []
    async for key in client.scan_iter(match=f"{PREFIX}*", count=500):
        name = _text(key)
        if name.endswith((":busy", ":tickets", ":wanted")) or name in (LEASES, WAITING):
            continue
        batch.append(name)
        if len(batch) == 200:
            revived += int(await script(keys=batch))
            batch = []
    if batch:
        revived += int(await script(keys=batch))
    return revived


def _grant(got: list[Any]) -> Grant:
    verdict, dsn, reason, after, queued = got
    return Grant(_text(verdict), _text(dsn), _text(reason), float(after),  # type: ignore[arg-type]
                 _text(queued) == "1")


def _released(got: list[Any]) -> Released:
    if _text(got[0]) == "gone":
        return Released(False)
    waiting = _text(got[3]) == "1"
    if _text(got[0]) == "dead":
        return Released(True, Grant("dead", _text(got[1]), _text(got[2])), waiting)
    return Released(True, None, waiting, float(_text(got[4])))


def _ticket(value: bytes | str) -> tuple[str, str]:
    """A ticket's (agent, member)."""
    agent, _, member = _text(value).partition("\n")
    return agent, member


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

