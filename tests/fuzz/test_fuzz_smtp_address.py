"""Fuzzing postbus.smtp.address: MAIL/RCPT arguments, paths, quoting, xtext.

For any text, the parsers either answer (a str, a MailArgs/RcptArgs) or
raise ValueError (ReplyError for MAIL/RCPT, with a reply), in bounded time.
Where a round trip holds it is checked: an address that was accepted reads
back the same from its quoted form; xtext encodes back to its value.
"""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from postbus.smtp import xtext
from postbus.smtp.address import (
    ReplyError,
    parse_address,
    parse_mail,
    parse_rcpt,
    quote_local,
    split_args,
)
from postbus.smtp.replies import MULTIPLE_AUTH
from tests.fuzz.strategies import bounded, domains, long_mailish, mailish

_PARAMS = ["SIZE=", "SIZE=10", "BODY=8BITMIME", "SMTPUTF8", "RET=FULL", "ENVID=", "AUTH=<>",
           "NOTIFY=", "NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;", "X=", ""]
params = st.lists(st.one_of(st.sampled_from(_PARAMS), mailish,
                            st.tuples(st.sampled_from(_PARAMS), mailish).map("".join)),
                  max_size=4)


@given(mailish)
def test_parse_address_answers_or_refuses(token: str) -> None:
    try:
        address = bounded(parse_address, token)
    except ValueError:
        return
    assert isinstance(address, str)
    # An accepted address reads back the same from its external (quoted) form,
    # unless an "@" came from inside quotes, an escape or a bracketed literal: the
    # internal form is then ambiguous, as in Postfix (see resolve_dequoted_address).
    hidden_at = "@" in address and ('"' in token or "\\" in token or "[" in token)
    if not hidden_at:
        assert parse_address(f"<{quote_local(address)}>") == address


@given(st.sampled_from(["FROM:", "from:", "FROM: ", ""]), mailish, params)
def test_parse_mail_answers_or_replies(keyword: str, path: str, extra: list[str]) -> None:
    arg = " ".join([keyword + path, *extra])
    try:
        mail = bounded(parse_mail, arg)
    except ReplyError as exc:
        assert exc.reply[:3] in {"501", "555", "552"} or exc.reply == MULTIPLE_AUTH, exc.reply
        return
    assert isinstance(mail.sender, str)
    assert mail.size is None or mail.size >= 0


@given(st.sampled_from(["TO:", "to:", "TO: ", ""]), mailish, params)
def test_parse_rcpt_answers_or_replies(keyword: str, path: str, extra: list[str]) -> None:
    arg = " ".join([keyword + path, *extra])
    try:
        rcpt = bounded(parse_rcpt, arg)
    except ReplyError as exc:
        assert exc.reply[:3] in {"501", "555"}, exc.reply
        return
    assert isinstance(rcpt.address, str) and rcpt.address


@given(st.sampled_from(["FROM:", "TO:"]), long_mailish)
def test_long_arguments_take_bounded_time(keyword: str, text: str) -> None:
    for parse in (parse_mail, parse_rcpt, split_args, parse_address):
        with contextlib.suppress(ValueError):  # a refusal is fine, a slow answer is not
            bounded(parse, keyword + text if parse in (parse_mail, parse_rcpt) else text,
                    limit=0.5)


@given(mailish)
def test_split_args_is_stable(text: str) -> None:
    tokens = bounded(split_args, text)
    assert all(isinstance(t, str) and t for t in tokens)
    assert split_args(" ".join(tokens)) == tokens


@given(st.text(min_size=1, max_size=30).filter(lambda s: "@" not in s), domains)
def test_quoted_local_parts_read_back(local: str, domain: str) -> None:
    """Any non-empty local part survives quoting (``<`` and blanks other than SP and HT
    included: Postfix separates SMTP words only at those two)."""
    address = f"{local}@{domain}"
    assert bounded(parse_address, f"<{quote_local(address)}>") == address


@given(st.text(max_size=200))
def test_xtext_decode_is_total(text: str) -> None:
    assert isinstance(bounded(xtext.decode, text), str)


@given(st.text(st.characters(max_codepoint=255), min_size=1, max_size=15), domains)
def test_envid_and_orcpt_xtext_read_back(value: str, domain: str) -> None:
    mail = parse_mail(f"FROM:<a@{domain}> ENVID={xtext.encode(value)}")
    assert mail.envid == value
    rcpt = parse_rcpt(f"TO:<b@{domain}> ORCPT=rfc822;{xtext.encode(value)}")
    assert rcpt.orcpt == value
