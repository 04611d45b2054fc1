"""smtpd_client_event_limit_exceptions as Postfix's namadr_list matches it: networks and
addresses against the address, names and .domains against the name, tables against both,
``!`` excludes, the first match decides; the default is $mynetworks."""

from __future__ import annotations

import pytest

from ingress_smtpd.limits import ClientList
from tests.integration.ingress.conftest import make_config


@pytest.mark.parametrize(("value", "name", "addr", "hit"), [
    ("10.0.0.0/8", "unknown", "10.1.2.3", True),
    ("10.0.0.0/8", "unknown", "11.1.2.3", False),
    ("[2001:db8::]/32", "unknown", "2001:db8::1", True),
    ("192.0.2.1", "unknown", "192.0.2.1", True),
    ("!192.0.2.1, 192.0.2.0/24", "unknown", "192.0.2.1", False),
    ("!192.0.2.1, 192.0.2.0/24", "unknown", "192.0.2.2", True),
    ("mx.example.com", "MX.example.com", "192.0.2.9", True),
    ("mx.example.com", "a.mx.example.com", "192.0.2.9", False),
    (".example.com", "a.mx.example.com", "192.0.2.9", True),
    ("inline:{192.0.2.9=ok}", "unknown", "192.0.2.9", True),
    ("inline:{host.example=ok}", "host.example", "192.0.2.10", True),
    ("inline:{host.example=ok}", "other.example", "192.0.2.10", False),
])
async def test_matches(value: str, name: str, addr: str, hit: bool) -> None:
    cfg = make_config(smtpd_client_event_limit_exceptions=value)
    assert await ClientList(cfg, "smtpd_client_event_limit_exceptions").matches(name, addr) is hit


async def test_default_is_mynetworks() -> None:
    cfg = make_config(mynetworks="192.0.2.0/24")
    exceptions = ClientList(cfg, "smtpd_client_event_limit_exceptions")
    assert await exceptions.matches("unknown", "192.0.2.77")
    assert not await exceptions.matches("unknown", "127.0.0.1")
