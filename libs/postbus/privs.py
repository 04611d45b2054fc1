"""Who the processes of `postbus start` run as (≈ Postfix's mail_params.c
check_mail_owner() and the set-permissions step of postfix-script).

Started as root, the master runs every role as the unprivileged
``mail_owner``, as Postfix's master runs its daemons, except master.cf
lines whose ``unpriv`` column is ``n`` (local and virtual, which deliver as
each recipient and drop privileges per delivery themselves). nats-server
and redis-server run as mail_owner too. Started by anyone else, every
process runs as that user and nothing here applies.

Postfix refuses a mail_owner that is unknown, has user or group ID 0, or
is the same user as default_privs; so does :func:`check_mail_owner`, with
Postfix's texts. A role listening on a port below 1024 gets only
CAP_NET_BIND_SERVICE, as an ambient capability (what systemd's
``AmbientCapabilities=`` does), so it binds the port itself without root.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pwd
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postbus.config.conv import ConfigError
from postbus.config.loader import Config

__all__ = [
    "Owner",
    "check_mail_owner",
    "open_log",
    "prepare_directories",
    "private_directory",
    "reading_groups",
    "spawn_options",
    "started_as_root",
]

PRIVILEGED_PORTS = 1024


@dataclass(frozen=True)
class Owner:
    """An unprivileged user the processes run as."""

    name: str
    uid: int
    gid: int


def started_as_root() -> bool:
    return os.geteuid() == 0


def check_mail_owner(cfg: Config) -> Owner:
    """mail_owner, checked as Postfix checks it (with default_privs) at every start.

    Raises ConfigError with Postfix's text, e.g. ``file /etc/postbus/main.cf:
    parameter mail_owner: unknown user name value: postbus``.
    """
    main_cf = cfg.config_dir / "main.cf"

    def fatal(text: str) -> ConfigError:
        return ConfigError(f"file {main_cf}: {text}")

    privs = _user(cfg, "default_privs", fatal)
    owner = _user(cfg, "mail_owner", fatal)
    try:
        same = pwd.getpwuid(owner.uid).pw_name
    except KeyError:
        same = owner.name
    if same != owner.name:
        raise fatal(f"parameter mail_owner: user {owner.name} has the same"
                    f" user ID {owner.uid} as user {same}")
    if privs.name == owner.name:
        raise fatal(f"parameters default_privs and mail_owner specify the same user {owner.name}")
    if privs.uid == owner.uid:
        raise fatal(f"parameters default_privs and mail_owner: users {privs.name} and"
                    f" {owner.name} have the same user ID: {owner.uid}")
    if privs.gid == owner.gid:
        raise fatal(f"parameters default_privs and mail_owner: users {privs.name} and"
                    f" {owner.name} have the same group ID: {owner.gid}")
    return owner


def _user(cfg: Config, param: str, fatal: Callable[[str], ConfigError]) -> Owner:
    name = cfg.get(param)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise fatal(f"parameter {param}: unknown user name value: {name}") from None
    if entry.pw_uid == 0:
        raise fatal(f"parameter {param}: user {name} has privileged user ID")
    if entry.pw_gid == 0:
        raise fatal(f"parameter {param}: user {name} has privileged group ID")
    return Owner(name, entry.pw_uid, entry.pw_gid)


def private_directory(path: Path) -> Path:
    """A directory that only we can write, for the files the master writes as
    root inside the data_directory that mail_owner owns (state, each child's
    stderr, the server logs): made if missing, refused if it is a symbolic
    link, someone else's, or writable by others. Returned as
    ``/proc/self/fd/N``: a later rename of it cannot redirect our writes."""
    path.mkdir(mode=0o755, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):
            raise ConfigError(f"unsafe directory {path}: not a directory; remove it") from None
        raise
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        os.close(fd)
        raise ConfigError(f"unsafe directory {path}: owned by user ID {st.st_uid},"
                          f" mode {st.st_mode & 0o7777:04o}; remove it")
    return Path(f"/proc/self/fd/{fd}")


def open_log(path: Path | str) -> int:
    """A log file opened for appending without following a symbolic link
    (as root, a link planted by mail_owner must not lead our writes elsewhere)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)


def prepare_directories(cfg: Config, owner: Owner | None) -> None:
    """Create data_directory and give mail_owner what the processes write
    (≈ postfix-script set-permissions): data_directory itself, the NATS and
    Redis directories (whole trees, when a root-run left them root's), the
    maillog file, and mail_spool_directory when it lies inside data_directory.
    Mailboxes inside the spool keep their owners."""
    data = Path(cfg.get("data_directory"))
    data.mkdir(parents=True, exist_ok=True)
    if owner is None:
        return
    _own(data, owner)
    for param in ("postbus_nats_dir", "postbus_redis_dir"):
        path = Path(cfg.get(param))
        path.mkdir(parents=True, exist_ok=True)
        if os.lstat(path).st_uid == os.geteuid():  # ours: new, or left by a run as root
            for _, dirs, files, fd in os.fwalk(path, follow_symlinks=False):
                for name in dirs + files:
                    os.chown(name, owner.uid, owner.gid, dir_fd=fd, follow_symlinks=False)
            _own(path, owner)
    maillog = cfg.get("maillog_file")
    if maillog and not maillog.startswith("/dev/"):
        Path(maillog).parent.mkdir(parents=True, exist_ok=True)
        fd = open_log(maillog)
        os.fchown(fd, owner.uid, owner.gid)
        os.close(fd)
    spool = Path(cfg.get("mail_spool_directory"))
    if spool.resolve().is_relative_to(data.resolve()):
        spool.mkdir(parents=True, exist_ok=True)
        _own(spool, owner)


def _own(path: Path, owner: Owner) -> None:
    os.chown(path, owner.uid, owner.gid, follow_symlinks=False)


def spawn_options(
    owner: Owner | None, port: int = 0, groups: Sequence[int] = ()
) -> dict[str, Any]:
    """Popen arguments that start a process as ``owner`` (None: as ourselves);
    ``port``: the TCP port it listens on, for the capability to bind it;
    ``groups``: supplementary groups it needs (see :func:`reading_groups`)."""
    if owner is None:
        return {}
    if 0 < port < PRIVILEGED_PORTS:
        return {"preexec_fn": _drop_keeping_bind(owner, groups)}
    return {"user": owner.uid, "group": owner.gid, "extra_groups": list(groups)}


def reading_groups(owner: Owner, paths: Sequence[str]) -> list[int]:
    """The groups ``owner`` needs to read ``paths`` and search their directories, where
    the group (and not the owner's own rights) grants it: Debian keeps TLS keys in
    ``/etc/ssl/private`` (root:ssl-cert 0710, keys 0640) for the ssl-cert group. Postfix
    reads them as root before it drops privileges; a Postbus role starts as mail_owner,
    so it gets that one group instead."""
    groups: list[int] = []
    for path in paths:
        target = Path(path)
        chain = [*reversed(target.parents), target]
        needed: list[int] = []
        for i, step in enumerate(chain):
            try:
                st = os.stat(step)
            except OSError:
                needed = []
                break
            need = stat.S_IROTH if i == len(chain) - 1 else stat.S_IXOTH
            if st.st_uid == owner.uid or st.st_mode & need or st.st_gid == owner.gid:
                continue
            if not st.st_mode & (need << 3) or st.st_gid == 0:
                needed = []  # no group of ours would help (and never root's group)
                break
            needed.append(st.st_gid)
        groups += [g for g in dict.fromkeys(needed) if g not in groups]
    return groups


# -- CAP_NET_BIND_SERVICE as an ambient capability (Linux) --------------------

_PR_SET_KEEPCAPS = 8
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_RAISE = 2
_CAP_NET_BIND_SERVICE = 10
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _drop_keeping_bind(owner: Owner, groups: Sequence[int] = ()) -> Callable[[], None]:
    """A preexec_fn: become ``owner``, keeping CAP_NET_BIND_SERVICE across exec."""
    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    def preexec() -> None:
        os.setgroups(list(groups))
        os.setgid(owner.gid)
        check(libc.prctl(_PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
        os.setuid(owner.uid)
        bit = 1 << _CAP_NET_BIND_SERVICE
        header = _CapHeader(_CAPABILITY_VERSION_3, 0)
        data = (_CapData * 2)(_CapData(bit, bit, bit), _CapData(0, 0, 0))
        check(libc.capset(ctypes.byref(header), data), "capset")
        check(libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_RAISE, _CAP_NET_BIND_SERVICE, 0, 0),
              "prctl(PR_CAP_AMBIENT)")

    return preexec
