"""TLS-RPT records and report JSON (RFC 8460 §3, §4)."""

from __future__ import annotations

from postbus.tlsrpt.report import Reporter, build, day_range, parse_rua
from postbus.tlsrpt.store import DayEntry, PolicyInfo


def test_rua_comes_from_the_one_tlsrpt_record() -> None:
    assert parse_rua(["v=TLSRPTv1; rua=mailto:a@example.com,https://r.example.com/x"]) == [
        "mailto:a@example.com", "https://r.example.com/x"]
    assert parse_rua(["v=spf1 -all", "v=TLSRPTv1;rua=mailto:b@example.com"]) == [
        "mailto:b@example.com"]
    assert parse_rua(["v=TLSRPTv1; rua=mailto:a@x", "v=TLSRPTv1; rua=mailto:b@x"]) == []
    assert parse_rua(["v=TLSRPTv1; rua=ftp://x/y"]) == []
    assert parse_rua(["v=TLSRPTv10; rua=mailto:a@x"]) == []


def test_a_report_names_the_day_and_every_policy() -> None:
    info = PolicyInfo("example.com", "sts", "7", "version: STSv1\r\nmode: testing\r\n",
                      ("mx.example.com",))
    entry = DayEntry("example.com", info.json(), 5, [
        {"result-type": "certificate-expired", "failed-session-count": 2}])
    report = build(Reporter("Example Org", "mail.example.org", "tls@example.org"),
                   "2026-11-29", [entry])
    assert day_range("2026-11-29") == (1795910400, 1795996799)
    assert report["date-range"] == {"start-datetime": "2026-11-29T00:00:00Z",
                                    "end-datetime": "2026-11-29T23:59:59Z"}
    assert report["organization-name"] == "Example Org"
    assert report["contact-info"] == "tls@example.org"
    assert report["report-id"].startswith("2026-11-29T00:00:00Z_example.com_")
    assert report["report-id"].endswith("@mail.example.org")
    assert report["policies"] == [{
        "policy": {"policy-type": "sts", "policy-domain": "example.com",
                   "policy-string": ["version: STSv1", "mode: testing"],
                   "mx-host": ["mx.example.com"]},
        "summary": {"total-successful-session-count": 5, "total-failure-session-count": 2},
        "failure-details": [{"result-type": "certificate-expired", "failed-session-count": 2}],
    }]
