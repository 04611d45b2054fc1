"""The `postbus` command: Postfix's tools as subcommands (≈ the postfix(1) front end).

Each subcommand lives in its own module `postbus.cli.<name>` exposing
`main(argv: list[str]) -> int`, so `postbus postconf -n` runs
`postbus.cli.postconf.main(["-n"])`.
"""

from __future__ import annotations

import importlib
import sys

from postbus.config.conv import ConfigError

COMMANDS = {
    "postconf": "show and edit main.cf / master.cf",
    "postmap": "build and query lookup tables",
    "postalias": "build and query alias tables",
    "postqueue": "list and flush the queue",
    "postsuper": "delete, hold, release and requeue queued mail",
    "sendmail": "submit a message from standard input",
    "saslpasswd": "add, delete and list SMTP AUTH users (smtpd_sasl_type = postbus)",
    "dkim": "dkim keygen -d DOMAIN -s SELECTOR: make a DKIM key and its DNS record",
    "tlsrpt": "show a day's TLS-RPT results, or send its reports now (--send-now)",
    "events": "follow the queue's event stream (-j JSON, --since, --kind, -n)",
    "start": "start NATS, Redis and every master.cf service as local processes",
    "stop": "stop what `postbus start` started",
    "status": "show whether the system started by `postbus start` runs",
    "reload": "make running services re-read main.cf and master.cf",
}

_MODULES = {"start": "master", "stop": "master", "status": "master", "reload": "master"}


def usage() -> str:
    lines = ["usage: postbus [-c config_dir] COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    global_opts: list[str] = []
    while args and args[0] == "-c" and len(args) > 1:
        global_opts += args[:2]
        args = args[2:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"postbus: fatal: unknown command: {name}\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"postbus.cli.{_MODULES.get(name, name)}")
    if name in _MODULES:
        rest = [name, *rest]
    try:
        result: int = module.main(global_opts + rest)
    except ConfigError as exc:  # e.g. a parameter Postbus does not support yet
        print(f"postbus: fatal: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
