"""`postbus start|stop|status|reload`: run the whole system as local processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from postbus.config.loader import Config
from postbus.master import read_state, state_path
from postbus.servers import pid_alive


def _config(argv: list[str]) -> tuple[Config, list[str]]:
    config_dir = None
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg == "-c":
            config_dir = next(it, None)
        else:
            rest.append(arg)
    # start and reload refuse a configuration Postbus cannot honour; stop and
    # status work whatever main.cf says.
    check = (rest[:1] or ["status"])[0] in ("start", "reload")
    return Config.load(config_dir, check_support=check), rest


def start(cfg: Config) -> int:
    if read_state(cfg):
        print("postbus/postfix-script: fatal: the Postbus mail system is already running")
        return 1
    data = Path(cfg.get("data_directory"))
    data.mkdir(parents=True, exist_ok=True)
    log = open(data / "master.log", "ab")  # noqa: SIM115 - handed to the child
    subprocess.Popen(
        [sys.executable, "-m", "postbus.master", "-c", str(cfg.config_dir)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 60
    state = None
    while time.monotonic() < deadline:
        state = read_state(cfg)
        if state and state.get("ready"):
            break
        time.sleep(0.1)
    else:
        print(f"postbus: fatal: the mail system did not start; see {data / 'master.log'}")
        return 1
    print("postbus/postfix-script: starting the Postbus mail system")
    _describe(cfg, state)
    return 0


def _describe(cfg: Config, state: dict[str, object]) -> None:
    children = state.get("children", [])
    assert isinstance(children, list)
    for child in children:
        if child["listen"] and child["command"] == "smtpd":
            print(f"  SMTP: {child['listen']} ({child['service']})")
    spool = cfg.get("mail_spool_directory")
    home_mailbox = cfg.get("home_mailbox")
    if spool.endswith("/") and not home_mailbox:
        print(f"  local mail: Maildir under {spool}<user>/new/")
    else:
        print(f"  local mail: {home_mailbox or spool}")
    if cfg.get("relayhost"):
        print(f"  other mail: relayed to {cfg.get('relayhost')}")
    if cfg.get("maillog_file"):
        print(f"  log: {cfg.get('maillog_file')}")
    servers = state.get("servers", {})
    assert isinstance(servers, dict)
    for name, url in servers.items():
        print(f"  {name}: {url}")
    for child in children:
        print(f"  {child['label'] if 'label' in child else child['service']:<18}"
              f" pid {child['pid']:<7} metrics http://127.0.0.1:{child['metrics_port']}/metrics")
    notes = state.get("notes", [])
    assert isinstance(notes, list)
    for note in notes:
        print(f"  warning: {note}")
    print("  stop with: make stop (or: postbus -c DIR stop)")


def _master_pid(cfg: Config) -> int | None:
    """The running master's pid, or None after saying it is not running."""
    state = read_state(cfg)
    if not state:
        print("postbus/postfix-script: fatal: the Postbus mail system is not running")
        return None
    pid = state["pid"]
    assert isinstance(pid, int)
    return pid


def stop(cfg: Config) -> int:
    pid = _master_pid(cfg)
    if pid is None:
        return 1
    print("postbus/postfix-script: stopping the Postbus mail system")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        os.killpg(pid, signal.SIGKILL)
    if state_path(cfg).exists():
        state_path(cfg).unlink()
    return 0


def status(cfg: Config) -> int:
    state = read_state(cfg)
    if not state:
        print("postbus/postfix-script: the Postbus mail system is not running")
        return 1
    print(f"postbus/postfix-script: the Postbus mail system is running: PID: {state['pid']}")
    _describe(cfg, state)
    return 0


def reload(cfg: Config) -> int:
    pid = _master_pid(cfg)
    if pid is None:
        return 1
    os.kill(pid, signal.SIGHUP)
    print("postbus/postfix-script: refreshing the Postbus mail system")
    return 0


def main(argv: list[str]) -> int:
    cfg, rest = _config(argv)
    command = rest[0] if rest else "status"
    actions = {"start": start, "stop": stop, "status": status, "reload": reload}
    return actions[command](cfg)
