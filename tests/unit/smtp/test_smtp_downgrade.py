"""8BITMIME downgrade (postbus.smtp.downgrade): Postfix's quoted-printable and MIME walk.
The end-to-end comparison with Postfix is tests/integration/delivery/test_8bitmime_vs_postfix.py."""

from __future__ import annotations

import quopri

import pytest

from postbus.smtp.downgrade import downgrade


def _single(body: bytes, cte: bytes = b"8bit") -> bytes:
    return (b"Subject: s\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: " + cte
            + b"\r\n\r\n" + body)


@pytest.mark.parametrize(
    ("line", "encoded"),
    [
        (b"caf\xc3\xa9", b"caf=C3=A9"),
        (b"a=b", b"a=3Db"),
        (b"tab\tin", b"tab\tin"),
        (b"ends in space ", b"ends in space=20"),
        (b"ends in tab\t", b"ends in tab=09"),
        (b"", b""),
        (b"\x01ctl\x7f", b"=01ctl=7F"),
        (b"x" * 73, b"x" * 73),  # the soft break comes before a 74th octet
        (b"x" * 74, b"x" * 73 + b"=\r\nx"),
    ],
)
def test_quoted_printable_lines(line: bytes, encoded: bytes) -> None:
    out = downgrade(_single(line + b"\r\n"))
    assert out == (b"Subject: s\r\nContent-Type: text/plain\r\n"
                   b"Content-Transfer-Encoding: quoted-printable\r\n\r\n" + encoded + b"\r\n")


def test_quoted_printable_decodes_back() -> None:
    body = b"Cr\xc3\xa8me = " * 20 + b"end \r\n.dot\r\n"
    out = downgrade(_single(body))
    encoded = out.split(b"\r\n\r\n", 1)[1]
    assert out.isascii()
    assert quopri.decodestring(encoded.replace(b"\r\n", b"\n")) == body.replace(b"\r\n", b"\n")


@pytest.mark.parametrize("cte", [b"7bit", b"quoted-printable", b"base64", b"x-unknown"])
def test_other_encodings_pass_untouched(cte: bytes) -> None:
    message = _single(b"caf\xc3\xa9\r\n", cte)
    assert downgrade(message) == message


def test_binary_is_downgraded_and_any_case_is_read() -> None:
    out = downgrade(_single(b"\xff\r\n", b"BINARY"))
    assert b"Content-Transfer-Encoding: quoted-printable\r\n\r\n=FF\r\n" in out


def test_a_message_without_mime_headers_is_left_alone() -> None:
    message = b"Subject: caf\xc3\xa9\r\n\r\ncaf\xc3\xa9\r\n"
    assert downgrade(message) == message


def test_a_folded_encoding_header_goes_whole_and_the_new_one_ends_the_block() -> None:
    message = (b"Content-Transfer-Encoding:\r\n 8bit\r\nSubject: s\r\n\r\n\xe9\r\n")
    assert downgrade(message) == (b"Subject: s\r\nContent-Transfer-Encoding: "
                                  b"quoted-printable\r\n\r\n=E9\r\n")


def test_digest_parts_are_messages_and_boundaries_close_inner_levels() -> None:
    message = (
        b"Content-Type: multipart/digest; boundary=D\r\n\r\n"
        b"--D\r\n\r\n"  # a digest part defaults to message/rfc822: headers of the message
        b"Subject: inner\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xe9\r\n"
        b"--D\r\nContent-Type: multipart/mixed; boundary=M\r\n\r\n"
        b"--M\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\xe9\r\n"
        b"--D--\r\n"  # closes M too
        b"\xe9 epilogue\r\n"
    )
    out = downgrade(message).split(b"\r\n")
    assert out[4:8] == [b"Subject: inner", b"Content-Transfer-Encoding: quoted-printable",
                        b"", b"=E9"]
    assert out[-4:] == [b"=E9", b"--D--", b"\xe9 epilogue", b""]


def test_headers_only_and_no_final_line_end() -> None:
    assert downgrade(b"Content-Transfer-Encoding: 8bit\r\nSubject: s") == (
        b"Subject: s\r\nContent-Transfer-Encoding: quoted-printable")
    assert downgrade(_single(b"\xe9")).endswith(b"\r\n\r\n=E9")


def test_nesting_limit_stops_pushing_boundaries() -> None:
    message = (b"Content-Type: multipart/mixed; boundary=A\r\n\r\n--A\r\n"
               b"Content-Transfer-Encoding: 8bit\r\n\r\n\xe9\r\n--A--\r\n")
    assert b"=E9" in downgrade(message)
    assert b"\r\n\xe9\r\n" in downgrade(message, nesting_limit=0)  # the part is body text
