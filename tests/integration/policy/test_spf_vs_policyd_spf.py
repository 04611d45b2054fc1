"""Our SPF check against Debian's policyd-spf (postfix-policyd-spf-python 3.0.4, default
configuration) on the same requests and the same loopback DNS server: pass, fail,
softfail, neutral, none, permerror, a failing HELO name, the null sender, a
local client, a second recipient of one message. policyd-spf's answers are recorded in
tests/data/postfix/policyd_spf.json for machines without it (refresh with
POSTBUS_RECORD_POSTFIX=1 where it is installed: apt-get install postfix-policyd-spf-python).
A DNS server failure is left out: Debian's pyspf resolves with pydns, which takes SERVFAIL
for "no record" (None), where pyspf on dnspython, as ours, gives RFC 7208's temperror.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from policy.spf import Spf
from postbus.config.loader import Config
from tests.integration.delivery.peers import DnsServer
from tests.recorded import Recording

pytestmark = pytest.mark.integration

POLICYD_SPF = "/usr/bin/policyd-spf"
RECORDING = Recording("policyd_spf")
ZONE = {
    ("pass.test", "TXT"): ['"v=spf1 ip4:192.0.2.0/24 -all"'],
    ("fail.test", "TXT"): ['"v=spf1 ip4:198.51.100.1 -all"'],
    ("soft.test", "TXT"): ['"v=spf1 ip4:198.51.100.1 ~all"'],
    ("neutral.test", "TXT"): ['"v=spf1 ?all"'],
    ("perm.test", "TXT"): ['"v=spf1 ip4:192.0.2.0/24 bogus:x -all"'],
    ("helo.test", "TXT"): ['"v=spf1 ip4:192.0.2.0/24 -all"'],
    ("badhelo.test", "TXT"): ['"v=spf1 -all"'],
    ("norecord.test", "A"): ["192.0.2.1"],
}
CASES = [  # sender, helo_name, client_address, instance
    ("alice@pass.test", "nohelo.test", "192.0.2.10", "m1"),
    ("alice@pass.test", "nohelo.test", "192.0.2.10", "m1"),  # second recipient
    ("alice@fail.test", "nohelo.test", "192.0.2.10", "m2"),
    ("alice@fail.test", "nohelo.test", "192.0.2.10", "m2"),
    ("a@soft.test", "nohelo.test", "192.0.2.10", "m3"),
    ("a@neutral.test", "nohelo.test", "192.0.2.10", "m4"),
    ("a@norecord.test", "nohelo.test", "192.0.2.10", "m5"),
    ("a@perm.test", "nohelo.test", "192.0.2.10", "m6"),
    ("a@pass.test", "badhelo.test", "192.0.2.10", "m8"),
    ("", "helo.test", "192.0.2.10", "m9"),
    ("a@fail.test", "nohelo.test", "127.0.0.1", "m10"),
]

WRAPPER = """
import sys, DNS, spf
DNS.defaults['server'] = ['127.0.0.1']
DNS.defaults['port'] = int(sys.argv.pop(1))
from spf_engine.policyd_spf import main
main()
"""


def _request(sender: str, helo: str, ip: str, instance: str) -> dict[str, str]:
    return {"request": "smtpd_access_policy", "protocol_state": "RCPT",
            "client_address": ip, "client_name": "unknown", "helo_name": helo,
            "sender": sender, "recipient": "bob@example.net", "instance": instance}


def policyd_spf_answers(port: int, tmp: Path) -> list[str]:
    conf = tmp / "policyd-spf.conf"
    conf.write_text("debugLevel = 1\nTestOnly = 1\nHELO_reject = Fail\n"
                    "Mail_From_reject = Fail\nPermError_reject = False\n"
                    "TempError_Defer = False\nLookup_Time = 5\n"
                    "skip_addresses = 127.0.0.0/8,::ffff:127.0.0.0/104,::1\n")
    stdin = "".join("".join(f"{k}={v}\n" for k, v in _request(*case).items()) + "\n"
                    for case in CASES)
    out = subprocess.run(["/usr/bin/python3", "-c", WRAPPER, str(port), str(conf)],
                         input=stdin.encode(), capture_output=True, timeout=120, check=True)
    return [block.removeprefix("action=") for block in out.stdout.decode().split("\n\n")
            if block]


async def test_spf_answers_as_policyd_spf(tmp_path: Path) -> None:
    dns = await DnsServer(ZONE, servfail=("tempfail.test",)).start()
    try:
        live = None
        if os.path.exists(POLICYD_SPF):
            live = await asyncio.to_thread(policyd_spf_answers, dns.port, tmp_path)
        expected: Any = RECORDING.answer("cases", (lambda: live) if live is not None else None)
        check = Spf(Config.from_text(f"postbus_dns_servers = 127.0.0.1:{dns.port}\n"
                                     "postbus_policy_spf_lookup_time = 5s\n"))
        ours = [await check.check(_request(*case)) for case in CASES]
    finally:
        dns.close()
    assert ours == expected
