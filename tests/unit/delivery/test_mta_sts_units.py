"""MTA-STS policy files, _mta-sts TXT records and mx patterns (RFC 8461 §3)."""

from __future__ import annotations

import pytest

from delivery_smtp.mta_sts import PolicyInvalid, StsPolicy, parse_policy, parse_txt
from delivery_smtp.tls_policy import TlsPolicies
from postbus.config.loader import Config


def test_a_policy_file_is_read_with_crlf_or_lf_and_repeated_mx() -> None:
    text = "version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\nmx: *.example.net\r\n" \
           "max_age: 604800\r\n"
    assert parse_policy(text) == ("enforce", ("mx1.example.com", "*.example.net"), 604800)
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 9999999999\n")[2] == 31557600
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0\n") == ("none", (), 0)


@pytest.mark.parametrize("text, why", [
    ("version: STSv2\nmode: enforce\nmx: a\nmax_age: 1\n", "version is not STSv1"),
    ("version: STSv1\nmode: strict\nmx: a\nmax_age: 1\n", "invalid mode: 'strict'"),
    ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx"),
    ("version: STSv1\nmode: testing\nmx: a\nmax_age: -1\n", "invalid max_age: '-1'"),
    ("version: STSv1\nmode: testing\nmx: a\nmax_age: 12345678901\n",
     "invalid max_age: '12345678901'"),
    ("<html>\n", "malformed line: '<html>'"),
])
def test_an_invalid_policy_says_why(text: str, why: str) -> None:
    with pytest.raises(PolicyInvalid) as exc:
        parse_policy(text)
    assert str(exc.value) == why


def test_txt_records_give_one_id_or_none() -> None:
    assert parse_txt(["v=STSv1; id=20161231T120000"]) == "20161231T120000"
    assert parse_txt(["v=spf1 -all", "v=STSv1;id=abc;"]) == "abc"
    assert parse_txt(["v=STSv1; id=1", "v=STSv1; id=2"]) is None  # several: no policy
    assert parse_txt(["v=STSv1; id=not-alnum"]) is None
    assert parse_txt(["v=STSv1"]) is None
    assert parse_txt(["v=STSv10; id=1"]) is None


def test_mx_patterns_match_whole_names_and_one_wildcard_label() -> None:
    policy = StsPolicy("example.com", "1", "enforce", ("mx.example.com", "*.example.net"),
                       86400, "", 0.0, 0.0)
    assert policy.allows("MX.example.com.")
    assert policy.allows("a.example.net")
    assert not policy.allows("a.b.example.net")
    assert not policy.allows("example.net")
    assert not policy.allows("mx2.example.com")


async def test_a_table_entry_is_marked_as_one() -> None:
    p = TlsPolicies(Config.from_text("smtp_tls_policy_maps = inline:{ a.test=may }\n"))
    got, default = await p.policy("a.test", True), await p.policy("b.test", True)
    assert got.site is True  # type: ignore[union-attr]
    assert default.site is False  # type: ignore[union-attr]
