"""Who a local name is (≈ local/mailbox.c's mypwnam(), plus Postbus's table users).

Postfix's local(8) delivers a mailbox only to a user getpwnam() knows.
Postbus also delivers to names listed in a ``local_recipient_maps`` table
(not the passwd pseudo-table ``unix:passwd.byname``): containers have no
system users, and that table is where smtpd already checks them. Anything
else is an unknown user. The name must pass :func:`valid_name` first, so a
local part such as ``../x`` or ``/tmp/x`` never reaches a lookup, let alone
a path.
"""

from __future__ import annotations

import pwd
from dataclasses import dataclass

from delivery_local.names import valid_name
from postbus.maps.maps import Maps, open_maps

#: The passwd pseudo-table: getpwnam() itself, not a table of names.
PASSWD_TABLES = ("proxy:unix:passwd.byname", "unix:passwd.byname")


@dataclass(frozen=True)
class LocalUser:
    """A resolved local user: the mailbox name and whose it is."""

    name: str
    uid: int = -1  # -1: no passwd entry (a table user)
    gid: int = -1
    home: str = ""
    shell: str = ""

    @property
    def in_passwd(self) -> bool:
        return self.uid >= 0


def open_user_tables(value: str) -> Maps:
    """The tables of ``local_recipient_maps`` that list names (as smtpd opens them)."""
    maps = Maps(title="local_recipient_maps")
    for spec in value.replace(",", " ").split():
        if spec not in PASSWD_TABLES:
            maps.tables.extend(open_maps(spec.removeprefix("proxy:"), maps.title).tables)
    return maps


async def find_user(user: str, domain: str, tables: Maps) -> LocalUser | None:
    """The passwd entry of ``user``, else a table entry (``user``, then ``user@domain``).

    None when the name is not a valid mailbox name or nobody knows it.
    TableRetry propagates (the caller defers).
    """
    if not valid_name(user):
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        entry = None
    if entry is not None:
        if not valid_name(entry.pw_name):
            return None
        return LocalUser(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)
    if tables.tables and (
        await tables.find(user, partial=True) is not None
        or await tables.find(f"{user}@{domain}") is not None
    ):
        return LocalUser(user)
    return None
