"""Running a delivery command for a recipient: whose rights, which environment, where
(≈ local/command.c).

The environment is Postfix's: ``HOME``, ``SHELL`` (when the command runs
for a user: mailbox_command, .forward), ``LOGNAME``, ``USER``, ``SENDER``,
``RECIPIENT``, ``LOCAL``, ``DOMAIN``, ``EXTENSION``, ``ORIGINAL_RECIPIENT``,
``ENVID``, ``CLIENT_HOSTNAME``, ``CLIENT_ADDRESS``, ``CLIENT_HELO``,
``CLIENT_PROTOCOL`` when known, plus ``export_environment``; every value
has the characters outside ``command_expansion_filter`` replaced by ``_``
(a sender address cannot smuggle shell syntax into a command's variables).
Addresses never become part of the command line: the command is the
administrator's (alias, mailbox_command) or the user's own (.forward).
"""

from __future__ import annotations

import logging
from typing import Protocol

from delivery_local.command import deliver_command, exported
from delivery_local.local_expand import ExpandError, censor, local_expand, recipient_attrs
from delivery_local.privs import AGENT, ConfigProblem, Rights, default_rights, is_root
from delivery_local.state import Client, State
from delivery_local.store import config_error
from delivery_local.users import LocalUser
from postbus.config.loader import Config
from postbus.delivery import Outcome

log = logging.getLogger("postbus.delivery")


class WhoLike(Protocol):
    @property
    def rights(self) -> Rights | None: ...

    @property
    def user(self) -> LocalUser | None: ...


class CommandRunner:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.delimiter = cfg.get("recipient_delimiter")
        self.filter = cfg.get("command_expansion_filter")
        self.exec_dir = cfg.get("command_execution_directory")
        self.exec_filter = cfg.get("execution_directory_expansion_filter")
        self.shell = cfg.get("local_command_shell")
        self.export = cfg.list("export_environment")
        self.time_limit = cfg.time("command_time_limit")
        self.file_limit = cfg.size("mailbox_size_limit")

    def rights(self, who: WhoLike) -> Rights:
        """Rights for a file or command: default_privs for aliases and for root's own
        targets, else the user's; none to switch to unless root (ConfigProblem)."""
        if not is_root():
            return AGENT
        if who.rights is None or who.rights.uid == 0:
            return default_rights(self.cfg)
        return who.rights

    def _attrs(self, address: str, user: LocalUser | None) -> dict[str, str | None]:
        return recipient_attrs(address, self.delimiter, user.home if user else None,
                               user.shell if user else None)

    def environment(self, state: State, address: str, user: LocalUser | None,
                    client: Client) -> dict[str, str]:
        attrs = self._attrs(address, user)
        env = {"HOME": attrs["home"], "LOGNAME": attrs["user"], "USER": attrs["user"],
               "SENDER": state.sender, "RECIPIENT": address, "LOCAL": attrs["local"],
               "SHELL": attrs["shell"], "DOMAIN": attrs["domain"],
               "EXTENSION": attrs["extension"], "ORIGINAL_RECIPIENT": state.original,
               "ENVID": state.job.env_id if state.sender == state.job.sender else "",
               "CLIENT_HOSTNAME": client.name, "CLIENT_ADDRESS": client.addr,
               "CLIENT_HELO": client.helo, "CLIENT_PROTOCOL": client.protocol}
        out = exported(self.export)
        out["PATH"] = "/usr/bin:/bin"
        out.update({k: censor(v, self.filter) for k, v in env.items() if v})
        return out

    async def run(self, state: State, command: str, address: str, who: WhoLike, data: bytes
                  ) -> Outcome | None:
        """Deliver ``data`` to ``command`` for ``address``; None: this user's command had
        this message already (≈ been_here "command")."""
        try:
            rights = self.rights(who)
        except ConfigProblem as exc:
            return config_error(f"{exc}")
        attrs = self._attrs(address, who.user)
        if not state.first_time(f"command:{attrs['user']}:{rights.uid}:{command}"):
            return None
        cwd = ""
        if self.exec_dir:
            try:
                cwd = local_expand(self.exec_dir, attrs, self.exec_filter).text
            except ExpandError:
                log.warning("bad parameter value syntax for command_execution_directory: %s",
                            self.exec_dir)
                return Outcome("deferred", "4.3.5", "mail system configuration error")
        env = self.environment(state, address, who.user, await state.client())
        return await deliver_command(
            command, data, env, time_limit=self.time_limit, rights=rights,
            file_limit=self.file_limit, shell=self.shell, cwd=cwd,
        )
