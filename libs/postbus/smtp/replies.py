"""Every SMTP server reply Postbus sends, verbatim as Postfix 3.7 sends it.

Recorded from a real Postfix 3.7.11 smtpd (``tests/integration/
test_smtpd_vs_postfix.py`` replays the dialogues against both servers), so
clients, log parsers and monitoring that know Postfix see the same text.
Note the irregularities that are Postfix's, kept on purpose: the EHLO/HELO
and ETRN syntax replies carry no enhanced status code, ``VRFY`` answers
``252`` after the recipient checks, ``DATA`` before any ``MAIL`` says "need
RCPT command" but inside a transaction "no valid recipients".

Templates use ``str.format`` fields; ``{host}`` is ``$myhostname``.
"""

from __future__ import annotations

from typing import Final

# -- session ----------------------------------------------------------------------
BANNER: Final = "220 {banner}"
HELO_OK: Final = "250 {host}"
BYE: Final = "221 2.0.0 Bye"
TOO_MANY_ERRORS: Final = "421 4.7.0 {host} Error: too many errors"
TIMEOUT: Final = "421 4.4.2 {host} Error: timeout exceeded"

LOCAL_DATA_ERROR: Final = "421 4.3.0 {host} Server local data error"
LOCAL_ERROR: Final = "421 4.3.0 {host} Server local error"  # no valid PROXY header

#: EHLO keywords in Postfix's order; SIZE takes message_size_limit (0: no number).
EHLO_KEYWORDS: Final = (
    "PIPELINING", "SIZE", "VRFY", "ETRN", "STARTTLS", "ENHANCEDSTATUSCODES", "8BITMIME", "DSN",
    "SMTPUTF8", "CHUNKING",
)
#: smtpd_discard_ehlo_keywords names, in the order Postfix logs them (ehlo_mask.c's
#: table: SMTPUTF8 is logged by its first name there, EHLO_MASK_SMTPUTF8).
DISCARD_NAMES: Final = (
    "8BITMIME", "AUTH", "ETRN", "PIPELINING", "SIZE", "VERP", "VRFY", "XCLIENT", "XFORWARD",
    "STARTTLS", "ENHANCEDSTATUSCODES", "DSN", "SMTPUTF8", "CHUNKING", "SILENT-DISCARD",
)

# -- command syntax and sequence --------------------------------------------------
UNRECOGNIZED: Final = "500 5.5.2 Error: command not recognized"
BAD_SYNTAX: Final = "500 5.5.2 Error: bad syntax"
BAD_UTF8: Final = "500 5.5.2 Error: bad UTF-8 syntax"
NOT_IMPLEMENTED: Final = "502 5.5.1 Error: command not implemented"
AUTH_NOT_ENABLED: Final = "503 5.5.1 Error: authentication not enabled"
# SMTP AUTH (smtpd_sasl_proto.c, smtpd_sasl_glue.c)
AUTH_IN_TRANSACTION: Final = "503 5.5.1 Error: MAIL transaction in progress"
AUTH_NEED_TLS: Final = "504 5.5.4 Encryption required for requested authentication mechanism"
AUTH_ALREADY: Final = "503 5.5.1 Error: already authenticated"
AUTH_SYNTAX: Final = "501 5.5.4 Syntax: AUTH mechanism"
AUTH_ABORTED: Final = "501 5.7.0 Authentication aborted"
AUTH_RESPONSE_LIMIT: Final = "500 5.5.6 SASL response limit exceeded"
AUTH_OK: Final = "235 2.7.0 Authentication successful"
AUTH_FAILED: Final = "535 5.7.8 Error: authentication failed: {reason}"
AUTH_TEMP_FAILED: Final = "454 4.7.0 Temporary authentication failure: {reason}"
MULTIPLE_AUTH: Final = "503 5.5.4 Error: multiple AUTH= options"
LOGIN_NOT_OWNER: Final = "553 5.7.1 <{sender}>: Sender address rejected: not owned by user {user}"
LOGIN_NOT_LOGGED_IN: Final = "553 5.7.1 <{sender}>: Sender address rejected: not logged in"
EHLO_SYNTAX: Final = "501 Syntax: EHLO hostname"
HELO_SYNTAX: Final = "501 Syntax: HELO hostname"
NEED_HELO: Final = "503 5.5.1 Error: send HELO/EHLO first"
NEED_MAIL: Final = "503 5.5.1 Error: need MAIL command"
NEED_RCPT: Final = "503 5.5.1 Error: need RCPT command"
NESTED_MAIL: Final = "503 5.5.1 Error: nested MAIL command"
NO_VALID_RECIPIENTS: Final = "554 5.5.1 Error: no valid recipients"
MAIL_SYNTAX: Final = "501 5.5.4 Syntax: MAIL FROM:<address>"
RCPT_SYNTAX: Final = "501 5.5.4 Syntax: RCPT TO:<address>"
DATA_SYNTAX: Final = "501 5.5.4 Syntax: DATA"
RSET_SYNTAX: Final = "501 5.5.4 Syntax: RSET"
VRFY_SYNTAX: Final = "501 5.5.4 Syntax: VRFY address [SMTPUTF8]"
VRFY_DISABLED: Final = "502 5.5.1 VRFY command is disabled"
ETRN_SYNTAX: Final = "500 Syntax: ETRN domain"
ETRN_NEED_HELO: Final = "503 Error: send HELO/EHLO first"
ETRN_IN_TRANSACTION: Final = "503 Error: MAIL transaction in progress"
ETRN_UNAVAILABLE: Final = "459 <{domain}>: service unavailable"
ETRN_BAD_DOMAIN: Final = "501 Error: invalid parameter syntax"
ETRN_UNABLE: Final = "458 Unable to queue messages"
ETRN_OK: Final = "250 Queuing started"

# -- STARTTLS and TLS -----------------------------------------------------------------
STARTTLS_READY: Final = "220 2.0.0 Ready to start TLS"
STARTTLS_SYNTAX: Final = "501 5.5.4 Syntax: STARTTLS"
TLS_ALREADY_ACTIVE: Final = "554 5.5.1 Error: TLS already active"
TLS_NOT_AVAILABLE: Final = "454 4.7.0 TLS not available due to local problem"
MUST_STARTTLS: Final = "530 5.7.0 Must issue a STARTTLS command first"
CCERT_REFUSED: Final = "421 4.7.1 {host} Error: {why}"
NO_CCERT: Final = "No client certificate presented"
CCERT_UNTRUSTED: Final = "Client certificate not trusted"

# -- BDAT (RFC 3030 CHUNKING) -------------------------------------------------------
BDAT_SYNTAX: Final = "521 5.5.4 Syntax: BDAT count [LAST]"
BDAT_DISABLED: Final = "521 5.5.1 Error: command not implemented"
BDAT_NULL: Final = "551 5.7.1 Null BDAT request"
BDAT_DISCARDED: Final = "551 5.0.0 Discarded {size} bytes after earlier error"
BDAT_CHUNK_TOO_BIG: Final = "552 5.3.4 Chunk exceeds message size limit"
BDAT_OK: Final = "250 2.0.0 Ok: {size} bytes"
BDAT_QUEUED: Final = "250 2.0.0 Ok: {size} bytes queued as {queue_id}"
DATA_AFTER_BDAT: Final = "503 5.5.1 Error: DATA after BDAT"
MAIL_AFTER_BDAT: Final = "503 5.5.1 Error: MAIL after BDAT"
RCPT_AFTER_BDAT: Final = "503 5.5.1 Error: RCPT after BDAT"

# -- MAIL / RCPT parameters and addresses -------------------------------------------
BAD_SENDER_SYNTAX: Final = "501 5.1.7 Bad sender address syntax"
BAD_RECIPIENT_SYNTAX: Final = "501 5.1.3 Bad recipient address syntax"
UNSUPPORTED_OPTION: Final = "555 5.5.4 Unsupported option: {option}"
BAD_SIZE: Final = "501 5.5.4 Bad message size syntax"
BAD_RET: Final = "501 5.5.4 Bad RET parameter syntax"
BAD_ENVID: Final = "501 5.5.4 Bad ENVID parameter syntax"
BAD_NOTIFY: Final = "501 5.5.4 Error: Bad NOTIFY parameter syntax"
BAD_ORCPT: Final = "501 5.5.4 Error: Bad ORCPT parameter syntax"
SIZE_EXCEEDS_LIMIT: Final = "552 5.3.4 Message size exceeds fixed limit"
SIZE_EXCEEDS_FS_LIMIT: Final = "552 5.3.4 Message size exceeds file system imposed limit"
TOO_MANY_RECIPIENTS: Final = "452 4.5.3 Error: too many recipients"
DSN_DISABLED: Final = "501 5.7.1 DSN support is disabled"

# -- success ------------------------------------------------------------------------
OK: Final = "250 2.0.0 Ok"
MAIL_OK: Final = "250 2.1.0 Ok"
RCPT_OK: Final = "250 2.1.5 Ok"
VRFY_OK: Final = "252 2.0.0 {address}"
DATA_GO_AHEAD: Final = "354 End data with <CR><LF>.<CR><LF>"
QUEUED: Final = "250 2.0.0 Ok: queued as {queue_id}"

# -- end of DATA ----------------------------------------------------------------------
MESSAGE_TOO_BIG: Final = "552 5.3.4 Error: message file too big"
QUEUE_WRITE_ERROR: Final = "451 4.3.0 Error: queue file write error"

# -- restrictions (smtpd_check.c) -------------------------------------------------------
#: ``{code} {dsn} <{what}>: {kind} rejected: {text}``; kind is one of the next four.
ACCESS_REJECT: Final = "{code} {dsn} <{what}>: {kind} rejected: {text}"
CLIENT: Final = "Client host"
HELO: Final = "Helo command"
ETRN: Final = "Etrn command"
SENDER: Final = "Sender address"
RECIPIENT: Final = "Recipient address"
ACCESS_DENIED: Final = "Access denied"
#: reject_unauth_destination (relay_domains_reject_code 554) / defer_unauth_destination (454).
RELAY_DENIED: Final = "{code} {dsn} <{address}>: Relay access denied"
USER_UNKNOWN: Final = (
    "{code} 5.1.1 <{address}>: Recipient address rejected: User unknown in {table}"
)
LOCAL_RECIPIENT_TABLE: Final = "local recipient table"
VIRTUAL_ALIAS_TABLE: Final = "virtual alias table"
VIRTUAL_MAILBOX_TABLE: Final = "virtual mailbox table"
RELAY_RECIPIENT_TABLE: Final = "relay recipient table"
TEMPORARY_LOOKUP_FAILURE: Final = "451 4.3.0 <{what}>: Temporary lookup failure"
SERVER_CONFIGURATION_ERROR: Final = "451 4.3.5 Server configuration error"
#: Every command but QUIT after the client was rejected at connect (smtpd_delay_reject = no).
ACCESS_DENIED_503: Final = "503 5.7.0 Error: access denied for {namaddr}"


def ehlo_lines(
    host: str, size_limit: int, *, vrfy: bool = True, discard: frozenset[str] = frozenset(),
    starttls: bool = False, smtputf8: bool = True, auth: tuple[str, ...] = (),
) -> list[str]:
    """The EHLO response lines, without the ``250-``/``250 `` prefixes (≈ ehlo_cmd()):
    STARTTLS only where TLS is offered and not yet on, SMTPUTF8 with smtputf8_enable."""
    lines = [host]
    for keyword in EHLO_KEYWORDS:
        if keyword == "ENHANCEDSTATUSCODES":  # after STARTTLS: "AUTH mechs" (and "AUTH=mechs")
            lines.extend(auth)
        if keyword in discard or (keyword == "VRFY" and not vrfy) or (
            keyword == "STARTTLS" and not starttls
        ) or (keyword == "SMTPUTF8" and not smtputf8):
            continue
        if keyword == "SIZE":
            lines.append(f"SIZE {size_limit}" if size_limit else "SIZE")
        else:
            lines.append(keyword)
    return lines


def discard_mask(value: str) -> frozenset[str]:
    """smtpd_discard_ehlo_keywords as upper-case names (≈ ehlo_mask(): any case, any of
    ``, \t\r\n`` between, unknown words ignored)."""
    known = set(DISCARD_NAMES) | {"EHLO_MASK_SMTPUTF8"}
    words = {w.upper() for w in value.replace(",", " ").split()}
    words = {"SMTPUTF8" if w == "EHLO_MASK_SMTPUTF8" else w for w in words & known}
    return frozenset(words)


def discard_text(mask: frozenset[str]) -> str:
    """The names of ``discarding EHLO keywords: ...`` (str_ehlo_mask())."""
    return " ".join("EHLO_MASK_SMTPUTF8" if n == "SMTPUTF8" else n
                    for n in DISCARD_NAMES if n in mask)


def multiline(code: int, lines: list[str]) -> str:
    """``250-a\\r\\n250 b`` (without the final CRLF)."""
    last = len(lines) - 1
    return "\r\n".join(f"{code}{' ' if i == last else '-'}{line}" for i, line in enumerate(lines))
