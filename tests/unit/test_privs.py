"""mail_owner and default_privs are checked as Postfix's mail_params.c checks them."""

from __future__ import annotations

import pytest

from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.privs import Owner, check_mail_owner, spawn_options


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
