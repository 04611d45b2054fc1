"""mail_owner and default_privs are checked as Postfix's mail_params.c checks them."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.privs import Owner, check_mail_owner, reading_groups, spawn_options


def check(main_cf: str) -> Owner:
    return check_mail_owner(Config.from_text(main_cf, config_dir="/etc/postbus"))


def test_an_unprivileged_mail_owner_passes() -> None:
    assert check("mail_owner = daemon\ndefault_privs = nobody\n") == Owner("daemon", 1, 1)


@pytest.mark.parametrize(("main_cf", "text"), [
    ("mail_owner = no-such-user\n", "parameter mail_owner: unknown user name value: no-such-user"),
    ("mail_owner = root\n", "parameter mail_owner: user root has privileged user ID"),
    ("mail_owner = daemon\ndefault_privs = no-such-user\n",
     "parameter default_privs: unknown user name value: no-such-user"),
    ("mail_owner = daemon\ndefault_privs = root\n",
     "parameter default_privs: user root has privileged user ID"),
    ("mail_owner = daemon\ndefault_privs = daemon\n",
     "parameters default_privs and mail_owner specify the same user daemon"),
])
def test_postfix_refuses_these_and_so_do_we(main_cf: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        check(main_cf)
    assert str(info.value) == f"file /etc/postbus/main.cf: {text}"


def test_spawn_options() -> None:
    owner = Owner("postbus", 999, 995)
    assert spawn_options(None) == {}
    assert spawn_options(owner, 2525) == {"user": 999, "group": 995, "extra_groups": []}
    assert set(spawn_options(owner, 25)) == {"preexec_fn"}  # keeps CAP_NET_BIND_SERVICE


def test_reading_groups_names_the_group_that_guards_a_tls_key() -> None:
    """Debian's layout: /etc/ssl/private root:ssl-cert 0710, the key 0640."""
    tmp_path = Path(tempfile.mkdtemp(prefix="postbus-groups-"))
    try:
        _check_groups(tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _check_groups(tmp_path: Path) -> None:
    gid = 4242 if os.getgid() == 0 else os.getgid()
    private = tmp_path / "private"
    private.mkdir()
    key = private / "snakeoil.key"
    key.write_text("key")
    cert = tmp_path / "snakeoil.pem"
    cert.write_text("cert")
    private.chmod(0o710)
    key.chmod(0o640)
    cert.chmod(0o644)
    tmp_path.chmod(0o755)
    if os.geteuid() == 0:  # root can give them a group of their own, as ssl-cert is
        for path in (private, key, cert):
            os.chown(path, 0, gid)
    group = os.stat(key).st_gid
    stranger = Owner("stranger", 54321, 54321)
    assert reading_groups(stranger, [str(cert)]) == []  # world-readable: nothing needed
    assert reading_groups(stranger, [str(key), str(cert)]) == [group]
    assert reading_groups(Owner("self", os.getuid(), 54321), [str(key)]) == []
    key.chmod(0o600)  # the group cannot read it either: no group would help
    assert reading_groups(stranger, [str(key)]) == []
    assert reading_groups(stranger, [str(tmp_path / "missing")]) == []
    opts = spawn_options(stranger, 0, [group])
    assert opts == {"user": 54321, "group": 54321, "extra_groups": [group]}
