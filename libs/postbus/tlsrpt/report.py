"""One domain's daily TLS-RPT report (RFC 8460 §4) and the mail that carries it (§5.3).

The report is JSON, gzipped; by mail it is the second part of a
``multipart/report; report-type="tlsrpt"`` message whose subject says
``Report Domain: D Submitter: S Report-ID: <ID>``, with the
``TLS-Report-Domain`` and ``TLS-Report-Submitter`` headers, and a file name
``submitter!domain!begin!end!id.json.gz``. The ``_smtp._tls`` TXT record
(``v=TLSRPTv1; rua=mailto:...,https://...``) says where it goes.
"""

from __future__ import annotations

import calendar
import gzip
import json
import re
import secrets
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, make_msgid
from typing import Any

from postbus.tlsrpt.store import DayEntry


@dataclass(frozen=True)
class Reporter:
    """Who reports: postbus_tlsrpt_reporting_org, _submitter and _contact."""

    org: str
    submitter: str
    contact: str


def parse_rua(records: list[str]) -> list[str]:
    """The ``rua`` URIs of the one ``v=TLSRPTv1`` record ([] when none, or several)."""
    found = [r for r in records if re.match(r"v=TLSRPTv1\s*(;|$)", r)]
    if len(found) != 1:
        return []
    for part in found[0].split(";")[1:]:
        name, eq, value = part.strip().partition("=")
        if eq and name.strip().lower() == "rua":
            return [u.strip() for u in value.split(",")
                    if u.strip().lower().startswith(("mailto:", "https:"))]
    return []


def day_range(day: str) -> tuple[int, int]:
    """The first and the last second of a UTC day, as epoch seconds."""
    start = calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    return start, start + 86399


def build(reporter: Reporter, day: str, entries: list[DayEntry]) -> dict[str, Any]:
    """The report JSON of one policy domain's ``entries`` of ``day``."""
    start, end = day_range(day)
    stamp = "%Y-%m-%dT%H:%M:%SZ"
    domain = entries[0].domain
    return {
        "organization-name": reporter.org,
        "date-range": {"start-datetime": time.strftime(stamp, time.gmtime(start)),
                       "end-datetime": time.strftime(stamp, time.gmtime(end))},
        "contact-info": reporter.contact,
        "report-id": f"{day}T00:00:00Z_{domain}_{secrets.token_hex(6)}@{reporter.submitter}",
        "policies": [entry.json() for entry in entries],
    }


def gzipped(report: dict[str, Any]) -> bytes:
    return gzip.compress(json.dumps(report, indent=1).encode(), mtime=0)


def mail(reporter: Reporter, report: dict[str, Any], rcpts: list[str]) -> bytes:
    """The report message (CRLF lines), ready for the queue."""
    domain = report["policies"][0]["policy"]["policy-domain"]
    start, end = (calendar.timegm(time.strptime(report["date-range"][k], "%Y-%m-%dT%H:%M:%SZ"))
                  for k in ("start-datetime", "end-datetime"))
    msg = EmailMessage(policy=SMTP)
    msg["From"] = reporter.contact
    msg["To"] = ", ".join(rcpts)
    msg["Date"] = formatdate(usegmt=True)
    msg["Message-ID"] = make_msgid(domain=reporter.submitter)
    msg["Subject"] = (f"Report Domain: {domain} Submitter: {reporter.submitter} "
                      f"Report-ID: <{report['report-id']}>")
    msg["TLS-Report-Domain"] = domain
    msg["TLS-Report-Submitter"] = reporter.submitter
    msg.set_content(f"This is an aggregate TLS report from {reporter.submitter} for {domain}.\n")
    msg.add_attachment(gzipped(report), maintype="application", subtype="tlsrpt+gzip",
                       filename=f"{reporter.submitter}!{domain}!{start}!{end}.json.gz")
    msg.set_type("multipart/report")
    msg.set_param("report-type", "tlsrpt")
    return msg.as_bytes()
