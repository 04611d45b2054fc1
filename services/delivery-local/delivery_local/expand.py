"""What an alias expands into and with whose rights (≈ local/alias.c, include.c, file.c,
command.c, forward.c).

Targets come only from ``alias_maps`` values and the ``:include:`` files
they name, never from an address a client typed. ``/file`` and ``|command``
targets are allowed only where ``allow_mail_to_files`` /
``allow_mail_to_commands`` list the class they came from: ``alias`` for an
alias value, ``include`` for an ``:include:`` file (Postfix's defaults,
``alias, forward``, allow aliases only).

Rights, as root (Postfix's rules for a root-owned alias database): files
and commands get ``default_privs``; targets read from an ``:include:`` file
owned by another user get that user's rights instead. Not as root, the agent
uses its own. A command never runs as root.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from collections.abc import Awaitable, Callable

from delivery_local import alias
from delivery_local.command import deliver_command
from delivery_local.copy import mbox_message
from delivery_local.names import printable, valid_name
from delivery_local.privs import AGENT, ConfigProblem, Rights, default_rights, is_root
from delivery_local.state import State
from delivery_local.store import Destination, config_error, store
from postbus.cleanup import CleanupError
from postbus.config.loader import Config
from postbus.delivery import Outcome
from postbus.maps.addr_find import split_extension
from postbus.maps.maps import open_maps
from postbus.queue.entry import QueueEntry, Recipient

log = logging.getLogger("postbus.delivery")

#: Deliver to a local name: (state, address, depth, aliases) (the agent's _local).
LocalFn = Callable[[State, str, int, bool], Awaitable[None]]
#: Re-queue a message (alias to a remote address); returns the new queue ID.
Reinject = Callable[[QueueEntry, bytes], Awaitable[str]]


class AliasExpander:
    def __init__(self, cfg: Config, local: LocalFn, reinject: Reinject | None) -> None:
        self.cfg = cfg
        self.local = local
        self.reinject = reinject
        self.maps = open_maps(cfg.get("alias_maps"), "alias_maps")
        self.myorigin = cfg.get("myorigin")
        self.delimiter = cfg.get("recipient_delimiter")
        self.commands = {w.lower() for w in cfg.list("allow_mail_to_commands")}
        self.files = {w.lower() for w in cfg.list("allow_mail_to_files")}

    async def expand(self, state: State, address: str, name: str, user: str, depth: int) -> bool:
        """Deliver to the alias of ``name`` (then ``user``); False when there is none."""
        value = await self.maps.find(name)
        if value is None and user != name:
            value = await self.maps.find(user)
        if value is None:
            return False
        for target in alias.parse(value):
            await self._target(state, target, address, (name, user), depth + 1, "alias", None)
        return True

    async def _target(
        self, state: State, target: alias.Target, address: str, names: tuple[str, str],
        depth: int, cls: str, rights: Rights | None,
    ) -> None:
        """One alias entry; ``cls`` is alias or include, ``rights`` None for default_privs."""
        kind, value = target.kind, target.value
        if kind == "local":
            if value.lower() in names:  # "root: root, other" delivers to root's mailbox
                await self.local(state, address, depth, False)
            else:
                await self.local(state, f"{value.lower()}@{self.myorigin}", depth, True)
        elif kind == "address":
            if state.first_time(f"address:{value.lower()}"):
                state.done(value, await self._forward(state, value, address))
        elif kind == "include":
            await self._include(state, value, address, names, depth, rights)
        elif kind == "file":
            if cls not in self.files:
                state.done(address, Outcome("bounced", "5.7.1", "mail to file is restricted"))
            else:
                await self._file(state, value, address, rights)
        elif cls not in self.commands:
            state.done(address, Outcome("bounced", "5.7.1", "mail to command is restricted"))
        else:
            await self._command(state, value, address, rights)

    def _rights(self, rights: Rights | None) -> Rights:
        """Rights for a file or command: none to switch to unless root (ConfigProblem)."""
        if not is_root():
            return AGENT
        return default_rights(self.cfg) if rights is None else rights

    async def _include(
        self, state: State, path: str, address: str, names: tuple[str, str], depth: int,
        rights: Rights | None,
    ) -> None:
        """``:include:/file`` (≈ include.c): absolute, a regular file, not world-writable."""
        problem = None
        if not path.startswith("/"):
            problem = f":include:{path} uses a relative path"
        else:
            try:
                st = os.stat(path)
            except OSError as exc:
                problem = f"unable to lookup :include: file {path}: {exc.strerror}"
            else:
                if not stat.S_ISREG(st.st_mode):
                    problem = f":include: file {path} is not a regular file"
                elif st.st_mode & stat.S_IWOTH:
                    problem = f":include: file {path} is world writable"
        if problem is not None:
            state.done(address, config_error(printable(problem), "5.3.5"))
            return
        if is_root() and rights is None and st.st_uid != 0:
            try:
                owner = pwd.getpwuid(st.st_uid)
            except KeyError:
                log.warning("cannot find username for uid %d", st.st_uid)
                state.done(address, config_error(
                    f"{path}: cannot find :include: file owner username"))
                return
            rights = Rights(owner.pw_uid, owner.pw_gid)
        uid = rights.uid if rights is not None else 0
        if not state.first_time(f"include:{uid}:{path}"):
            return
        try:
            targets = alias.read_include(path)
        except OSError as exc:
            problem = f"cannot open include file {path}: {exc.strerror}"
            state.done(address, config_error(printable(problem), "5.3.5"))
            return
        for inner in targets:
            await self._target(state, inner, address, names, depth + 1, "include", rights)

    async def _file(self, state: State, path: str, address: str, rights: Rights | None) -> None:
        """``/file`` or ``/dir/`` (a Maildir): as default_privs, never through a link."""
        try:
            who = self._rights(rights)
        except ConfigProblem as exc:
            state.done(address, config_error(f"{exc}"))
            return
        if not state.first_time(f"file:{who.uid}:{path}"):
            return
        maildir = path.endswith("/")
        head, tail = os.path.split(path.rstrip("/"))
        if not head or not valid_name(tail, dot_ok=True) or printable(head) != head:
            problem = f"alias {address}: bad file destination {printable(path)}"
            state.done(address, config_error(problem, "5.3.5"))
            return
        dest = Destination("file", head, (tail,), maildir, rights=who, recipient=address)
        headers = state.headers(address)
        data = headers + state.text if maildir else mbox_message(
            state.text, state.job.sender, headers
        )
        limit = self.cfg.size("mailbox_size_limit")
        state.done(address, await store(dest, data, size_limit=limit))

    async def _command(
        self, state: State, command: str, address: str, rights: Rights | None
    ) -> None:
        """``|command`` (≈ command.c): as default_privs under /bin/sh, never as root."""
        try:
            who = self._rights(rights)
        except ConfigProblem as exc:
            state.done(address, config_error(f"{exc}"))
            return
        if not state.first_time(f"command:{who.uid}:{command}"):
            return
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
        data = mbox_message(state.text, state.job.sender, state.headers(address))
        state.done(address, await deliver_command(
            command, data, env, time_limit=self.cfg.time("command_time_limit"), rights=who,
            file_limit=self.cfg.size("mailbox_size_limit"),
        ))

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
        try:
            qid = await self.reinject(entry, data)
        except CleanupError as exc:
            return Outcome("deferred", exc.reply[4:9], f"cannot forward: {exc.reply[10:]}")
        return Outcome("sent", "2.0.0", f"forwarded as {qid}")
