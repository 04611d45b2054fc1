"""Small parts of the smtpd restrictions, table-driven against Postfix's source:
smtpd_dsn_fix(), dsn_split(), rbl_match_addr() reply filters, the rbl reply
template, and the policy request a TLS session makes."""

from __future__ import annotations

import pytest

from ingress_smtpd.restrictions.actions import dsn_fix, dsn_split
from ingress_smtpd.restrictions.dns_checks import _code_matches, _reversed, expand_rbl_reply
from ingress_smtpd.restrictions.policy_client import request_attributes
from ingress_smtpd.restrictions.state import CheckState, finish
from postbus.smtp import replies as r
from postbus.tls_session import TlsSession


@pytest.mark.parametrize(("dsn", "kind", "fixed"), [
    ("5.1.1", r.RECIPIENT, "5.1.1"),
    ("5.1.1", r.SENDER, "5.1.0"),  # a recipient DSN while rejecting a sender
    ("5.1.7", r.RECIPIENT, "5.1.3"),
    ("5.1.8", r.RECIPIENT, "5.1.2"),
    ("4.1.2", r.SENDER, "4.1.8"),
    ("5.1.9", r.RECIPIENT, "5.1.0"),  # unknown detail: the default mapping
    ("5.1.1", r.CLIENT, "5.0.0"),  # an address DSN for a non-address
    ("5.7.1", r.SENDER, "5.7.1"),
])
def test_dsn_fix(dsn: str, kind: str, fixed: str) -> None:
    assert dsn_fix(dsn, kind) == fixed


def test_dsn_split() -> None:
    assert dsn_split("5.1.1 gone away", "5.7.1") == ("5.1.1", "gone away")
    assert dsn_split("gone away", "5.7.1") == ("5.7.1", "gone away")
    assert dsn_split("6.1.1 no", "4.7.1") == ("4.7.1", "6.1.1 no")


def test_finish_makes_the_dsn_class_follow_the_code_and_keeps_bad_codes_out() -> None:
    state = CheckState("unknown", "127.0.0.1")
    assert finish(state, "450 5.1.1 <a@b>: Recipient address rejected: x") == \
        "450 4.1.1 <a@b>: Recipient address rejected: x"
    assert finish(state, "250 2.0.0 fine") == "450 4.7.1 Service unavailable"
    state.defer_if_reject = "450 4.7.1 <a@b>: Recipient address rejected: later"
    assert finish(state, "554 5.7.1 <a@b>: Recipient address rejected: no") == \
        "450 4.7.1 <a@b>: Recipient address rejected: later"


@pytest.mark.parametrize(("address", "codes", "match"), [
    ("127.0.0.2", "", True),
    ("127.0.0.2", "127.0.0.2", True),
    ("127.0.0.3", "127.0.0.2", False),
    ("127.0.0.4", "127.0.0.[2..5]", True),
    ("127.0.0.6", "127.0.0.[2..5]", False),
    ("127.0.0.9", "127.0.0.[2;9]", True),
])
def test_rbl_reply_filters(address: str, codes: str, match: bool) -> None:
    assert _code_matches(address, codes) is match


def test_rbl_query_names_and_reply_template() -> None:
    assert _reversed("192.0.2.1") == "1.2.0.192."
    assert _reversed("2001:db8::1").startswith("1.0.0.0.0.0.0.0.")
    template = ("$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
                "$rbl_domain${rbl_reason?; $rbl_reason}")  # Postfix's default_rbl_reply
    values = {"rbl_code": "554", "rbl_class": "Client host", "rbl_what": "192.0.2.1",
              "rbl_domain": "bl.test", "rbl_reason": ""}
    assert expand_rbl_reply(template, values) == \
        "554 Service unavailable; Client host [192.0.2.1] blocked using bl.test"
    values["rbl_reason"] = "see it"
    assert expand_rbl_reply(template, values).endswith("bl.test; see it")


def test_a_tls_session_in_the_policy_request() -> None:
    tls = TlsSession(protocol="TLSv1.3", cipher="TLS_AES_256_GCM_SHA384", usebits=256,
                     algbits=256, peer_present=True, peer_trusted=True, peer_cn="client one",
                     issuer_cn="Test CA+", fingerprint="AB:CD", pkey_fingerprint="EF:01")
    state = CheckState("unknown", "127.0.0.1", where="RCPT", tls=tls)
    attrs = request_attributes(state, "ctx", "")
    assert (attrs["ccert_subject"], attrs["ccert_issuer"]) == ("client+20one", "Test+20CA+2B")
    assert (attrs["ccert_fingerprint"], attrs["ccert_pubkey_fingerprint"]) == ("AB:CD", "EF:01")
    assert (attrs["encryption_protocol"], attrs["encryption_cipher"],
            attrs["encryption_keysize"]) == ("TLSv1.3", "TLS_AES_256_GCM_SHA384", "256")
    assert attrs["policy_context"] == "ctx"
    untrusted = CheckState("unknown", "127.0.0.1", tls=TlsSession(
        protocol="TLSv1.3", cipher="x", usebits=128, algbits=128, peer_present=True,
        peer_cn="someone", fingerprint="AB"))
    attrs = request_attributes(untrusted, "", "")
    assert (attrs["ccert_subject"], attrs["ccert_fingerprint"]) == ("", "AB")
