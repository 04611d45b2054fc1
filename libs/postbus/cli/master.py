"""`postbus start|stop|status|reload`: run the whole system as local processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from postbus import privs
from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.master import READY_TIMEOUT, master_dir, read_state, state_path
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
    """Start the master and return once every role is ready; when a role
    cannot start, say why (its fatal line) and exit 1 within seconds."""
    if read_state(cfg):
        print("postbus/postfix-script: fatal: the Postbus mail system is already running")
        return 1
    if privs.started_as_root():
        try:
            privs.check_mail_owner(cfg)
        except ConfigError as exc:
            print(f"postbus: fatal: {exc}", file=sys.stderr)
            return 1
    Path(cfg.get("data_directory")).mkdir(parents=True, exist_ok=True)
    try:
        private = privs.private_directory(master_dir(cfg))
        with contextlib.suppress(FileNotFoundError):
            (private / "master.state").unlink()  # what a failed start left
        log = privs.open_log(private / "master.log")
    except (ConfigError, OSError) as exc:
        print(f"postbus: fatal: {exc}", file=sys.stderr)
        return 1
    master = subprocess.Popen(
        [sys.executable, "-m", "postbus.master", "-c", str(cfg.config_dir)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    os.close(log)
    master_log = master_dir(cfg) / "master.log"
    deadline = time.monotonic() + READY_TIMEOUT + 30
    while True:
        state = read_state(cfg, running=False)
        if master.poll() is not None:
            _failed(cfg, state, master_log)
            return 1
        if state and state.get("ready"):
            break
        if time.monotonic() > deadline:
            master.terminate()
            master.wait()
            _failed(cfg, read_state(cfg, running=False), master_log)
            return 1
        time.sleep(0.1)
    print("postbus/postfix-script: starting the Postbus mail system")
    _describe(cfg, state)
    return 0


def _failed(cfg: Config, state: dict[str, object] | None, master_log: Path) -> None:
    """Why the start failed: each fatal line, then where the log is."""
    failures = state.get("failures") if state else None
    if isinstance(failures, list) and failures:
        for line in failures:
            print(line, file=sys.stderr)
    else:
        with contextlib.suppress(OSError):
            for line in master_log.read_text(errors="replace").splitlines()[-5:]:
                print(line, file=sys.stderr)
    where = cfg.get("maillog_file") or master_log
    print(f"postbus/postfix-script: fatal: the Postbus mail system did not start; see {where}",
          file=sys.stderr)


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
    _roles(children)
    notes = state.get("notes", [])
    assert isinstance(notes, list)
    for note in notes:
        print(f"  warning: {note}")
    print("  stop with: make stop (or: postbus -c DIR stop)")


def _roles(children: list[dict[str, object]]) -> None:
    """One line per process: state (running, starting, throttled, failed), pid,
    user, metrics address; under it the role's last fatal line, if any."""
    for child in children:
        state = str(child.get("state", "running"))
        pid = child["pid"] if state in ("running", "starting") else "-"
        user = f"user {child['user']}  " if child.get("user") else ""
        since, when = "", child.get("since")
        if state not in ("running", "starting") and isinstance(when, float):
            since = time.strftime("since %H:%M:%S  ", time.localtime(when))
        print(f"  {child['label']:<18} {state:<9} pid {pid:<7} {since}{user}"
              f"metrics http://127.0.0.1:{child['metrics_port']}/metrics")
        if child.get("last_fatal"):
            print(f"      {child['last_fatal']}")


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
        last = read_state(cfg, running=False)
        failures = last.get("failures") if last else None
        if isinstance(failures, list) and failures:
            print("  the last start failed:")
            for line in failures:
                print(f"      {line}")
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
    try:
        cfg, rest = _config(argv)
    except ConfigError as exc:
        print(f"postbus: fatal: {exc}", file=sys.stderr)
        return 1
    command = rest[0] if rest else "status"
    actions = {"start": start, "stop": stop, "status": status, "reload": reload}
    return actions[command](cfg)
