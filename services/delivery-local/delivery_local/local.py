"""Local and virtual mailbox delivery (≈ local(8): local.c, recipient.c, mailbox.c; virtual(8)).

local, for each recipient, in Postfix's order:

1. loop check — the message already says ``Delivered-To: <rcpt>``: bounce 5.4.6;
2. ``alias_maps`` — the local part (lower case), then without the
   ``recipient_delimiter`` extension; a hit expands into targets
   (see :mod:`delivery_local.alias`); an alias naming itself goes to the mailbox;
3. the user's passwd entry (owner of the mailbox);
4. the mailbox — ``home_mailbox`` under the home directory if set, else
   ``mail_spool_directory``/user; a name ending in ``/`` is a Maildir,
   anything else an mbox file.

Unknown users bounce with ``5.1.1 unknown user: "name"`` when they have no
passwd entry and ``home_mailbox`` is set (no home to deliver to). Unlike
Postfix, a name without a passwd entry still gets a spool mailbox when
``home_mailbox`` is empty: containers have no system users, and smtpd's
``local_recipient_maps`` is where unknown names are refused.

virtual looks the full address up in ``virtual_mailbox_maps`` (then
without extension, then ``@domain``); the result is a path under
``virtual_mailbox_base``, a Maildir when it ends in ``/``; not found
bounces as unknown user. Owners come from ``virtual_uid_maps`` /
``virtual_gid_maps`` when the agent runs as root.

Each final delivery is logged on its own line (alias targets with
``orig_to=``); the job's recipient gets the worst outcome of its targets
(deferred over bounced over sent), so a partly failed expansion is retried.
"""

from __future__ import annotations

import asyncio
import errno
import os
import pwd
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from delivery_local import alias
from delivery_local.command import deliver_command
from delivery_local.copy import delivered_to_seen, header_lines, mbox_message, unix_text
from delivery_local.mailbox import MailboxBusy, deliver_mbox
from delivery_local.maildir import deliver_maildir
from postbus.config.loader import Config
from postbus.delivery import Outcome, Stats, log_delivery
from postbus.maps.addr_find import Strategy, mail_addr_find, split_extension
from postbus.maps.maps import open_maps
from postbus.maps.table import TableRetry
from postbus.queue.entry import DeliveryJob, QueueEntry, RcptResult, Recipient

#: Re-queue a message (alias to a remote address); returns the new queue ID.
Reinject = Callable[[QueueEntry, bytes], Awaitable[str]]

MAX_DEPTH = 100  # alias nesting, as Postfix's local_expansion limit


@dataclass
class State:
    """One job recipient on its way through aliases (≈ LOCAL_STATE)."""

    job: DeliveryJob
    text: bytes  # content with LF line ends
    rcpt: Recipient
    leaves: list[tuple[str, Outcome]] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)  # targets already done (≈ been_here)

    def done(self, address: str, outcome: Outcome) -> None:
        self.leaves.append((address, outcome))

    def first_time(self, key: str) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def worst(leaves: list[tuple[str, Outcome]]) -> Outcome:
    for status in ("deferred", "bounced"):
        for _, outcome in leaves:
            if outcome.status == status:
                return outcome
    return leaves[0][1]


class LocalAgent:
    """Delivers jobs for a local (``virtual=False``) or virtual transport."""

    def __init__(
        self, cfg: Config, service: str, *, virtual: bool, reinject: Reinject | None = None
    ) -> None:
        self.cfg = cfg
        self.service = service
        self.virtual = virtual
        self.reinject = reinject
        self.aliases = open_maps(cfg.get("alias_maps"), "alias_maps")
        self.mailboxes = open_maps(cfg.get("virtual_mailbox_maps"), "virtual_mailbox_maps")
        self.uids = open_maps(cfg.get("virtual_uid_maps"), "virtual_uid_maps")
        self.gids = open_maps(cfg.get("virtual_gid_maps"), "virtual_gid_maps")
        self.delimiter = cfg.get("recipient_delimiter")
        self.myorigin = cfg.get("myorigin")
        self.resolution = cfg.int("delay_logging_resolution_limit")
        self.allow_commands = "alias" in [w.lower() for w in cfg.list("allow_mail_to_commands")]
        self.allow_files = "alias" in [w.lower() for w in cfg.list("allow_mail_to_files")]

    async def deliver(self, job: DeliveryJob, content: bytes, stats: Stats) -> list[RcptResult]:
        text = unix_text(content)
        results: list[RcptResult] = []
        for index, rcpt in zip(job.indexes, job.recipients, strict=True):
            state = State(job, text, rcpt)
            try:
                if self.virtual:
                    await self._virtual(state)
                else:
                    await self._local(state, rcpt.address, depth=0)
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
            results.append(
                RcptResult(index, outcome.status, outcome.dsn, outcome.reason, self.service)
            )
        return results

    # -- local(8) ---------------------------------------------------------------

    async def _local(self, state: State, address: str, depth: int, aliases: bool = True) -> None:
        local, at, _ = address.rpartition("@")
        name = (local if at else address).lower()
        user, ext = split_extension(name, self.delimiter)
        if delivered_to_seen(state.text, address) or depth > MAX_DEPTH:
            state.done(address, Outcome("bounced", "5.4.6", f"mail forwarding loop for {address}"))
            return
        if aliases:
            value = await self.aliases.find(name)
            if value is None and ext:
                value = await self.aliases.find(user)
            if value is not None:
                for target in alias.parse(value):
                    await self._alias_target(state, target, address, (name, user), depth + 1)
                return
        home_mailbox = self.cfg.get("home_mailbox")
        spool = self.cfg.get("mail_spool_directory")
        try:
            pw = pwd.getpwnam(user)
            name, uid, gid, home = pw.pw_name, pw.pw_uid, pw.pw_gid, pw.pw_dir
        except KeyError:
            if home_mailbox or not spool:  # no home to deliver to
                state.done(address, Outcome("bounced", "5.1.1", f'unknown user: "{user}"'))
                return
            name, uid, gid, home = user, -1, -1, ""  # spool mailbox owned by this agent
        if not state.first_time(f"mailbox:{name}"):
            return
        if home_mailbox:
            where = os.path.join(home, home_mailbox)
        else:
            where = os.path.join(spool, name) + ("/" if spool.endswith("/") else "")
        state.done(address, await self._store(state, where, address, uid, gid, name))

    async def _alias_target(
        self, state: State, target: alias.Target, address: str, names: tuple[str, str], depth: int
    ) -> None:
        kind, value = target.kind, target.value
        if kind == "local":
            if value.lower() in names:  # "root: root, other" delivers to root's mailbox
                await self._local(state, address, depth, aliases=False)
            else:
                await self._local(state, f"{value.lower()}@{self.myorigin}", depth)
        elif kind == "address":
            if state.first_time(f"address:{value.lower()}"):
                state.done(value, await self._forward(state, value, address))
        elif kind == "include":
            try:
                targets = alias.read_include(value)
            except OSError as exc:
                text = f"cannot open include file {value}: {exc.strerror}"
                state.done(address, Outcome("deferred", "4.3.0", text))
                return
            for inner in targets:
                await self._alias_target(state, inner, address, names, depth + 1)
        elif kind == "file":
            if not self.allow_files:
                state.done(address, Outcome("bounced", "5.7.1", "mail to file is restricted"))
            elif state.first_time(f"file:{value}"):
                state.done(
                    address, await self._store(state, value, address, -1, -1, value, file=True)
                )
        elif not self.allow_commands:
            state.done(address, Outcome("bounced", "5.7.1", "mail to command is restricted"))
        elif state.first_time(f"command:{value}"):
            state.done(address, await self._command(state, value, address))

    async def _command(self, state: State, command: str, address: str) -> Outcome:
        local, _, domain = address.rpartition("@")
        user, ext = split_extension(local, self.delimiter)
        env = {
            "PATH": "/usr/bin:/bin",
            "SHELL": "/bin/sh",
            "SENDER": state.job.sender,
            "RECIPIENT": address,
            "ORIGINAL_RECIPIENT": state.rcpt.orig_rcpt or state.rcpt.address,
            "LOCAL": local,
            "DOMAIN": domain,
            "USER": user,
            "EXTENSION": (ext or "")[1:],
        }
        data = mbox_message(state.text, state.job.sender, self._headers(state, address))
        return await deliver_command(
            command, data, env,
            time_limit=self.cfg.time("command_time_limit"),
            user=self.cfg.get("default_privs"),
        )

    async def _forward(self, state: State, target: str, address: str) -> Outcome:
        """An alias to an address: queue a copy for it, with our Delivered-To (loop check)."""
        if self.reinject is None:
            return Outcome("deferred", "4.3.0", "cannot forward: no queue")
        job = state.job
        entry = QueueEntry(
            queue_id="",
            sender=job.sender,
            recipients=[Recipient(target, orig_rcpt=state.rcpt.orig_rcpt or state.rcpt.address)],
            env_id=job.env_id,
            ret=job.ret,
            protocol="local",
        )
        data = f"Delivered-To: {address.lower()}\n".encode("utf-8", "surrogateescape") + state.text
        qid = await self.reinject(entry, data)
        return Outcome("sent", "2.0.0", f"forwarded as {qid}")

    # -- virtual(8) -------------------------------------------------------------

    async def _virtual(self, state: State) -> None:
        address = state.rcpt.address
        if delivered_to_seen(state.text, address):
            state.done(address, Outcome("bounced", "5.4.6", f"mail forwarding loop for {address}"))
            return
        strategy = Strategy.FULL | Strategy.NOEXT | Strategy.AT_DOMAIN
        found = await mail_addr_find(
            self.mailboxes, address, strategy, recipient_delimiter=self.delimiter
        )
        if found is None:
            state.done(address, Outcome("bounced", "5.1.1", f'unknown user: "{address}"'))
            return
        uid = await mail_addr_find(self.uids, address, strategy, recipient_delimiter=self.delimiter)
        gid = await mail_addr_find(self.gids, address, strategy, recipient_delimiter=self.delimiter)
        where = os.path.join(self.cfg.get("virtual_mailbox_base"), found.value)
        outcome = await self._store(
            state, where, address, _number(uid.value if uid else ""),
            _number(gid.value if gid else ""), address,
        )
        state.done(address, outcome)

    # -- the mailbox itself ---------------------------------------------------------

    def _headers(self, state: State, address: str) -> bytes:
        return header_lines(
            state.job.sender, state.rcpt.orig_rcpt or state.rcpt.address, address
        )

    async def _store(
        self,
        state: State,
        where: str,
        address: str,
        uid: int,
        gid: int,
        user: str,
        *,
        file: bool = False,
    ) -> Outcome:
        """Maildir when ``where`` ends in ``/``, else an mbox file; Postfix's texts."""
        headers = self._headers(state, address)
        path = Path(where)
        if where.endswith("/"):
            try:
                await asyncio.to_thread(deliver_maildir, path, headers + state.text, uid, gid)
            except OSError as exc:
                text = f"maildir delivery failed: create maildir file {path}: {exc.strerror}"
                return Outcome.by_dsn(_dsn(exc), text)
            return Outcome("sent", "2.0.0", "delivered to maildir")
        data = mbox_message(state.text, state.job.sender, headers)
        try:
            await asyncio.to_thread(deliver_mbox, path, data, uid, gid)
        except MailboxBusy as exc:
            text = f"cannot update mailbox {path} for user {user}. {exc}"
            return Outcome("deferred", "4.2.0", text)
        except OSError as exc:
            text = f"cannot update mailbox {path} for user {user}. {exc.strerror}"
            return Outcome.by_dsn(_dsn(exc), text)
        what = f"file: {where}" if file else "mailbox"
        return Outcome("sent", "2.0.0", f"delivered to {what}")


def _dsn(exc: OSError) -> str:
    """A full disk or quota is the mailbox's problem (5.2.2); anything else may pass (4.2.0)."""
    return "5.2.2" if exc.errno in (errno.EDQUOT, errno.EFBIG) else "4.2.0"


def _number(text: str) -> int:
    return int(text) if text.strip().isdigit() else -1
