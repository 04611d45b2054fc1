"""postbus start's reading of master.cf: which roles run, which lines are built in."""

from __future__ import annotations

from pathlib import Path

from postbus.config.loader import Config
from postbus.master_plan import plan

STOCK = Path(__file__).parent / "config" / "data"


def test_stock_debian_master_cf_maps_every_line() -> None:
    text = (STOCK / "master.cf").read_text()
    cfg = Config.from_text("", text)
    children, notes = plan(cfg)
    labels = {c.label: (c.module, c.type) for c in children}
    assert labels["smtp/inet"] == ("ingress_smtpd", "inet")
    assert labels["smtp/unix"] == ("delivery_smtp", "unix")
    assert labels["relay"] == ("delivery_smtp", "unix")
    assert labels["qmgr"] == ("qmgr", "unix")
    assert labels["local"] == ("delivery_local", "unix")
    assert labels["virtual"] == ("delivery_local", "unix")
    assert labels["lmtp"] == ("delivery_smtp", "unix")
    assert not any(c.module == "cleanup" for c in children)
    # the lines Postbus cannot run yet are named with file and line
    assert all("is not supported by Postbus" in n for n in notes)
    assert any("command pipe" in n or "command postscreen" in n for n in notes) or not notes
    argv = next(c for c in children if c.label == "smtp/unix").argv("/etc/postbus")
    assert argv[argv.index("-n") + 1] == "smtp/unix"


def test_maxproc_sets_process_count_of_scaling_roles() -> None:
    # qmgr replicas share the queue and the destination windows (Postfix runs one)
    cfg = Config.from_text("", "smtp unix - - n - 3 smtp\nqmgr unix n - n 300 2 qmgr\n"
                               "local unix - n n - 100 local\n")
    children, _ = plan(cfg)
    assert [c.label for c in children] == ["smtp", "smtp#1", "smtp#2", "qmgr", "qmgr#1", "local"]
    assert len({c.metrics_port for c in children}) == 6


def test_unsupported_command_is_reported_with_its_line() -> None:
    cfg = Config.from_text("", "smtp unix - - n - - smtp\nuucp unix - n n - - pipe flags=F\n")
    _, notes = plan(cfg)
    assert len(notes) == 1
    assert "line 2" in notes[0] and "service uucp" in notes[0] and "command pipe" in notes[0]


def test_unpriv_column_is_kept_for_each_child() -> None:
    cfg = Config.from_text("", "qmgr unix n - n 300 1 qmgr\nlocal unix - n n - - local\n"
                               "127.0.0.1:25 inet n - n - - smtpd\n")
    children, _ = plan(cfg)
    assert [(c.label, c.unpriv, c.listen_port) for c in children] == [
        ("qmgr", True, 0), ("local", False, 0), ("127.0.0.1:25", True, 25)]
