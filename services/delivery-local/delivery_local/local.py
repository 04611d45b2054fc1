"""Local and virtual mailbox delivery (≈ local(8): local.c, recipient.c, alias.c, mailbox.c;
virtual(8)).

local, for each recipient, in Postfix's order:

1. loop check — the message already says ``Delivered-To: <rcpt>``: bounce 5.4.6;
2. the name — the local part in lower case without the ``recipient_delimiter``
   extension; one that could not be a mailbox name (``/``, a leading dot,
   control characters, too long: :mod:`delivery_local.names`) is an unknown user;
3. ``alias_maps`` — the local part, then without the extension; a hit
   expands into targets (:mod:`delivery_local.expand`);
4. the user — a passwd entry, else a name listed in a ``local_recipient_maps``
   table (:mod:`delivery_local.users`); anyone else bounces
   ``5.1.1 unknown user: "name"``, and nothing is created for them (a name
   reached through an owner- alias, a .forward or an :include: file is
   re-queued instead, as Postfix resubmits it);
5. ``forward_path`` — a passwd user's ``.forward`` (:mod:`delivery_local.forward`);
6. ``mailbox_transport_maps``, ``mailbox_transport`` — another transport takes the
   recipient (anyone, as Postfix; ``fallback_transport(_maps)`` only unknown users),
   by a job of the same attempt (:meth:`LocalAgent._hand_over`);
7. ``mailbox_command_maps``, ``mailbox_command`` — a command as the recipient
   (:mod:`delivery_local.runner`; table users: default_privs);
8. the mailbox — ``home_mailbox`` under the home directory if set (passwd
   users only), else ``mail_spool_directory``/name; a name ending in ``/`` is
   a Maildir, anything else an mbox file (:mod:`delivery_local.store`).

As root, a passwd user's mailbox is written with that user's rights (an mbox
in a spool the user cannot write: root creates it and gives it to the user,
as Postfix's mailbox.c), a table user's with mail_owner's; not as root, the
agent writes as itself (:mod:`delivery_local.privs`).

virtual looks the address up in ``virtual_mailbox_maps``
(:mod:`delivery_local.virtual`).

Each final delivery is logged on its own line (alias targets with
``orig_to=``); the job's recipient gets the worst outcome of its targets
(deferred over bounced over sent), so a partly failed expansion is retried.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable

from delivery_local.copy import delivered_to_seen, mbox_message, unix_text
from delivery_local.expand import AliasExpander, Mode, Reinject, Who, user_rights
from delivery_local.local_expand import ExpandError, local_expand, recipient_attrs
from delivery_local.names import printable, relative_parts, valid_name
from delivery_local.privs import (
    AGENT,
    ConfigProblem,
    PrivilegeError,
    Rights,
    is_root,
    owner_rights,
    run_as,
    spool_rights,
)
from delivery_local.state import Client, State
from delivery_local.store import Destination, config_error, file_limit, store
from delivery_local.users import LocalUser, find_user, open_user_tables
from delivery_local.virtual import VirtualMailboxes
from postbus.config.loader import Config
from postbus.delivery import Outcome, Stats, log_delivery
from postbus.maps.addr_find import split_extension
from postbus.maps.maps import Maps, open_maps
from postbus.maps.table import TableRetry
from postbus.queue.entry import DeliveryJob, RcptResult, Recipient

log = logging.getLogger("postbus.delivery")

MAX_DEPTH = 100  # alias nesting, as Postfix's local_expansion limit


def prepare_spool(cfg: Config) -> None:
    """Make a missing ``mail_spool_directory`` (0755, mail_owner's when root), as `postbus
    start` does: a table user's Maildir is made in it with mail_owner's rights. An existing
    directory is left as the administrator made it."""
    spool = cfg.get("mail_spool_directory").rstrip("/")
    if not spool.startswith("/") or cfg.get("home_mailbox") or os.path.isdir(spool):
        return
    try:
        os.makedirs(spool, 0o755, exist_ok=True)
        if is_root():
            owner = owner_rights(cfg)
            os.chown(spool, owner.uid, owner.gid)
    except (OSError, ConfigProblem) as exc:
        log.warning("cannot create mail_spool_directory %s: %s", spool, exc)


#: Hand a recipient of a job to another transport: (job, index, recipient, transport:nexthop).
PassJob = Callable[[DeliveryJob, int, Recipient, str], Awaitable[None]]


def _home_problem(home: str) -> str:
    """Why the home directory cannot be reached (as the user), or "" (≈ stat_as())."""
    try:
        os.stat(home)
    except OSError as exc:
        return exc.strerror or "error"
    return ""


def worst(leaves: list[tuple[str, Outcome]]) -> Outcome:
    """Deferred over bounced over sent; of the bounces, one for the sender before one
    for an owner- alias (the result names one notice address: the owner's is lost then)."""
    for status in ("deferred", "bounced"):
        found = [outcome for _, outcome in leaves if outcome.status == status]
        if found:
            return next((o for o in found if not o.bounce_to), found[0])
    return leaves[0][1]


class LocalAgent:
    """Delivers jobs for a local (``virtual=False``) or virtual transport."""

    def __init__(
        self, cfg: Config, service: str, *, virtual: bool, reinject: Reinject | None = None,
        client_of: Callable[[str], Awaitable[Client]] | None = None,
        pass_job: PassJob | None = None,
    ) -> None:
        self.cfg = cfg
        self.client_of = client_of
        self.pass_job = pass_job
        self.service = service
        self.virtual = VirtualMailboxes(cfg) if virtual else None
        self.users = open_user_tables(cfg.get("local_recipient_maps"))
        self.aliases = AliasExpander(cfg, self._local, reinject)
        self.luser_relay = cfg.get("luser_relay")
        self.mailbox_transports = (
            open_maps(cfg.get("mailbox_transport_maps"), "mailbox_transport_maps"),
            cfg.get("mailbox_transport"))
        self.fallback_transports = (
            open_maps(cfg.get("fallback_transport_maps"), "fallback_transport_maps"),
            cfg.get("fallback_transport"))
        self.require_home = cfg.bool("require_home_directory")
        self.command_maps = open_maps(cfg.get("mailbox_command_maps"), "mailbox_command_maps")
        self.delimiter = cfg.get("recipient_delimiter")
        self.resolution = cfg.int("delay_logging_resolution_limit")
        self.strict = cfg.bool("strict_mailbox_ownership")
        self.original_to = cfg.bool("enable_original_recipient")
        self.size_limit = file_limit(cfg, virtual)

    async def deliver(self, job: DeliveryJob, content: bytes, stats: Stats) -> list[RcptResult]:
        text = unix_text(content)
        results: list[RcptResult] = []
        for index, rcpt in zip(job.indexes, job.recipients, strict=True):
            state = State(job, text, rcpt, original_to=self.original_to,
                          client_of=self.client_of)
            try:
                if self.virtual is not None:
                    await self._virtual(state, self.virtual)
                else:
                    await self._local(state, rcpt.address, depth=0)
                    if await self._hand_over(state, index):
                        job.whole = False  # another transport reports on this recipient
                        continue
                    await self.aliases.flush(state)
            except TableRetry as exc:
                state.leaves = [(rcpt.address, Outcome("deferred", "4.3.0", f"{exc}"))]
            if not state.leaves:
                state.done(rcpt.address, Outcome("bounced", "5.1.1", "alias has no targets"))
            now = time.time()
            for address, outcome in state.leaves:
                shown = Recipient(address, orig_rcpt=rcpt.orig_rcpt or rcpt.address)
                if address == rcpt.address:
                    shown.orig_rcpt = rcpt.orig_rcpt
                log_delivery(
                    job.queue_id, shown, self.service, stats, outcome.dsn, outcome.status,
                    outcome.reason, transport=self.service, resolution=self.resolution, now=now,
                )
            outcome = worst(state.leaves)
            results.append(RcptResult(index, outcome.status, outcome.dsn, outcome.reason,
                                      self.service, bounce_to=outcome.bounce_to))
        return results

    # -- local(8) ---------------------------------------------------------------

    async def _local(self, state: State, address: str, depth: int, mode: Mode = "all") -> None:
        """One local name, in Postfix's order (≈ recipient.c deliver_switch())."""
        local, at, domain = address.rpartition("@")
        name = (local if at else address).lower()
        user, _ext = split_extension(name, self.delimiter)
        if depth > MAX_DEPTH:
            log.warning("recipient nesting limit exceeded for %s", address)
            state.done(address, Outcome("bounced", "5.4.6", "recipient nesting limit exceeded"))
            return
        if delivered_to_seen(state.text, address):  # reported to its owner- alias if any
            state.done(address, await self.aliases.owner_notice(
                address, Outcome("bounced", "5.4.6", f"mail forwarding loop for {address}")))
            return
        unknown = Outcome("bounced", "5.1.1", f'unknown user: "{printable(user)}"')
        if not valid_name(user):
            state.done(address, unknown)
            return
        if mode == "all" and await self.aliases.expand(state, address, name, user, depth):
            return
        if mode != "mailbox" and (state.indirect or (state.owner and state.owner != user)):
            # a list member, a .forward or :include: name: a new queue file of its own
            if state.first_time(f"address:{address.lower()}"):
                self.aliases.forward(state, address)
            return
        found = await find_user(user, domain.lower(), self.users)
        if found is None or (not found.in_passwd and self.cfg.get("home_mailbox")):
            # a table user has no home for home_mailbox; mailbox_transport takes anyone
            if await self._pass(state, address, user, "mailbox", self.mailbox_transports):
                return
            await self._unknown(state, address, user, depth, unknown)
            return
        if self.require_home and found.in_passwd:
            try:
                problem = await run_as(user_rights(found), _home_problem, found.home)
            except PrivilegeError as exc:
                problem = f"{exc}"
            if problem:
                state.done(address, Outcome(
                    "deferred", "4.3.0", f"cannot access home directory {found.home}: {problem}"))
                return
        if mode != "mailbox" and await self.aliases.dotforward(state, address, found, depth):
            return
        if await self._pass(state, address, user, "mailbox", self.mailbox_transports):
            return
        if not state.first_time(f"mailbox:{found.name}"):
            return
        command = await self._mailbox_command(found)
        if command:
            who = Who(Rights(found.uid, found.gid) if found.in_passwd else None, found)
            data = self.aliases.copy(state, address, "command")
            outcome = await self.aliases.runner.run(state, command, address, who, data)
            if outcome is not None:
                state.done(address, await self.aliases.owner_notice(address, outcome))
            return
        dest = self._mailbox(found, address)
        if isinstance(dest, Outcome):
            state.done(address, dest)
            return
        data = state.headers(address)
        if not dest.maildir:
            data = mbox_message(state.text, state.sender, data)
        else:
            data += state.text
        state.done(address, await store(dest, data, size_limit=self.size_limit))

    async def _unknown(
        self, state: State, address: str, user: str, depth: int, unknown: Outcome
    ) -> None:
        """No alias, no user (≈ unknown.c): luser_relay, else a required alias that is
        missing is discarded with a warning, else the bounce."""
        if not state.first_time(f"unknown:{address.lower()}"):
            return
        if await self._pass(state, address, user, "unknown", self.fallback_transports):
            return
        if self.luser_relay:
            try:
                relay = local_expand(
                    self.luser_relay, recipient_attrs(address, self.delimiter), "").text
            except ExpandError:
                log.warning("bad parameter value syntax for luser_relay: %s", self.luser_relay)
                state.done(address, config_error("luser_relay syntax error"))
                return
            if "@" not in relay:
                relay = f"{relay}@{self.cfg.get('myorigin')}"
            if relay.lower() == address.lower():
                state.done(address, unknown)
            elif await self.aliases.resolver.is_local(relay.rpartition("@")[2].lower()):
                await self._local(state, relay, depth + 1)
            elif state.first_time(f"address:{relay.lower()}"):
                self.aliases.forward(state, relay)
            return
        if user in ("mailer-daemon", "postmaster"):
            log.warning("required alias not found: %s", user)
            state.done(address, Outcome("sent", "2.0.0", "discarded"))
            return
        state.done(address, unknown)

    async def _hand_over(self, state: State, index: int) -> bool:
        """Give the job's recipient to the transport it was passed to: a job of this
        attempt for that transport, whose agent reports on it (Postfix's local(8) waits
        for the other agent instead). A passed name that is not the job's recipient
        alone (an alias member, or beside other deliveries) is forwarded instead, and
        comes back as a recipient of its own."""
        passes, state.passes = state.passes, []
        if not passes:
            return False
        rcpt = state.rcpt
        if (len(passes) == 1 and passes[0][0] == rcpt.address and not state.leaves
                and not state.forwards and self.pass_job is not None):
            service = passes[0][1]
            transport = service.partition(":")[0]
            if not any(e.service == transport for e in self.cfg.master):
                log.warning("%s: mail transport %s is not in master.cf", state.job.queue_id,
                            transport)
                state.done(rcpt.address, Outcome("deferred", "4.3.0",
                                                 "mail transport unavailable"))
                return False
            log.info("%s: passing <%s> to transport=%s", state.job.queue_id, rcpt.address,
                     transport)
            await self.pass_job(state.job, index, rcpt, service)
            return True
        for address, _ in passes:
            self.aliases.forward(state, address)
        return False

    async def _pass(
        self, state: State, address: str, user: str, step: str, transports: tuple[Maps, str]
    ) -> bool:
        """mailbox_transport(_maps) or fallback_transport(_maps): another transport takes
        the recipient (≈ deliver_pass()), once per user (Postfix's "mailbox" duplicate
        filter)."""
        maps, default = transports
        service = (await maps.find(user) if maps.tables else None) or default
        if not service:
            return False
        if state.first_time(f"{step}:{user}"):
            state.passes.append((address, service))
        return True

    async def _mailbox_command(self, user: LocalUser) -> str:
        """mailbox_command_maps (by user name), else mailbox_command (≈ mailbox.c)."""
        if self.command_maps.tables:
            found = await self.command_maps.find(user.name)
            if found is not None:
                return found
        return self.cfg.get("mailbox_command")

    def _mailbox(self, user: LocalUser, address: str) -> Destination | Outcome:
        """Where ``user``'s mail goes and with whose rights (≈ deliver_mailbox())."""
        home_mailbox = self.cfg.get("home_mailbox")
        spool = self.cfg.get("mail_spool_directory")
        try:
            usr = self._user_rights(user)
        except ConfigProblem as exc:
            return config_error(f"{exc}")
        owner = AGENT
        if home_mailbox:
            parts = relative_parts(home_mailbox)
            if parts is None:
                return config_error(f'home_mailbox = {printable(home_mailbox)}: specify a path '
                                    f'relative to the home directory, without ".."')
            if not user.home.startswith("/"):
                return config_error(f"user {user.name}: home directory {printable(user.home)} "
                                    "is not an absolute path")
            base, maildir, rights = user.home, home_mailbox.endswith("/"), usr
        else:
            if not spool.startswith("/"):
                return config_error("do not specify relative pathname: "
                                    f"mail_spool_directory = {printable(spool)}")
            base, parts, maildir, rights = spool, (user.name,), spool.endswith("/"), usr
            if not maildir and usr != AGENT:
                rights, owner = spool_rights(spool, usr)
        owner_uid = -1
        if self.strict:
            owner_uid = usr.uid if usr != AGENT else os.geteuid()
        return Destination(
            "local", base, parts, maildir, rights=rights, owner=owner, owner_uid=owner_uid,
            user=user.name, recipient=address,
        )

    def _user_rights(self, user: LocalUser) -> Rights:
        """The recipient's rights as root: a passwd user's own, a table user's mail_owner's."""
        if not is_root():
            return AGENT
        if user.in_passwd:
            return Rights(user.uid, user.gid)
        return owner_rights(self.cfg)

    # -- virtual(8) -------------------------------------------------------------

    async def _virtual(self, state: State, mailboxes: VirtualMailboxes) -> None:
        address = state.rcpt.address
        if delivered_to_seen(state.text, address):
            state.done(address, Outcome("bounced", "5.4.6", f"mail forwarding loop for {address}"))
            return
        dest = await mailboxes.destination(address)
        if isinstance(dest, Outcome):
            state.done(address, dest)
            return
        data = state.headers(address)
        if not dest.maildir:
            data = mbox_message(state.text, state.sender, data)
        else:
            data += state.text
        state.done(address, await store(dest, data, size_limit=self.size_limit))
