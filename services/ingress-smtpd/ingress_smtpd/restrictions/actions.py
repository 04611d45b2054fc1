"""The actions of access(5) (≈ smtpd_check.c's check_table_result()).

One interpreter for the right-hand side of an access table and for a
policy server's ``action=``: OK, REJECT, DEFER, DEFER_IF_PERMIT,
DEFER_IF_REJECT, ``4NN``/``5NN`` text, DUNNO, DISCARD, PREPEND, WARN, INFO,
an all-numeric value (OK), and a list of restrictions or restriction class
names.  Replies and log lines are Postfix's.  HOLD, FILTER, REDIRECT and
BCC apply to the whole message: they are remembered for the transaction
(:class:`CheckMemory`) and cleanup carries them to the queue entry (the
last FILTER and REDIRECT win; each BCC adds a recipient with NOTIFY=NEVER).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ingress_smtpd.restrictions.state import (
    PERMIT,
    CheckState,
    ServerError,
    log,
    reject_text,
    what,
    whatsup,
)
from postbus.config.conv import ConfigError, split_list
from postbus.queue.ids import new_queue_id
from postbus.smtp import replies as r

if TYPE_CHECKING:
    from ingress_smtpd.restrictions.stages import Policy

_DSN = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})$")
_HEADER = re.compile(r"[\x21-\x39\x3b-\x7e]+:")


def dsn_split(text: str, default: str) -> tuple[str, str]:
    """``5.1.1 User unknown`` -> (``5.1.1``, ``User unknown``) (≈ dsn_split())."""
    word, _, rest = text.partition(" ")
    if _DSN.match(word):
        return word, rest.lstrip()
    return default, text


#: smtpd_dsn_fix()'s table: mailbox detail -> (as a sender's, as a recipient's).
_DSN_MAP = {"1": ("4.1.0", "4.1.1"), "2": ("4.1.8", "4.1.2"), "3": ("4.1.7", "4.1.3"),
            "4": ("4.1.0", "4.1.4"), "5": ("4.1.0", "4.1.5"), "6": ("4.1.0", "4.1.6"),
            "7": ("4.1.7", "4.1.3"), "8": ("4.1.8", "4.1.2")}


def dsn_fix(dsn: str, reply_class: str) -> str:
    """smtpd_dsn_fix(): an address DSN (x.1.y) that names the wrong party is mapped to
    the party rejected, and to 4.0.0 for a non-address (the class follows the code)."""
    if dsn[1:4] != ".1.":
        return dsn
    sender, rcpt = _DSN_MAP.get(dsn[4:], ("4.1.0", "4.1.0"))
    result = sender if reply_class == r.SENDER else rcpt if reply_class == r.RECIPIENT \
        else "4.0.0"
    if dsn[2:] != result[2:]:
        log.info("mapping DSN status %s into %s status %s%s", dsn, reply_class, dsn[0],
                 result[1:])
    return dsn[0] + result[1:]


async def table_result(
    policy: Policy, state: CheckState, table: str, value: str, datum: str, kind: str
) -> str | None:
    """Apply one access(5) result ``value`` found in ``table`` for ``datum``,
    with ``kind`` (the reply class) as the party a reject names. Trailing white space
    stays, as in Postfix: tables trim their values, a policy server's action is taken
    as sent (policyd-spf's ``prepend Received-SPF: ... receiver=example.org `` keeps
    its last space in the header)."""
    state.reply_class = kind
    value = value.lstrip()
    word = re.split(r"[ \t]", value, maxsplit=1)[0]
    text = value[len(word):].lstrip(" \t")
    upper = word.upper()
    if upper == "DUNNO":
        return None
    if upper in ("REJECT", "DEFER"):
        dsn, msg = dsn_split(text, "5.7.1" if upper == "REJECT" else "4.7.1")
        code = policy.cfg.int("access_map_reject_code" if upper == "REJECT"
                              else "access_map_defer_code")
        return reject_text(state, code, dsn_fix(dsn, kind), msg or r.ACCESS_DENIED)
    if upper in ("INFO", "WARN"):
        whatsup(state, upper.lower(), text)
        return None
    if upper in ("HOLD", "FILTER", "REDIRECT", "BCC"):
        if _can_delegate(state, table, upper):
            _delegate(state, table, datum, upper, text, kind)
        return None
    if upper == "DISCARD":
        if not _can_delegate(state, table, upper):
            return None
        if not state.memory.discard:
            state.memory.discard = f"<{what(state)}>: {kind} " + (
                text or "triggers DISCARD action")
            whatsup(state, "discard", state.memory.discard)
        return PERMIT
    if upper in ("DEFER_IF_PERMIT", "DEFER_IF_REJECT"):
        dsn, msg = dsn_split(text, "4.7.1")
        reply = reject_text(state, policy.cfg.int("access_map_defer_code"), dsn_fix(dsn, kind),
                            msg or "Service unavailable")
        if upper == "DEFER_IF_PERMIT":
            defer_if_permit(state, reply)
        elif state.defer_if_reject is None:
            state.defer_if_reject = reply
        return None
    if upper == "PREPEND":
        if not _not_in_client_helo(state, table, upper):
            return None
        if state.where == "END-OF-MESSAGE":
            log.warning("access table %s: action PREPEND must be used before "
                        "smtpd_end_of_data_restrictions", table)
            return None
        if not _HEADER.match(text):
            log.warning('access table %s entry "%s" requires header: text', table, datum)
            return None
        state.memory.prepend.append(text)
        return None
    if value.isdigit():
        return PERMIT
    if len(word) == 3 and text and word[0] in "45" and word[1:].isdigit():
        dsn, msg = dsn_split(text, word[0] + ".7.1")
        return reject_text(state, int(word), dsn_fix(dsn, kind), msg or r.ACCESS_DENIED)
    if upper in ("OK", "RELAY"):
        return PERMIT
    if ":" in value:
        raise ServerError(f"access table {table} has entry with lookup table: {value}\n"
                          "do not specify lookup tables inside SMTPD access maps\n"
                          "define a restriction class and specify its name instead.")
    if state.recursion > 100:
        raise ServerError(f"access table {table} entry {value} causes unreasonable recursion")
    try:
        steps = policy.compile_rhs(split_list(value), table)
    except ConfigError as exc:
        raise ServerError(exc.reason) from None
    if not steps:
        log.warning("access table %s entry %s has empty value", table, value)
        return PERMIT
    state.recursion += 1
    try:
        return await policy.evaluate(steps, state)
    finally:
        state.recursion -= 1


def _delegate(state: CheckState, table: str, datum: str, action: str, text: str,
              kind: str) -> None:
    """HOLD, FILTER, REDIRECT, BCC: remember the action for the message and log it
    (≈ check_table_result()); the restrictions go on (DUNNO)."""
    memory = state.memory
    if state.rcpt_count and not state.queue_id:  # Postfix's queue file is open by now
        memory.queue_id = memory.queue_id or new_queue_id(state.long_queue_ids)
        state.queue_id = memory.queue_id
    if action == "HOLD":
        if not memory.hold:
            whatsup(state, "hold", f"<{what(state)}>: {kind} " + (
                text or "triggers HOLD action"))
            memory.hold = True
        return
    if action == "FILTER" and not text:
        log.warning('access table %s entry "%s" has FILTER entry without value', table, datum)
    elif action == "FILTER" and ":" not in text:
        log.warning('access table %s entry "%s" requires transport:destination', table, datum)
    elif action in ("REDIRECT", "BCC") and "@" not in text:
        log.warning('access table %s entry "%s" requires user@domain target', table, datum)
    else:
        whatsup(state, action.lower(), f"<{what(state)}>: {kind} triggers {action} {text}")
        if action == "FILTER":
            memory.filter = text
        elif action == "BCC":
            memory.bcc.append(text)
        else:
            memory.redirect = text


def _not_in_client_helo(state: CheckState, table: str, action: str) -> bool:
    """No transaction yet (smtpd_delay_reject = no): nothing to attach the action to."""
    if state.sender is None:
        log.warning("access table %s: with smtpd_delay_reject=no, action %s is always "
                    "skipped in %s or %s restrictions", table, action, r.CLIENT, r.HELO)
        return False
    return True


def _can_delegate(state: CheckState, table: str, action: str) -> bool:
    """can_delegate_action(): ETRN receives no mail."""
    if state.where == "ETRN":
        log.warning("access table %s: action %s is unavailable in smtpd_etrn_restrictions",
                    table, action)
        return False
    return _not_in_client_helo(state, table, action)


def defer_if_permit(state: CheckState, reply: str) -> None:
    """Raise the defer_if_permit flag (the first reason stays), or under
    warn_if_reject log what would have been deferred."""
    if state.warn_if_reject:
        whatsup(state, "reject_warning", reply)
    elif state.defer_if_permit is None:
        state.defer_if_permit = reply

