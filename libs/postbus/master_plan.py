"""Which processes `postbus start` runs for a master.cf (≈ Postfix master_ent.c).

Each master.cf line's command maps to the Postbus role that does that work;
``maxproc`` sets the process count of the roles that scale. Lines whose
work a role already does inside its own process start nothing, and lines
Postbus cannot run are reported with their file and line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from postbus.config.loader import Config
from postbus.config.master_cf import MasterEntry

# master.cf command -> Python module of the role that runs it
ROLE_MODULES = {
    "smtpd": "ingress_smtpd",
    "qmgr": "qmgr",
    "oqmgr": "qmgr",
    "smtp": "delivery_smtp",
    "lmtp": "delivery_smtp",
    "local": "delivery_local",
    "virtual": "delivery_local",
    "policy": "policy",
    "content-filter": "content_filter",
    "maps-api": "maps_api",
    "webhooks": "webhooks",
}
# Postfix daemons whose work a Postbus role already does: no process of their own.
BUILT_IN = {
    "cleanup": "ingress-smtpd",
    "trivial-rewrite": "qmgr",
    "bounce": "qmgr",
    "defer": "qmgr",
    "trace": "qmgr",
    "verify": "qmgr",
    "flush": "qmgr",
    "showq": "postbus postqueue",
    "error": "qmgr",
    "retry": "qmgr",
    "discard": "qmgr",
    "proxymap": "maps-api",
    "proxywrite": "maps-api",
    "anvil": "ingress-smtpd",
    "scache": "delivery-smtp",
    "tlsmgr": "ingress-smtpd",
    "postlog": "every service (maillog_file)",
    "postlogd": "every service (maillog_file)",
    "pickup": "postbus sendmail",
}
SCALING = {
    "ingress_smtpd", "qmgr", "delivery_smtp", "delivery_local", "policy", "content_filter",
    "webhooks",
}


@dataclass
class Child:
    """One process master.cf asks for."""

    service: str
    command: str
    module: str
    index: int
    metrics_port: int
    type: str = "unix"
    pid: int = 0
    listen: str = ""
    shared_name: bool = False  # another master.cf line has the same service name
    unpriv: bool = True  # master.cf unpriv column: run as mail_owner when started as root
    groups: tuple[int, ...] = ()  # supplementary groups as mail_owner (TLS key files)

    @property
    def label(self) -> str:
        name = f"{self.service}/{self.type}" if self.shared_name else self.service
        return f"{name}#{self.index}" if self.index else name

    @property
    def listen_port(self) -> int:
        """The TCP port of an inet service (0 for others)."""
        return int(self.listen.rpartition(":")[2]) if self.listen else 0

    def argv(self, config_dir: Path | str) -> list[str]:
        """The command line that runs this child (also used by the test harness)."""
        return [
            sys.executable, "-m", self.module,
            "-c", str(config_dir),
            "-n", f"{self.service}/{self.type}",
            "--metrics", f"127.0.0.1:{self.metrics_port}",
        ]


def plan(cfg: Config) -> tuple[list[Child], list[str]]:
    """The children master.cf asks for, and a note for each line not run."""
    children: list[Child] = []
    notes: list[str] = []
    port = cfg.int("postbus_metrics_port")
    for entry in cfg.master:
        module = ROLE_MODULES.get(entry.command)
        if module is None:
            role = BUILT_IN.get(entry.command)
            if role is None:
                notes.append(
                    f"{entry.file}, line {entry.line}: service {entry.service}: "
                    f"command {entry.command} is not supported by Postbus; not started"
                )
            continue
        count = process_count(entry) if module in SCALING else 1
        for index in range(count):
            listen = ""
            if entry.type == "inet":
                addr = entry.listen_address()
                if addr:
                    listen = f"{addr[0] or '0.0.0.0'}:{addr[1]}"
            children.append(
                Child(entry.service, entry.command, module, index, port, entry.type,
                      listen=listen, unpriv=entry.is_unpriv())
            )
            port += 1
    names = [e.service for e in cfg.master]
    for child in children:
        child.shared_name = names.count(child.service) > 1
    return children, notes


def process_count(entry: MasterEntry) -> int:
    """maxproc as a process count; Postfix's "-"/100 default means one process here,
    because each Postbus process already serves many sessions concurrently."""
    value = entry.maxproc
    if value in ("-", "", None):
        return 1
    count = int(value)
    return 1 if count <= 0 or count >= 100 else count
