"""Writing one message to its destination, with Postfix's texts and codes
(≈ local/mailbox.c, local/maildir.c, local/file.c, virtual/mailbox.c, virtual/maildir.c).

A :class:`Destination` is a trusted base directory, the resolved components
below it, whose rights the file operations run with, and what Postfix calls
it in a reply. :func:`store` runs the write in a delivery thread with those
rights (:mod:`delivery_local.privs`) and maps every failure to the DSN and
text the Postfix agent of that kind gives.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from typing import Literal

from delivery_local.mailbox import Executable, MailboxBusy, NotOwned, NotRegular, deliver_mbox
from delivery_local.maildir import MaildirWriteError, deliver_maildir
from delivery_local.privs import AGENT, PrivilegeError, Rights, run_as
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.delivery import Outcome

log = logging.getLogger("postbus.delivery")

Kind = Literal["local", "virtual", "file"]

CONFIG_ERROR = "mail system configuration error"


@dataclass(frozen=True)
class Destination:
    """Where one delivery writes: ``base/parts...``, a Maildir when ``maildir``."""

    kind: Kind  # local mailbox, virtual mailbox, or alias /file
    base: str
    parts: tuple[str, ...]
    maildir: bool
    rights: Rights = AGENT  # the file operations run as this
    owner: Rights = AGENT  # a new mbox file is given to this (root created it)
    owner_uid: int = -1  # strict_mailbox_ownership: the mbox must belong to this uid
    user: str = ""  # the recipient, as Postfix names it in texts
    recipient: str = ""

    @property
    def path(self) -> str:
        path = os.path.join(self.base, *self.parts)
        return path + "/" if self.maildir else path


def mbox_dsn(err: int | None, default: str) -> str:
    """Errno to DSN as Postfix's mbox_dsn(): retry, full file system, full mailbox, else default."""
    if err in (errno.EAGAIN, errno.ESTALE):
        return "4.2.0"
    if err == errno.ENOSPC:
        return "4.3.0"
    if err in (errno.EDQUOT, errno.EFBIG):
        return "5.2.2"
    return default


def config_error(warning: str, dsn: str = "4.3.5") -> Outcome:
    """A configuration problem: Postfix's text in the reply, the details in a warning."""
    log.warning("%s", warning)
    return Outcome.by_dsn(dsn, CONFIG_ERROR)


async def store(
    dest: Destination, data: bytes, *, lock_wait: float = 5.0, size_limit: int = 0
) -> Outcome:
    """Deliver ``data`` (a Maildir file, or a complete mbox entry) to ``dest``.

    ``size_limit``: the file size limit (mailbox_size_limit or
    virtual_mailbox_limit, 0 for none); going past it bounces 5.2.2 with
    Postfix's ``File too large``, the mailbox left as it was."""
    try:
        if dest.maildir:
            return await _maildir(dest, data, size_limit)
        return await _mbox(dest, data, lock_wait, size_limit)
    except PrivilegeError as exc:
        log.warning("%s: %s", dest.recipient, exc)
        return Outcome("deferred", "4.3.0", f"{exc}")


async def _maildir(dest: Destination, data: bytes, size_limit: int) -> Outcome:
    try:
        await run_as(dest.rights, deliver_maildir, dest.base, dest.parts, data, size_limit)
    except OSError as exc:
        if isinstance(exc, MaildirWriteError):
            why = f"error writing message: {exc.strerror}"
        else:
            why = f"create maildir file {exc.filename or dest.path}: {exc.strerror}"
        if exc.errno == errno.EACCES:
            log.warning("maildir access problem for %s: %s", dest.rights, why)
            log.warning("perhaps you need to create the maildirs in advance")
        default = "4.2.0" if dest.kind == "virtual" else "5.2.0"
        return Outcome.by_dsn(mbox_dsn(exc.errno, default), f"maildir delivery failed: {why}")
    return Outcome("sent", "2.0.0", "delivered to maildir")


async def _mbox(dest: Destination, data: bytes, lock_wait: float, size_limit: int) -> Outcome:
    path = dest.path
    if dest.kind == "local":
        prefix = f"cannot update mailbox {path} for user {dest.user}. "
    elif dest.kind == "virtual":
        prefix = f"delivery failed to mailbox {path}: "
    else:
        prefix = f"cannot append message to file {path}: "
    owner = None if dest.owner == AGENT else (dest.owner.uid, dest.owner.gid)
    try:
        await run_as(
            dest.rights, _append, dest, data, owner, lock_wait, size_limit,
        )
    except MailboxBusy as exc:
        return Outcome("deferred", "4.2.0", f"{prefix}{exc}")
    except NotRegular:
        if dest.kind == "virtual":
            log.warning("recipient %s: destination %s is not a regular file", dest.recipient, path)
            return Outcome("bounced", "5.3.5", f"{prefix}{CONFIG_ERROR}")
        return Outcome("bounced", "5.2.0", f"{prefix}destination {path} is not a regular file")
    except NotOwned:
        log.warning('specify "strict_mailbox_ownership = no" to ignore mailbox ownership mismatch')
        return Outcome("deferred", "4.2.0", f"{prefix}destination {path} is not owned by recipient")
    except Executable:
        return Outcome("bounced", "5.7.1", f"{prefix}file is executable")
    except OSError as exc:
        default = "4.2.0" if dest.kind == "virtual" else "5.2.0"
        return Outcome.by_dsn(mbox_dsn(exc.errno, default), f"{prefix}{exc.strerror}")
    if dest.kind == "file":
        return Outcome("sent", "2.0.0", f"delivered to file: {path}")
    return Outcome("sent", "2.0.0", "delivered to mailbox")


def _append(
    dest: Destination, data: bytes, owner: tuple[int, int] | None, lock_wait: float,
    size_limit: int,
) -> None:
    *parents, name = dest.parts
    deliver_mbox(
        dest.base, parents, name, data, owner=owner, owner_uid=dest.owner_uid,
        any_file=dest.kind == "file", lock_wait=lock_wait, size_limit=size_limit,
    )


def file_limit(cfg: Config, virtual: bool) -> int:
    """mailbox_size_limit (local) or virtual_mailbox_limit, checked as Postfix checks it at start.

    Raises ConfigError when the limit is below message_size_limit (the agent
    could not deliver a message the system accepted) or message_size_limit is
    unlimited while the mailbox is not."""
    name = "virtual_mailbox_limit" if virtual else "mailbox_size_limit"
    limit, message_limit = cfg.size(name), cfg.size("message_size_limit")
    if limit > 0:
        if message_limit <= 0:
            raise ConfigError(f"configuration error: {name} is limited but "
                              "message_size_limit is unlimited")
        if limit < message_limit:
            raise ConfigError(f"configuration error: {name} is smaller than message_size_limit")
    return limit
