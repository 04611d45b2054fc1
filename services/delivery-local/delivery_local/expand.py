"""What an alias or a .forward file expands into and with whose rights (≈ local/alias.c,
dotforward.c, include.c, file.c, command.c, forward.c, recipient.c).

Targets come only from ``alias_maps`` values, users' ``.forward`` files
(``forward_path``) and the ``:include:`` files they name, never from an
address a client typed. ``/file`` and ``|command`` targets are allowed only
where ``allow_mail_to_files`` / ``allow_mail_to_commands`` list the class
they came from: ``alias``, ``forward`` or ``include`` (Postfix's defaults,
``alias, forward``).

Rights, as root (Postfix's rules for a root-owned alias database): alias
files and commands get ``default_privs``; targets read from an
``:include:`` file owned by another user get that user's rights; a
``.forward`` file's targets get the recipient's own (default_privs for
root). Not as root, the agent uses its own, and so honours only its own
account's ``.forward`` (another user's is ignored with a warning: its
commands would run as the mail system). A command never runs as root.

Who gets the mail next, as Postfix decides: a name that is the
recipient's own goes to its mailbox; with an ``owner-<alias>`` alias
(``owner_request_special``) the expansion's envelope sender becomes
``owner-<alias>@$myorigin`` (or its value, with ``expand_owner_alias``) and
its local names are re-queued with that sender, as are the local names of a
``.forward`` file and of ``:include:`` files; re-queued copies carry
``Delivered-To:`` so that forwarding loops bounce (``mail forwarding loop``).

Where a bounce goes (≈ bounce_workaround.c): a failed ``/file`` (mbox) or
``|command`` delivery, ``mail to file is restricted`` and a forwarding loop
of an address that has an ``owner-`` alias are reported to that owner
(:meth:`AliasExpander.owner_notice`: the result's ``bounce_to``, which the
qmgr honours); every other failure, a bad ``:include:`` file included, goes
to the message's sender, as Postfix's live answers show.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal

from delivery_local import alias
from delivery_local.copy import mbox_message
from delivery_local.forward import find_forward
from delivery_local.local_expand import recipient_attrs
from delivery_local.names import printable, valid_name
from delivery_local.privs import AGENT, ConfigProblem, PrivilegeError, Rights, is_root, run_as
from delivery_local.runner import CommandRunner
from delivery_local.state import State
from delivery_local.store import Destination, config_error, store
from delivery_local.users import LocalUser
from postbus.cleanup import CleanupError
from postbus.cleanup.canonical import extension_classes
from postbus.config.loader import Config
from postbus.delivery import Outcome
from postbus.maps.addr_find import split_extension
from postbus.maps.maps import open_maps
from postbus.queue.entry import QueueEntry, Recipient
from postbus.resolve import Resolver

log = logging.getLogger("postbus.delivery")

#: How far a local name is delivered: aliases, .forward and mailbox; no aliases (an alias
#: that names itself); the mailbox only (``\\user``, a .forward naming its own user).
Mode = Literal["all", "noalias", "mailbox"]
#: Deliver to a local name: (state, address, depth, mode) (the agent's _local).
LocalFn = Callable[[State, str, int, Mode], Awaitable[None]]
#: Re-queue a message (alias to a remote address); returns the new queue ID.
Reinject = Callable[[QueueEntry, bytes], Awaitable[str]]


#: Alias hops before "alias database loop": Postfix's nesting counter (limit 100) grows by
#: about four per hop, so a loop between two aliases ends at the 25th, on the second name.
ALIAS_DEPTH = 25


@dataclass(frozen=True)
class Who:
    """Whose rights and home file and command targets get (≈ USER_ATTR)."""

    rights: Rights | None = None  # None: default_privs
    user: LocalUser | None = None  # HOME, SHELL, ~/file


ALIAS = Who()


def _reader(who: Who) -> Rights:
    """Rights to look up and read an :include: file with: root's for aliases, else the
    rights of the .forward user or :include: file owner who named it."""
    if is_root() and who.rights is not None and who.rights.uid != 0:
        return who.rights
    return AGENT


def user_rights(user: LocalUser) -> Rights:
    """A passwd user's own rights as root (lstat and open of .forward), else the agent's."""
    return Rights(user.uid, user.gid) if is_root() and user.in_passwd else AGENT


class AliasExpander:
    def __init__(self, cfg: Config, local: LocalFn, reinject: Reinject | None) -> None:
        self.cfg = cfg
        self.local = local
        self.reinject = reinject
        self.maps = open_maps(cfg.get("alias_maps"), "alias_maps")
        self.resolver = Resolver(cfg)
        self.myorigin = cfg.get("myorigin")
        self.delimiter = cfg.get("recipient_delimiter")
        self.commands = {w.lower() for w in cfg.list("allow_mail_to_commands")}
        self.files = {w.lower() for w in cfg.list("allow_mail_to_files")}
        self.owner_special = cfg.bool("owner_request_special")
        self.expand_owner = cfg.bool("expand_owner_alias")
        self.forward_path = cfg.get("forward_path")
        self.forward_filter = cfg.get("forward_expansion_filter")
        self.delivered_for = {w.lower() for w in cfg.list("prepend_delivered_header")}
        self.propagate = extension_classes(cfg)
        self.runner = CommandRunner(cfg)

    # -- aliases ------------------------------------------------------------------------

    async def expand(self, state: State, address: str, name: str, user: str, depth: int) -> bool:
        """Deliver to the alias of ``name`` (then ``user``); False when there is none."""
        found, value = name, await self.maps.find(name)
        if value is None and user != name:
            found, value = user, await self.maps.find(user)
        if value is None:
            return False
        if depth >= ALIAS_DEPTH:
            log.warning("alias database loop for %s", found)
            state.done(address, Outcome("bounced", "5.4.6", f"alias database loop for {found}"))
            return True
        targets = alias.parse(value)
        if not targets:
            log.warning("no recipient in alias lookup result for %s", found)
            state.done(address, Outcome("deferred", "4.3.0", "alias database unavailable"))
            return True
        changes: dict[str, object] = {"indirect": False, "unmatched": ""}
        if found != name and "alias" in self.propagate:  # matched without its extension
            changes["unmatched"] = name[len(user):]
        owner = await self._owner(found)
        if owner:  # a mailing list: its owner gets the bounces, DSN fields start afresh
            changes.update(sender=owner, owner=owner, orig_rcpt="")
        with state.below(**changes):
            for target in targets:
                await self._target(state, target, address, (name, user), depth + 1, "alias",
                                   ALIAS)
        return True

    async def _owner(self, name: str) -> str:
        """The envelope sender of an alias's expansion when ``owner-name`` exists."""
        if not self.owner_special:
            return ""
        value = await self.maps.find(f"owner-{name}")
        if value is None:
            return ""
        owner = value.strip() if self.expand_owner else f"owner-{name}"
        return owner if "@" in owner else f"{owner}@{self.myorigin}"

    async def owner_notice(self, address: str, outcome: Outcome) -> Outcome:
        """A bounce of ``address`` (the alias, .forward or loop address being delivered)
        goes to ``owner-<its local part>`` (or without its extension) when that alias
        exists (≈ bounce_workaround(): Postfix's bounce_one() to the owner). A deferral
        stays the sender's, as Postfix's defer_append()."""
        if outcome.status != "bounced" or not self.owner_special:
            return outcome
        name = (address.rpartition("@")[0] or address).lower()
        owner = await self._owner(name)
        user = split_extension(name, self.delimiter)[0]
        if not owner and user != name:
            owner = await self._owner(user)
        return replace(outcome, bounce_to=owner) if owner else outcome

    # -- .forward -----------------------------------------------------------------------

    async def dotforward(self, state: State, address: str, user: LocalUser, depth: int) -> bool:
        """Deliver to the user's .forward file; False: none (or unusable), use the mailbox."""
        if not self.forward_path or not user.in_passwd:
            return False
        attrs = recipient_attrs(address, self.delimiter, user.home, user.shell)
        local, name = attrs["local"] or "", attrs["user"] or ""
        try:
            fwd = await find_forward(self.forward_path, attrs, self.forward_filter,
                                     user_rights(user), user.uid)
        except PrivilegeError as exc:
            state.done(address, Outcome("deferred", "4.3.0", f"{exc}"))
            return True
        if fwd is None:
            return False
        if not is_root() and user.uid != os.geteuid():
            # not root, its commands and files would run as the agent, not as the user
            log.warning("%s: ignoring %s: the local delivery agent is not root and cannot "
                        "deliver as user %s", state.job.queue_id, fwd.path, user.name)
            return False
        if not state.first_time(f"forward:{fwd.path}"):
            return f"forward-done:{fwd.path}" in state.seen  # else we are recursive
        if not fwd.targets:
            return False
        who = Who(Rights(user.uid, user.gid), user)
        unmatched = "" if fwd.extension_used or "forward" not in self.propagate \
            else local[len(name):]
        with state.below(owner=user.name, indirect=False, unmatched=unmatched):
            for target in fwd.targets:
                await self._target(state, target, address, (local, name), depth + 1,
                                   "forward", who)
        state.seen.add(f"forward-done:{fwd.path}")
        return True

    # -- one target ---------------------------------------------------------------------

    async def _target(
        self, state: State, target: alias.Target, address: str, names: tuple[str, str],
        depth: int, cls: str, who: Who,
    ) -> None:
        """One entry of an alias, .forward or :include: file (``cls``: where it came from)."""
        kind, value = target.kind, target.value
        if kind == "address":
            local, _, domain = value.rpartition("@")
            if local.lower() in names and await self.resolver.is_local(domain.lower()):
                kind, value = "local", local  # the recipient's own address
            elif state.unmatched:  # propagate_unmatched_extensions
                value = f"{local}{state.unmatched}@{domain}"
        if kind == "local":
            await self._local_name(state, value, address, names, depth, who)
        elif kind == "address":
            if state.first_time(f"address:{value.lower()}"):
                self.forward(state, value)
        elif kind == "include":
            await self._include(state, value, address, names, depth, who)
        elif kind in ("file", "home"):
            if cls not in self.files:
                state.done(address, await self.owner_notice(
                    address, Outcome("bounced", "5.7.1", "mail to file is restricted")))
            elif kind == "home":
                await self._home_file(state, value, address, who)
            else:
                await self._file(state, value, address, who)
        elif cls not in self.commands:
            state.done(address, Outcome("bounced", "5.7.1", "mail to command is restricted"))
        else:
            data = self.copy(state, address, "command")
            outcome = await self.runner.run(state, value, address, who, data)
            if outcome is not None:
                state.done(address, await self.owner_notice(address, outcome))

    async def _local_name(
        self, state: State, value: str, address: str, names: tuple[str, str], depth: int,
        who: Who,
    ) -> None:
        plain = value.lstrip("\\").lower()
        if plain in names:  # "root: root, other" and "\\alice" in alice's .forward
            mode: Mode = "mailbox" if value.startswith("\\") or who.user else "noalias"
            await self.local(state, address, depth, mode)
        else:
            mode = "mailbox" if value.startswith("\\") else "all"
            if mode == "all":
                plain += state.unmatched.lower()  # propagate_unmatched_extensions
            await self.local(state, f"{plain}@{self.myorigin}", depth, mode)

    def copy(self, state: State, address: str, kind: str) -> bytes:
        """From_ line, headers (Delivered-To: as prepend_delivered_header says) and text."""
        headers = state.headers(address, delivered=kind in self.delivered_for)
        return mbox_message(state.text, state.sender, headers)

    async def _include(
        self, state: State, path: str, address: str, names: tuple[str, str], depth: int,
        who: Who,
    ) -> None:
        """``:include:/file`` (≈ include.c): absolute, a regular file, not world-writable;
        looked up and read with the rights of whoever named it (a .forward's user), so a
        user cannot :include: a file they could not read themselves."""
        problem = None
        if not path.startswith("/"):
            problem = f":include:{path} uses a relative path"
        else:
            try:
                st = await run_as(_reader(who), os.stat, path)
            except PrivilegeError as exc:
                problem = f"{exc}"
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
        if is_root() and who.rights is None and st.st_uid != 0:
            try:
                owner = pwd.getpwuid(st.st_uid)
            except KeyError:
                log.warning("cannot find username for uid %d", st.st_uid)
                state.done(address, config_error(
                    f"{path}: cannot find :include: file owner username"))
                return
            who = Who(Rights(owner.pw_uid, owner.pw_gid), LocalUser(
                owner.pw_name, owner.pw_uid, owner.pw_gid, owner.pw_dir, owner.pw_shell))
        uid = who.rights.uid if who.rights is not None else 0
        if not state.first_time(f"include:{uid}:{path}"):
            return
        try:
            targets = await run_as(_reader(who), alias.read_include, path)
        except PrivilegeError as exc:
            state.done(address, Outcome("deferred", "4.3.0", f"{exc}"))
            return
        except OSError as exc:
            problem = f"cannot open include file {path}: {exc.strerror}"
            state.done(address, config_error(printable(problem), "5.3.5"))
            return
        changes: dict[str, object] = {"indirect": True}  # Postfix re-queues its local names
        if "include" not in self.propagate:
            changes["unmatched"] = ""
        with state.below(**changes):
            for inner in targets:
                await self._target(state, inner, address, names, depth + 1, "include", who)

    async def _home_file(self, state: State, path: str, address: str, who: Who) -> None:
        """``~/file``: under the home of the .forward or :include: owner (≈ token.c)."""
        if not path.startswith("~/") or who.user is None or not who.user.home.startswith("/"):
            log.warning("%s for: %s", "bad home directory syntax" if not path.startswith("~/")
                        else "unknown home directory", path)
            state.done(address, Outcome("bounced", "5.3.5", "mail system configuration error"))
            return
        await self._file(state, who.user.home.rstrip("/") + path[1:], address, who)

    async def _file(self, state: State, path: str, address: str, who: Who) -> None:
        """``/file`` or ``/dir/`` (a Maildir): with the target's rights, never through a link."""
        try:
            rights = self.runner.rights(who)
        except ConfigProblem as exc:
            state.done(address, config_error(f"{exc}"))
            return
        if not state.first_time(f"file:{rights.uid}:{path}"):
            return
        maildir = path.endswith("/")
        head, tail = os.path.split(path.rstrip("/"))
        if not head or not valid_name(tail, dot_ok=True) or printable(head) != head:
            problem = f"alias {address}: bad file destination {printable(path)}"
            state.done(address, config_error(problem, "5.3.5"))
            return
        dest = Destination("file", head, (tail,), maildir, rights=rights, recipient=address)
        headers = state.headers(address, delivered="file" in self.delivered_for)
        data = headers + state.text if maildir else mbox_message(state.text, state.sender, headers)
        outcome = await store(dest, data, size_limit=self.cfg.size("mailbox_size_limit"))
        # an mbox file's failure goes to the owner; a Maildir's to the sender (as maildir.c)
        state.done(address, outcome if maildir else await self.owner_notice(address, outcome))

    def forward(self, state: State, target: str) -> None:
        """Forward a copy to ``target`` once the recipient is done (:meth:`flush`)."""
        key = (state.delivered, state.sender)
        state.forwards.setdefault(key, []).append(Recipient(target, orig_rcpt=state.original))

    async def flush(self, state: State) -> None:
        """Queue the forwarded copies (≈ forward_finish()): one message per Delivered-To and
        sender (a list's owner), logged once for the job's recipient; with our
        Delivered-To (loop check); below an owner- alias without the original DSN fields.
        None when the recipient is deferred: Postfix cancels them, the retry sends them."""
        forwards, state.forwards = state.forwards, {}
        if any(outcome.status == "deferred" for _, outcome in state.leaves):
            return
        for (delivered, sender), rcpts in forwards.items():
            outcome = await self._send(state, delivered, sender, rcpts)
            state.done(state.rcpt.address, outcome)
            if outcome.status != "sent":
                return

    async def _send(
        self, state: State, delivered: str, sender: str, rcpts: list[Recipient]
    ) -> Outcome:
        if self.reinject is None:
            return Outcome("deferred", "4.3.0", "cannot forward: no queue")
        job = state.job
        listed = sender != job.sender
        entry = QueueEntry(
            queue_id="",
            sender=sender,
            recipients=rcpts,
            env_id="" if listed else job.env_id,
            ret="" if listed else job.ret,
            protocol="local",
            smtputf8=job.smtputf8,  # local(8) passes the sender's request on (sendopts)
        )
        data = state.text
        if "forward" in self.delivered_for:
            data = f"Delivered-To: {delivered.lower()}\n".encode("utf-8", "surrogateescape") + data
        try:
            qid = await self.reinject(entry, data)
        except CleanupError as exc:
            return Outcome("deferred", exc.reply[4:9], f"cannot forward: {exc.reply[10:]}")
        return Outcome("sent", "2.0.0", f"forwarded as {qid}")
