"""XFORWARD to a content filter (smtp_send_xforward_command; ≈ smtp_proto.c).

With ``smtp_send_xforward_command = yes`` (``lmtp_...`` for LMTP) and a
server whose EHLO offers XFORWARD, the original client of the message goes
before MAIL FROM in up to two commands, as Postfix's smtp client sends
them: ``XFORWARD NAME= ADDR= PORT=`` and ``XFORWARD PROTO= HELO= IDENT=
SOURCE=`` (SOURCE is smtp_proto.c's XFORWARD_DOMAIN: LOCAL or REMOTE, the
rewriting context), each attribute only when the server named it and the message
has it (a client name, address, port or protocol of ``unknown`` is not
sent; local submissions have no client at all, so only ``SOURCE=LOCAL``
goes). A reply other than 2xx is logged as a warning and the delivery goes
on, as in Postfix.
"""

from __future__ import annotations

from postbus.queue.entry import DeliveryJob
from postbus.smtp import xtext

#: Queue entries of mail that did not come in over SMTP (Postfix's pickup, bounce,
#: local(8) forwarding): no client attributes, and no log ident.
LOCAL_ORIGINS = frozenset({"sendmail", "bounce", "local", ""})

REQUESTS = ("XFORWARD name/address command", "XFORWARD helo/protocol command")
STATES = ("sending XFORWARD name/address", "sending XFORWARD protocol/helo_name")


def _known(value: str) -> bool:
    return bool(value) and value.lower() != "unknown"


def commands(offered: str, job: DeliveryJob) -> list[tuple[int, bytes]]:
    """The XFORWARD commands for ``job`` when the server's EHLO line offers ``offered``
    (its attribute names), each with its index in REQUESTS and STATES; empty when
    nothing is to be sent."""
    names = {word.upper() for word in offered.split()}
    local = job.protocol in LOCAL_ORIGINS
    addr = job.client_addr
    if ":" in addr and not addr.lower().startswith("ipv6:"):
        addr = "IPv6:" + addr  # Postfix forwards the address as smtpd's rfc_addr
    first = [] if local else [
        ("NAME", job.client_name, _known(job.client_name)),
        ("ADDR", addr, _known(job.client_addr)),
        ("PORT", job.client_port, _known(job.client_port)),
    ]
    second = [
        ("PROTO", job.protocol, not local and _known(job.protocol)),
        ("HELO", job.helo, not local and bool(job.helo)),
        ("IDENT", job.log_ident, not local and bool(job.log_ident)),
        ("SOURCE", "REMOTE" if job.rewrite_context == "remote" else "LOCAL", True),
    ]
    out = []
    for index, group in enumerate((first, second)):
        words = [f"{name}={xtext.encode(value)}" for name, value, ok in group
                 if ok and name in names]
        if words:
            out.append((index, ("XFORWARD " + " ".join(words) + "\r\n").encode()))
    return out
