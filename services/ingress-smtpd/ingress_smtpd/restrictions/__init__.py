"""smtpd access restrictions (≈ smtpd_check.c, split by job).

- :mod:`.state`: what a restriction sees of the session, the reply helpers;
- :mod:`.registry`: restrictions by name, lists and restriction classes compiled;
- :mod:`.actions`: the access(5) actions (table results and policy answers);
- :mod:`.builtin`: permit/reject, mynetworks, relay control, access tables;
- :mod:`.unlisted`: the recipient table check;
- :mod:`.dns_checks`: unknown names and domains, DNS block and allow lists;
- :mod:`.sasl`: permit_sasl_authenticated, the login mismatch checks, check_sasl_access;
- :mod:`.policy_client`: check_policy_service;
- :mod:`.stages`: the stages and their moment of evaluation (:class:`Policy`).

Restrictions Postfix has and Postbus does not yet (the ccert, SASL-map and
MX/NS/A checks, permit_mx_backup, reject_unverified_*) are refused at start
by name (:data:`.registry.REFUSED`).
"""

from __future__ import annotations

import socket
from typing import Any

from ingress_smtpd.restrictions.stages import Policy
from ingress_smtpd.restrictions.state import PERMIT, CheckMemory, CheckState

__all__ = ["PERMIT", "CheckMemory", "CheckState", "Policy", "session_state"]


def _server_endpoint(transport: Any) -> tuple[str, str]:
    """The address and port the client connected to (``unix`` for a socket file)."""
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    if isinstance(sockname, tuple) and len(sockname) >= 2:
        return str(sockname[0]), str(sockname[1])
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is not None and sock.family == socket.AF_UNIX:
        return "unix", ""
    return "", ""


def session_state(session: Any, recipient: str = "") -> CheckState:
    """The restrictions' view of an ingress session (duck-typed: the session module
    imports this one)."""
    conn = session.conn
    peer = getattr(conn, "peer", ("", 0))
    transport = getattr(conn, "transport", None)
    cached = getattr(session, "_server_endpoint", None)  # once per transport (STARTTLS)
    if cached is None or cached[0] is not transport:
        cached = session._server_endpoint = (transport, *_server_endpoint(transport))
    server_addr, server_port = cached[1], cached[2]
    mail = session.mail
    where = "BDAT" if session.where.startswith("BDAT") else session.where
    if not recipient and where in ("DATA", "BDAT", "END-OF-MESSAGE") and session.recipients:
        recipient = session.recipients[-1].address  # Postfix's state->recipient: the last
    return CheckState(
        session.client_name, session.client_addr, session.helo, session.sender, recipient,
        where=where, protocol=session.protocol,
        client_port=str(peer[1]) if peer and peer[1] else "",
        server_addr=server_addr, server_port=server_port,
        rcpt_count=len(session.recipients),
        size=(mail.size or 0) if mail is not None else 0,
        tls=session.tls,
        sasl_method=session.auth.method or "",
        sasl_username=session.auth.username or "",
        sasl_sender=(mail.auth or "") if mail is not None else "",
        memory=session.check_memory,
        long_queue_ids=session.s.long_queue_ids,
        in_mail=session.sender is not None,
        listener=getattr(session.server, "listener", "smtp"),
        reverse_name=getattr(session, "reverse_name", "") or "",
        ill_pipelining=bool(getattr(session, "pipelining_logged", False)),
    )
