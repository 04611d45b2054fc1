"""The PROXY protocol codec (postbus.haproxy): Postfix 3.7's verdicts and bounds, table-driven.

What a real Postfix says about the same headers is compared end to end in
tests/integration/test_smtpd_haproxy_vs_postfix.py; here the cases that need no server:
incomplete input, the bounds, and the address forms."""

from __future__ import annotations

import pytest

from postbus.haproxy import (
    HEADER_MAX,
    V1_MAX,
    V2_SIGNATURE,
    Header,
    ProxyError,
    encode_v1,
    encode_v2,
    escape,
    parse,
)

V1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40001 25\r\n"


@pytest.mark.parametrize(("data", "header"), [
    (V1, Header(len(V1), False, "192.0.2.7", 40001, "198.51.100.1", 25)),
    (V1 + b"EHLO c\r\n", Header(len(V1), False, "192.0.2.7", 40001, "198.51.100.1", 25)),
    (b"PROXY TCP6 2001:DB8::0:7 ::1 1 2\n", Header(33, False, "2001:db8::7", 1, "::1", 2)),
    (b"PROXY TCP6 ::ffff:192.0.2.1 ::1 0 65535\r\n",
     Header(41, False, "192.0.2.1", 0, "::1", 65535)),
    (encode_v2(("192.0.2.7", 1), ("192.0.2.8", 25)),
     Header(28, False, "192.0.2.7", 1, "192.0.2.8", 25)),
    (encode_v2(("2001:db8::7", 1), ("::1", 25), b"\x01\x00\x02h2"),
     Header(57, False, "2001:db8::7", 1, "::1", 25)),
    (encode_v2(None), Header(16, True)),
])
def test_valid_headers(data: bytes, header: Header) -> None:
    assert parse(data) == header


@pytest.mark.parametrize("data", [
    b"P", b"PROXY", b"PROXY TCP4 192.0.2.7", V1[:-1], V2_SIGNATURE[:5], V2_SIGNATURE,
    encode_v2(("192.0.2.7", 1), ("192.0.2.8", 25))[:27],
])
def test_incomplete_headers_ask_for_more_and_fail_when_final(data: bytes) -> None:
    assert parse(data) is None
    with pytest.raises(ProxyError):
        parse(data, final=True)


def test_v1_is_bounded_at_107_bytes() -> None:
    assert parse(b"PROXY " + b" " * (V1_MAX - 7)) is None  # 106 bytes: may still end
    with pytest.raises(ProxyError, match=r"^missing protocol header terminator$"):
        parse(b"PROXY " + b" " * (V1_MAX - 6))
    with pytest.raises(ProxyError, match=r"^missing protocol header terminator$"):
        parse(b"PROXY TCP4 " + b" " * 100 + b"\r\n")  # the LF comes too late


def test_v2_length_field_is_bounded() -> None:
    header = V2_SIGNATURE + b"\x21\x11" + (HEADER_MAX - 16).to_bytes(2, "big")
    assert parse(header) is None  # 536 bytes in all: may still come
    header = V2_SIGNATURE + b"\x21\x11" + (HEADER_MAX - 15).to_bytes(2, "big")
    with pytest.raises(ProxyError, match=r"^short version 2 protocol header$"):
        parse(header)


@pytest.mark.parametrize(("data", "ipv4", "ipv6", "reason"), [
    (b"PROXY TCP6 ::1 ::1 1 2\r\n", True, False, "bad or missing protocol type"),
    (b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\n", False, True, "bad or missing protocol type"),
    (encode_v2(("::1", 1), ("::1", 2)), True, False, "Postfix IPv6 support is disabled"),
    (encode_v2(("1.2.3.4", 1), ("1.2.3.4", 2)), False, True,
     "Postfix IPv4 support is disabled"),
    (b"PROXY TCP6 1:2:3:4:5:6:7::8:9 ::1 1 2\r\n", True, True, "bad or missing client address"),
    (b"PROXY TCP6 ::1%eth0 ::1 1 2\r\n", True, True, "bad or missing client address"),
    (b"PROXY TCP4 256.1.1.1 1.1.1.1 1 2\r\n", True, True, "bad or missing client address"),
    (b"PROXY TCP4 1.1.1.1 1.1.1.1 -1 2\r\n", True, True, "bad or missing client port"),
    (b"PROXY TCP4 1.1.1.1 1.1.1.1 1 \xd9\xa3\r\n", True, True, "bad or missing server port"),
])
def test_refusals(data: bytes, ipv4: bool, ipv6: bool, reason: str) -> None:
    with pytest.raises(ProxyError) as err:
        parse(data, ipv4=ipv4, ipv6=ipv6)
    assert str(err.value) == reason


def test_v4_mapped_stays_ipv6_without_ipv4() -> None:
    header = parse(b"PROXY TCP6 ::ffff:192.0.2.1 ::1 1 2\r\n", ipv4=False)
    assert header is not None and header.client_addr == "::ffff:192.0.2.1"


def test_round_trip_and_escape() -> None:
    assert encode_v1(("2001:db8::1", 5), ("::1", 25)) == b"PROXY TCP6 2001:db8::1 ::1 5 25\r\n"
    assert escape(b"a\\b\r\n\x00\x7f\xff\t") == "a\\\\b\\r\\n\\000\\177\\377\\t"


@pytest.mark.parametrize("header", [
    V1, b"PROXY TCP6 2001:db8::7 ::1 1 2\n", b"PROXY  TCP4 1.1.1.1\r1.1.1.1  1 1 x y\r\n",
    encode_v2(("192.0.2.7", 1), ("192.0.2.8", 25)), encode_v2(None),
    encode_v2(("::1", 1), ("::1", 2), b"\x04\x00\x1e" + bytes(30)),
])
def test_wanted_never_reads_past_a_header(header: bytes) -> None:
    """What TLS on connect needs: the ClientHello after the header stays in the socket."""
    from postbus.haproxy import wanted

    for cut in range(len(header)):
        assert 0 < wanted(header[:cut]) <= len(header) - cut
    assert wanted(header) == 0
