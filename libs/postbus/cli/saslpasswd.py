"""postbus saslpasswd: the users of smtpd_sasl_type = postbus (≈ Cyrus's saslpasswd2).

    postbus saslpasswd add USER      password from the terminal (twice) or stdin's first line
    postbus saslpasswd delete USER
    postbus saslpasswd list

Users live in Redis (postbus_redis_url, hash postbus_sasl_users_key) as
argon2 hashes, with SCRAM-SHA-256/-1 keys beside them (hash
``<postbus_sasl_users_key>:scram``, for postbus_sasl_scram = yes), so every
ingress replica sees a change at once.  A name is
stored as given; with smtpd_sasl_local_domain set, smtpd looks up
``user@<that domain>`` for a login without ``@``, so add that form.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from redis.exceptions import RedisError

from postbus.config.loader import Config
from postbus.maps import context
from postbus.sasl.users import UserStore, valid_username

PROG = "saslpasswd"


def _password() -> str | None:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if getpass.getpass("Again (for verification): ") != first:
            print(f"{PROG}: fatal: passwords don't match", file=sys.stderr)
            return None
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


async def _run(cfg: Config, args: argparse.Namespace, password: str | None) -> int:
    context.configure(cfg.get("postbus_redis_url"), connect_timeout=3.0)
    store = UserStore(context.redis_client(), cfg.get("postbus_sasl_users_key"))
    try:
        if args.action == "add":
            assert password is not None
            await store.set(args.user, password)
        elif args.action == "delete":
            if not await store.delete(args.user):
                print(f"{PROG}: warning: user {args.user} not found", file=sys.stderr)
                return 1
        else:
            for name in await store.names():
                print(name)
    finally:
        await context.aclose()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=f"postbus {PROG}")
    parser.add_argument("-c", dest="config_dir")
    parser.add_argument("action", choices=("add", "delete", "list"))
    parser.add_argument("user", nargs="?")
    args = parser.parse_args(argv)
    if args.action != "list" and not args.user:
        parser.error(f"{args.action} needs a user name")
    if args.user is not None and not valid_username(args.user):
        print(f"{PROG}: fatal: bad user name: {args.user!r}", file=sys.stderr)
        return 1
    cfg = Config.load(args.config_dir, check_support=False)
    password = None
    if args.action == "add":
        password = _password()
        if not password:
            print(f"{PROG}: fatal: empty password", file=sys.stderr)
            return 1
    try:
        return asyncio.run(_run(cfg, args, password))
    except (RedisError, OSError) as exc:
        print(f"{PROG}: fatal: cannot reach Redis: {exc}", file=sys.stderr)
        return 75
