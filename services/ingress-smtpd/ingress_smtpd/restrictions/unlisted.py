"""reject_unlisted_recipient and smtpd_reject_unlisted_recipient (≈ check_rcpt_maps()):
the recipient must exist in the table of its address class."""

from __future__ import annotations

import pwd
from typing import TYPE_CHECKING

from ingress_smtpd.restrictions.actions import dsn_fix, dsn_split
from ingress_smtpd.restrictions.state import CheckState
from postbus.maps.maps import Maps, open_maps, table_specs
from postbus.maps.table import Table, fold_key
from postbus.resolve import AddressClass
from postbus.smtp import replies as r

if TYPE_CHECKING:
    from ingress_smtpd.restrictions.stages import Policy


class PasswdTable(Table):
    """``unix:passwd.byname`` through getpwnam() (what proxy:unix:passwd.byname reads)."""

    fixed = True

    async def lookup(self, key: str) -> str | None:
        if "@" in key:
            return None
        try:
            entry = pwd.getpwnam(fold_key(key))
        except KeyError:
            return None
        return f"{entry.pw_name}:x:{entry.pw_uid}:{entry.pw_gid}:{entry.pw_gecos}:{entry.pw_dir}"


def open_recipient_maps(value: str, title: str) -> Maps:
    maps = Maps(title=title)
    for spec in table_specs(value):
        if spec in ("proxy:unix:passwd.byname", "unix:passwd.byname"):
            maps.tables.append(PasswdTable(spec))
        else:
            maps.tables.extend(open_maps(spec.removeprefix("proxy:"), title).tables)
    return maps


async def check_unlisted(
    policy: Policy, state: CheckState, address: str | None = None, kind: str = r.RECIPIENT
) -> str | None:
    """The address (the recipient, or with ``kind`` SENDER the sender) must exist in
    its class's table; the error and retry transports reject at once."""
    if not policy.rcpt_checks:
        return None
    address = state.recipient if address is None else address
    sender = kind == r.SENDER
    reply = await policy.resolve(state, address)
    rewrites = policy.rewrite_maps + ([policy.sender_canonical] if sender else [])
    for rewrite in rewrites:
        if rewrite and await policy.resolver.find(rewrite, reply.recipient) is not None:
            return None
    if reply.transport in ("error", "retry"):
        soft = reply.transport == "retry"
        dsn, text = dsn_split(reply.nexthop, ("4.1.0" if soft else "5.1.0") if sender
                              else ("4.1.1" if soft else "5.1.1"))
        code = 450 if soft else (
            policy.cfg.int("unknown_virtual_alias_reject_code")
            if reply.address_class is AddressClass.VIRTUAL_ALIAS else 550
        )
        return r.ACCESS_REJECT.format(code=code, dsn=dsn_fix(dsn, kind), what=address,
                                      kind=kind, text=text)
    table_param = {
        AddressClass.LOCAL: ("local_maps", r.LOCAL_RECIPIENT_TABLE,
                             "unknown_local_recipient_reject_code"),
        AddressClass.VIRTUAL_MAILBOX: ("mailbox_maps", r.VIRTUAL_MAILBOX_TABLE,
                                       "unknown_virtual_mailbox_reject_code"),
        AddressClass.RELAY: ("relay_maps", r.RELAY_RECIPIENT_TABLE,
                             "unknown_relay_recipient_reject_code"),
    }.get(reply.address_class)
    if table_param is None:
        return None
    attr, table, code_param = table_param
    maps: Maps = getattr(policy, attr)
    if not maps.tables:
        return None
    if reply.address_class is AddressClass.LOCAL and _mail_system_name(policy, reply.recipient):
        return None
    if await policy.resolver.find(maps, reply.recipient) is not None:
        return None
    return r.ACCESS_REJECT.format(code=policy.cfg.int(code_param),
                                  dsn="5.1.0" if sender else "5.1.1", what=address, kind=kind,
                                  text=f"User unknown in {table}")


def _mail_system_name(policy: Policy, recipient: str) -> bool:
    """postmaster, MAILER-DAEMON and the double-bounce sender exist in every local domain."""
    local = recipient.rpartition("@")[0].lower()
    return local in ("postmaster", "mailer-daemon", policy.double_bounce)
