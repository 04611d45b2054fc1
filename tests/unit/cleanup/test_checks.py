"""header_checks, mime_header_checks, nested_header_checks and body_checks
(≈ cleanup_message.c's cleanup_act()): every action of header_checks(5), one
table-driven case each, with the content written and the log line Postfix writes."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from postbus.cleanup import mime
from postbus.cleanup.checks import ContentChecks, Origin, Verdict
from postbus.config.loader import Config

ORIGIN = "from mx.client.test[192.0.2.7]; from=<a@client.test> to=<b@postbus.test> " \
         "proto=ESMTP helo=<client.test>"
MSG = (b"Received: from x\r\nSubject: hello\r\nX-Tag: one\r\n\ttwo\r\nFrom: a@client.test\r\n"
       b"\r\nfirst line\r\nsecond line\r\n")


@dataclass
class Case:
    name: str
    header: str  # one header_checks rule (regexp)
    content: bytes | None  # what is written, None: unchanged
    verdict: Verdict
    logged: list[str] = field(default_factory=list)
    body: str = ""  # one body_checks rule


def _log(action: str, what: str, text: str = "") -> str:
    return f"QID1: {action}: {what} {ORIGIN}" + (f": {text}" if text else "")


CASES = [
    Case("reject", "/^Subject: hello/ REJECT go away", None,
         Verdict(reason="5.7.1 go away"), [_log("reject", "header Subject: hello",
                                                "5.7.1 go away")]),
    Case("reject-default", "/^Subject:/ REJECT", None,
         Verdict(reason="5.7.1 message content rejected"),
         [_log("reject", "header Subject: hello", "5.7.1 message content rejected")]),
    Case("reject-own-dsn", "/^Subject:/ REJECT 5.7.9 mine", None,
         Verdict(reason="5.7.9 mine"), [_log("reject", "header Subject: hello", "5.7.9 mine")]),
    Case("reject-4xx", "/^Subject:/ REJECT 4.7.0 later", None,
         Verdict(reason="4.7.0 later", defer=True),
         [_log("reject", "header Subject: hello", "4.7.0 later")]),
    Case("discard", "/^Subject:/ DISCARD bye", None, Verdict(discard=True),
         [_log("discard", "header Subject: hello", "bye")]),
    Case("hold", "/^Subject:/ HOLD look", None, Verdict(hold=True),
         [_log("hold", "header Subject: hello", "look")]),
    Case("ignore-folded", "/^X-Tag: one[[:space:]]+two$/ IGNORE",
         b"Received: from x\r\nSubject: hello\r\nFrom: a@client.test\r\n\r\n"
         b"first line\r\nsecond line\r\n", Verdict()),
    Case("replace", "/^Subject: (.*)/ REPLACE Subject: [x] $1",
         MSG.replace(b"Subject: hello", b"Subject: [x] hello"), Verdict(),
         [_log("replace", "header Subject: hello", "Subject: [x] hello")]),
    Case("prepend", "/^Subject:/ PREPEND X-Seen: yes",
         MSG.replace(b"Subject: hello", b"X-Seen: yes\r\nSubject: hello"), Verdict(),
         [_log("prepend", "header Subject: hello", "X-Seen: yes")]),
    Case("warn", "/^Subject:/ WARN look", None, Verdict(),
         [_log("warning", "header Subject: hello", "look")]),
    Case("info", "/^Subject:/ INFO fyi", None, Verdict(),
         [_log("info", "header Subject: hello", "fyi")]),
    Case("redirect", "/^Subject:/ REDIRECT c@postbus.test", None,
         Verdict(redirect="c@postbus.test"),
         [_log("redirect", "header Subject: hello", "c@postbus.test")]),
    Case("bcc", "/^Subject:/ BCC d@postbus.test", None, Verdict(bcc=["d@postbus.test"]),
         [_log("bcc", "header Subject: hello", "d@postbus.test")]),
    Case("dunno", "/^Subject:/ DUNNO", None, Verdict()),
    Case("ok", "/^Subject:/ OK", None, Verdict()),
    Case("case-insensitive", "/^subject: HELLO/ REJECT", None,
         Verdict(reason="5.7.1 message content rejected"),
         [_log("reject", "header Subject: hello", "5.7.1 message content rejected")]),
    Case("sees-received", "/^Received: from x/ WARN ours", None, Verdict(),
         [_log("warning", "header Received: from x", "ours")]),
    Case("body-reject", "", None, Verdict(reason="5.7.1 no body"),
         [_log("reject", "body second line", "5.7.1 no body")],
         body="/^second/ REJECT no body"),
    Case("body-ignore", "", MSG.replace(b"first line\r\n", b""), Verdict(),
         body="/^first line$/ IGNORE"),
    Case("body-replace", "", MSG.replace(b"first line", b"1st"), Verdict(),
         [_log("replace", "body first line", "1st")], body="/^first line$/ REPLACE 1st"),
    # maps_find() never looks up an empty key: an empty body line matches nothing
    Case("body-empty-line", "", None, Verdict(), [], body="/^$/ WARN empty"),
]


def _checks(tmp_path: Path, header: str, body: str = "", extra: str = "") -> ContentChecks:
    main = extra
    if header:
        (tmp_path / "hc").write_text(header + "\n")
        main += f"header_checks = regexp:{tmp_path}/hc\n"
    if body:
        (tmp_path / "bc").write_text(body + "\n")
        main += f"body_checks = regexp:{tmp_path}/bc\n"
    return ContentChecks(Config.from_text(main, ""))


def _run(checks: ContentChecks, content: bytes) -> tuple[bytes | None, Verdict]:
    insp = checks.begin(Origin("QID1", "mx.client.test[192.0.2.7]", "a@client.test",
                               "b@postbus.test", "ESMTP", "client.test"))
    out = asyncio.run(mime.inspect(insp, content))
    return (None if out is None else out[1]), insp.finish()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_action(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "postbus.cleanup")
    content, verdict = _run(_checks(tmp_path, case.header, case.body), MSG)
    assert content == case.content
    assert verdict == case.verdict
    assert [r.getMessage() for r in caplog.records if r.name == "postbus.cleanup"] == case.logged


def test_received_header_is_checked_and_returned_apart(tmp_path: Path) -> None:
    checks = _checks(tmp_path, "/^Received: from x/ REPLACE Received: from y")
    insp = checks.begin(Origin())
    out = asyncio.run(mime.inspect(insp, MSG, top=len(b"Received: from x\r\n")))
    assert out == (b"Received: from y\r\n", MSG[len(b"Received: from x\r\n"):])


def test_bad_actions_warn_and_keep(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rules = ("/^Subject:/ PREPEND not a header\n/^From:/ REPLACE\n"
             "/^X-Tag:/ BOGUS thing\n/^Received:/ REDIRECT nobody")
    content, verdict = _run(_checks(tmp_path, rules), MSG)
    assert (content, verdict) == (None, Verdict())
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        'bad REDIRECT target "nobody" in header_checks map -- need user@domain',
        'bad PREPEND header text "not a header" in header_checks map -- '
        'need "headername: headervalue"',
        "unknown command in header_checks map: BOGUS thing",
        "REPLACE action without text in header_checks map",
    ]


def test_broken_table_line_is_skipped(tmp_path: Path,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """A rule that does not compile is skipped with a warning; the others apply."""
    _content, verdict = _run(_checks(tmp_path, "/broken(/ REJECT x\n/^Subject:/ REJECT ok"),
                            MSG)
    assert verdict.reason == "5.7.1 ok"
    assert any("line 1" in r.getMessage() and r.levelno == logging.WARNING
               for r in caplog.records)


def test_filter_last_one_wins_and_needs_a_transport(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """FILTER (≈ cleanup_act()): the last transport:destination found is the message's
    content filter; one without a colon, or without text, is only a warning."""
    caplog.set_level(logging.INFO, "postbus.cleanup")
    _content, verdict = _run(_checks(
        tmp_path, "/^Received:/ FILTER smtp:[127.0.0.1]:10025\n/^Subject:/ FILTER scan:\n"
        "/^From:/ FILTER nocolon\n/^X-Tag:/ FILTER"), MSG)
    assert verdict.filter == "scan:" and not verdict.rejected
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        _log("filter", "header Received: from x", "smtp:[127.0.0.1]:10025"),
        _log("filter", "header Subject: hello", "scan:"),
        "missing FILTER command argument in header_checks map",
        "bad FILTER command nocolon in header_checks -- need transport:destination"]


MIME = (b"Subject: parts\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"B1\"\r\n\r\npreamble\r\n"
        b"--B1\r\nContent-Type: text/plain\r\nX-Part: one\r\n\r\npart body\r\n"
        b"--B1\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: inner\r\nX-Inner: yes\r\n\r\ninner body\r\n--B1--\r\nepilogue\r\n")


@pytest.mark.parametrize(("main", "rule", "hit"), [
    ("", "/^X-Part:/ WARN", "header X-Part: one"),  # mime_header_checks = $header_checks
    ("", "/^Subject: inner/ WARN", "header Subject: inner"),  # nested = $header_checks
    ("mime_header_checks =\n", "/^X-Part:/ WARN", None),
    ("nested_header_checks =\n", "/^X-Inner:/ WARN", None),
    ("disable_mime_input_processing = yes\n", "/^X-Part:/ WARN", None),
])
def test_mime_classes(tmp_path: Path, caplog: pytest.LogCaptureFixture, main: str, rule: str,
                      hit: str | None) -> None:
    caplog.set_level(logging.INFO, "postbus.cleanup")
    _run(_checks(tmp_path, rule, extra=main), MIME)
    found = [r.getMessage() for r in caplog.records if r.name == "postbus.cleanup"]
    assert found == ([f"QID1: warning: {hit} {ORIGIN}"] if hit else [])


def test_body_checks_skip_part_headers_and_respect_size_limit(tmp_path: Path) -> None:
    # part headers are headers, not body lines
    assert _run(_checks(tmp_path, "", "/^X-Part/ REJECT"), MIME)[1] == Verdict()
    assert _run(_checks(tmp_path, "", "/^inner body/ REJECT"), MIME)[1].reason
    # body_checks_size_limit counts from the start of each part's body
    big = b"Subject: x\r\n\r\n" + b"filler\r\n" * 100 + b"needle\r\n"
    limit = "body_checks_size_limit = 500\n"
    assert _run(_checks(tmp_path, "", "/^needle/ REJECT", limit), big)[1] == Verdict()
    assert _run(_checks(tmp_path, "", "/^needle/ REJECT"), big)[1].reason


def test_long_body_line_is_matched_in_pieces(tmp_path: Path) -> None:
    line = b"a" * 2048 + b"needle"
    msg = b"Subject: x\r\n\r\n" + line + b"\r\n"
    assert _run(_checks(tmp_path, "", "/^needle/ REJECT"), msg)[1].reason
    assert _run(_checks(tmp_path, "", "/aneedle/ REJECT"), msg)[1] == Verdict()


def test_header_of_100_kib(tmp_path: Path) -> None:
    """A huge header is matched (cut at header_size_limit) without trouble."""
    msg = b"Subject: " + b"x" * 100 * 1024 + b"\r\n" + b"X-Long: y\r\n" + \
        b"".join(b"\tz" * 60 + b"\r\n" for _ in range(1000)) + b"\r\nbody\r\n"
    _content, verdict = _run(_checks(tmp_path, "/^X-Long: y/ REJECT long"), msg)
    assert verdict.reason == "5.7.1 long"


def test_mime_bomb(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Deep nesting past mime_nesting_limit is rejected as Postfix does
    (5.6.0 MIME nesting exceeds safety limit); thousands of parts are walked once."""
    deep = b"Subject: deep\r\n"
    for i in range(150):
        deep += b"Content-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n--b%d\r\n" % (i, i)
    deep += b"\r\nend\r\n"
    caplog.set_level(logging.INFO, "postbus.cleanup")
    _, verdict = _run(_checks(tmp_path, "/^X-Nothing:/ WARN"), deep)
    assert verdict.reason == "5.6.0 MIME nesting exceeds safety limit"
    assert any(r.getMessage().startswith(
        "QID1: reject: mime-error MIME nesting exceeds safety limit: Content-Type: "
        "multipart/mixed; boundary=\"b102\" from mx.client.test[192.0.2.7]; "
        "from=<a@client.test> to=<b@postbus.test>") for r in caplog.records)
    wide = b"Subject: wide\r\nContent-Type: multipart/mixed; boundary=w\r\n\r\n" + \
        b"".join(b"--w\r\nX-Part: %d\r\n\r\nbody %d\r\n" % (i, i) for i in range(5000)) + \
        b"--w--\r\n"
    _content, verdict = _run(_checks(tmp_path, "/^X-Part: 4999$/ REJECT last"), wide)
    assert verdict.reason == "5.7.1 last"


def test_actions_are_counted(tmp_path: Path) -> None:
    from postbus import metrics

    counter = metrics.content_check_actions.labels("header_checks", "WARN")
    before = counter._value.get()
    _run(_checks(tmp_path, "/^Subject:/ WARN"), MSG)
    assert counter._value.get() == before + 1


def test_random_input_never_breaks_the_walk(tmp_path: Path) -> None:
    """Odd MIME, NUL bytes, bad UTF-8, boundaries everywhere: a verdict, never a traceback;
    with no rule that matches, the content is never changed."""
    import random

    pieces = [b"Subject: x\r\n", b'Content-Type: multipart/mixed; boundary="a"\r\n', b"--a\r\n",
              b"--a--\r\n", b"\r\n", b" cont\r\n", b"\tcont\r\n",
              b"Content-Type: message/rfc822\r\n", b"\x00\xff\xfe", b"\r", b"\n",
              b"Content-Type: multipart/digest; boundary=b\r\n",
              b"--b\r\n", b"X: " + b"y" * 3000 + b"\r\n", b":\r\n", b"No colon\r\n",
              b'Content-Type: multipart/x; boundary=""\r\n', b"Content-Type: ; boundary=\r\n"]
    rnd = random.Random(13)
    (tmp_path / "edits").mkdir()
    (tmp_path / "quiet").mkdir()
    edits = _checks(tmp_path / "edits", "/^X:/ IGNORE\n/^Subject:/ REPLACE Subject: new\n"
                    "/^Content-Type:/ PREPEND X-Pre: 1", "/^--/ PREPEND pre\n/cont/ REPLACE c")
    quiet = _checks(tmp_path / "quiet", "/^X-Never-There:/ REJECT", "/^never there$/ REJECT")
    for _ in range(400):
        msg = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 40)))
        if rnd.random() < 0.2:
            msg = bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 300)))
        _run(edits, msg)
        assert _run(quiet, msg) == (None, Verdict())


def test_content_cannot_continue_the_receivers_header(tmp_path: Path) -> None:
    """A message starting with a continuation line: our Received: header stays ours."""
    top = b"Received: from x\r\n"
    body = b" not a continuation\r\nSubject: s\r\n\r\nbody\r\n"
    insp = _checks(tmp_path, "/^Received:/ IGNORE").begin(Origin())
    assert asyncio.run(mime.inspect(insp, top + body, top=len(top))) == (b"", body)
