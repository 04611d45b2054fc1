"""The milter wire format and settings (postbus.milter.codec, .settings, .client)."""

from __future__ import annotations

import struct

import pytest

from postbus.config.conv import ConfigError
from postbus.config.loader import Config
from postbus.milter import codec as c
from postbus.milter.client import valid_reply
from postbus.milter.settings import MilterSettings, protocol_version


def test_packets_are_length_command_data() -> None:
    assert c.packet(c.ABORT) == b"\x00\x00\x00\x01A"
    assert c.optneg(6, 0x1FF, 0x1FFFFF) == (b"\x00\x00\x00\x0dO" + struct.pack(">III", 6, 0x1FF,
                                                                             0x1FFFFF))
    assert c.macros(c.MAIL, [("i", "ABC"), ("{mail_addr}", "a@b")]) == c.packet(
        b"D", b"Mi\x00ABC\x00{mail_addr}\x00a@b\x00")
    assert c.connect("host", c.FAMILY_INET, 25, "10.0.0.1") == c.packet(
        b"C", b"host\x004\x00\x1910.0.0.1\x00")
    assert c.connect("host", c.FAMILY_UNKNOWN, 0, "") == c.packet(b"C", b"host\x00U")


def test_optneg_reply_with_macro_lists() -> None:
    data = struct.pack(">III", 6, 0x11, 0x80) + struct.pack(">I", 1) + b"{tls_version} j\x00" \
        + struct.pack(">I", 99) + b"ignored\x00"
    neg = c.parse_optneg(data)
    assert (neg.version, neg.actions, neg.protocol) == (6, 0x11, 0x80)
    assert neg.symlists == {"helo": "{tls_version} j"}
    with pytest.raises(c.ProtocolError):
        c.parse_optneg(b"\x00\x00")
    with pytest.raises(c.ProtocolError):
        c.parse_optneg(struct.pack(">III", 6, 0, 0) + struct.pack(">I", 1) + b"unterminated")


def test_edit_payloads() -> None:
    assert c.parse_index_header(struct.pack(">i", 2) + b"Subject\x00new\x00") == (2, "Subject",
                                                                                "new")
    assert c.parse_args(b"<a@b>\x00") == ("<a@b>", "")
    assert c.parse_args(b"<a@b>\x00RET=HDRS\x00") == ("<a@b>", "RET=HDRS")
    for bad in (b"", b"x", struct.pack(">i", 1) + b"only-name\x00"):
        with pytest.raises(c.ProtocolError):
            c.parse_index_header(bad)
    with pytest.raises(c.ProtocolError):
        c.strings(b"no terminator")


@pytest.mark.parametrize(("text", "ok"), [
    ("550 5.7.1 no", True), ("450 4.7.1 later", True), ("550", True),
    ("550-5.7.1 one\r\n550 5.7.1 two", True), ("550 5.7.1 one\r\n550 5.7.1 two", False),
    ("250 2.0.0 ok", False), ("550-5.7.1 dangling", False), ("5x0 no", False),
    ("", False), ("550 a\x00b", False), ("55 short", False),
])
def test_reply_syntax(text: str, ok: bool) -> None:
    assert valid_reply(text) is ok


def test_protocol_words() -> None:
    assert protocol_version("6") == (6, c.V6_MASK)
    assert protocol_version("2") == (2, c.V2_MASK)
    assert protocol_version("4, no_header_reply") == (4, c.V4_MASK | c.P_NOHREPL)
    for bad in ("5", "", "no_header_reply", "2 6", "seven"):
        assert protocol_version(bad) is None


def cfg(text: str) -> Config:
    return Config.from_text("myhostname = mx.example\n" + text, "")


def test_settings_and_per_milter_overrides() -> None:
    s = MilterSettings.from_config(cfg(
        "smtpd_milters = inet:127.0.0.1:8891, { unix:/run/m.sock, connect_timeout=5s, "
        "default_action=accept, protocol=2 }\nmilter_command_timeout = 7s\n"
        "milter_macro_defaults = {auth_type}=none, x={ a b }\n"), "smtpd_milters")
    first, second = s.milters
    assert (first.name, first.command_timeout, first.default_action) == (
        "inet:127.0.0.1:8891", 7.0, "tempfail")
    assert (second.name, second.connect_timeout, second.command_timeout) == (
        "unix:/run/m.sock", 5.0, 7.0)
    assert (second.default_action, second.protocol) == ("accept", "2")
    assert s.macros["connect"] == ["j", "{daemon_name}", "{daemon_addr}", "v", "_"]
    assert s.macro_defaults == {"{auth_type}": "none", "x": "a b"}
    assert s.daemon_name == "mx.example"


@pytest.mark.parametrize(("text", "parameter"), [
    ("smtpd_milters = tcp:1.2.3.4:5\n", "smtpd_milters"),
    ("smtpd_milters = inet:h:1\nmilter_default_action = bounce\n", "milter_default_action"),
    ("smtpd_milters = inet:h:1\nmilter_protocol = 5\n", "milter_protocol"),
    ("smtpd_milters = { inet:h:1, colour=blue }\n", "smtpd_milters"),
    ("smtpd_milters = { inet:h:1, command_timeout=soon }\n", "smtpd_milters"),
    ("milter_macro_defaults = novalue\n", "milter_macro_defaults"),
])
def test_bad_settings_are_refused_with_the_parameter(text: str, parameter: str) -> None:
    with pytest.raises(ConfigError) as info:
        MilterSettings.from_config(cfg(text), "smtpd_milters")
    assert info.value.parameter == parameter
