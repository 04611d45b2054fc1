"""Whose rights a delivery's file operations use (≈ set_eugid.c, mail_params.c's account checks).

Postfix's local(8) and virtual(8) run as root and switch their effective
uid/gid to the recipient's around each file operation. The Postbus agent is
one asyncio process with many deliveries under way, so it never switches the
process: every file operation runs in a delivery thread that switches its own
file-system identity with Linux's per-thread setfsuid()/setfsgid() (the
kernel drops that thread's file capabilities while its fsuid is not 0, so
every permission check applies) and switches back before the thread takes
other work. A switch that did not take effect refuses the delivery; a switch
back that fails ends the process (the job is redelivered), so no thread ever
runs with someone else's identity by mistake. Supplementary groups are
cleared once for the whole process, so root's groups never lend access.

The delivery threads are a plain queue and a fixed set of threads rather
than a ThreadPoolExecutor: one hop there and back per file operation, with
no concurrent.futures Future and its locks in between.

When the agent is not root (containers run every role as one unprivileged
user) it delivers as itself and nothing is switched.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import pwd
import queue
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from postbus.config.loader import Config

log = logging.getLogger("postbus.delivery")

T = TypeVar("T")

#: File operations wait on fsync; more threads than CPUs keep the disk busy.
WORKERS = 16


@dataclass(frozen=True)
class Rights:
    """A file-system identity; -1 means "as the agent" (no switch)."""

    uid: int = -1
    gid: int = -1

    def __str__(self) -> str:
        return f"UID/GID={self.uid}/{self.gid}"


AGENT = Rights()
ROOT = Rights(0, 0)


class PrivilegeError(Exception):
    """The identity switch did not happen; the delivery must not go ahead."""


class ConfigProblem(Exception):
    """A configuration error found at delivery time: defer 4.3.5, log the text."""


def is_root() -> bool:
    return os.geteuid() == 0


# -- the switch -------------------------------------------------------------------------------

def _load_libc() -> ctypes.CDLL | None:
    """setfsuid() and setfsgid() without letting the GIL go: they take no time, and a
    delivery thread that let it go would wait for it to come back, eight times a switch."""
    try:
        libc = ctypes.PyDLL(None, use_errno=True)
        libc.setfsuid.argtypes = [ctypes.c_int]
        libc.setfsgid.argtypes = [ctypes.c_int]
    except (OSError, AttributeError):  # not Linux/glibc: root cannot deliver safely
        return None
    return libc


_libc = _load_libc()

_groups_cleared = False


def _current() -> tuple[int, int]:
    """The thread's fsuid and fsgid (an invalid id changes nothing and returns them)."""
    assert _libc is not None
    return _libc.setfsuid(-1), _libc.setfsgid(-1)


def _switch(uid: int, gid: int) -> None:
    global _groups_cleared
    if _libc is None:
        raise PrivilegeError("cannot switch privileges: setfsuid() is not available")
    if not _groups_cleared:
        os.setgroups([])
        _groups_cleared = not os.getgroups()
        if not _groups_cleared:
            raise PrivilegeError("cannot clear the supplementary groups")
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)
    if _current() != (uid, gid):
        _restore()
        raise PrivilegeError(f"cannot switch to UID/GID={uid}/{gid}")


def _restore() -> None:
    assert _libc is not None
    _libc.setfsuid(0)
    _libc.setfsgid(0)
    if _current() != (0, 0):
        log.critical("fatal: cannot switch file system identity back to root")
        os._exit(1)


def _call(rights: Rights, fn: Callable[..., T], args: tuple[object, ...]) -> T:
    if rights.uid < 0 or not is_root():
        return fn(*args)
    _switch(rights.uid, rights.gid)
    try:
        return fn(*args)
    finally:
        _restore()


_Work = tuple[asyncio.AbstractEventLoop, asyncio.Future[Any], Rights, Callable[..., Any],
              tuple[object, ...]]
_work: queue.SimpleQueue[_Work] = queue.SimpleQueue()
_threads: list[threading.Thread] = []


def _settle(fut: asyncio.Future[Any], failed: bool, value: Any) -> None:
    if fut.done():  # the delivery was cancelled meanwhile (the service stops)
        return
    if failed:
        fut.set_exception(value)
    else:
        fut.set_result(value)


def _serve() -> None:
    """A delivery thread: take work, run it, hand the result back to its loop."""
    while True:
        loop, fut, rights, fn, args = _work.get()
        try:
            value, failed = _call(rights, fn, args), False
        except BaseException as exc:  # handed to the awaiting coroutine
            value, failed = exc, True
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
            loop.call_soon_threadsafe(_settle, fut, failed, value)
        del loop, fut, fn, args, value


def _start() -> None:
    # Daemon threads: nothing joins them at exit. A delivery cut short there was not
    # reported, so its job is handed out again, as after a crash (a ThreadPoolExecutor
    # would finish the write at exit, and not report it either).
    for index in range(WORKERS):
        thread = threading.Thread(target=_serve, name=f"delivery_{index}", daemon=True)
        thread.start()
        _threads.append(thread)


async def run_as(rights: Rights, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a delivery thread with ``rights`` (raises PrivilegeError)."""
    if not _threads:
        _start()
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()
    _work.put((loop, fut, rights, fn, args))
    return await fut


# -- who --------------------------------------------------------------------------------------


def account(cfg: Config, param: str) -> pwd.struct_passwd:
    """The unprivileged account a parameter names (default_privs, mail_owner), checked as
    Postfix checks it at start (mail_params.c); ConfigProblem with Postfix's text."""
    name = cfg.get(param)
    where = f"file {cfg.get('config_directory')}/main.cf: parameter {param}"
    try:
        entry = pwd.getpwnam(name)
    except (KeyError, ValueError):
        raise ConfigProblem(f"{where}: unknown user name value: {name}") from None
    if entry.pw_uid == 0:
        raise ConfigProblem(f"{where}: user {name} has privileged user ID")
    return entry


@functools.lru_cache(maxsize=4)
def default_rights(cfg: Config) -> Rights:
    """default_privs: the rights of alias deliveries to files and commands (looked up once
    per configuration, as Postfix does at start)."""
    entry = account(cfg, "default_privs")
    return Rights(entry.pw_uid, entry.pw_gid)


@functools.lru_cache(maxsize=4)
def owner_rights(cfg: Config) -> Rights:
    """mail_owner: the rights of users found only in a local_recipient_maps table (looked up
    once per configuration)."""
    owner, privs = account(cfg, "mail_owner"), account(cfg, "default_privs")
    where = f"file {cfg.get('config_directory')}/main.cf: parameters default_privs and mail_owner"
    if owner.pw_name == privs.pw_name:
        raise ConfigProblem(f"{where} specify the same user {owner.pw_name}")
    if owner.pw_uid == privs.pw_uid:
        raise ConfigProblem(f"{where}: users {privs.pw_name} and {owner.pw_name} "
                            f"have the same user ID: {owner.pw_uid}")
    if owner.pw_gid == privs.pw_gid:
        raise ConfigProblem(f"{where}: users {privs.pw_name} and {owner.pw_name} "
                            f"have the same group ID: {owner.pw_gid}")
    return Rights(owner.pw_uid, owner.pw_gid)


def spool_rights(spool: str, user: Rights) -> tuple[Rights, Rights]:
    """Rights to open an mbox in the spool with, and the owner a new file gets (≈ mailbox.c).

    World-writable spool: as the recipient. Group-writable: the recipient's
    uid with the spool's group. Otherwise root opens the file and gives a new
    one to the recipient (AGENT: no chown).
    """
    try:
        st = os.stat(spool)
    except OSError:
        return user, AGENT
    if st.st_mode & stat.S_IWOTH:
        return user, AGENT
    if st.st_mode & stat.S_IWGRP:
        return Rights(user.uid, st.st_gid), AGENT
    return ROOT, user
