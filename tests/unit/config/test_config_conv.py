"""conv: Postfix value syntax (conv_time, get_mail_conf_bool/int, mystrtokq)."""

from __future__ import annotations

from typing import Any

import pytest

from postbus.config.conv import (
    ConfigError,
    parse_bool,
    parse_int,
    parse_size,
    parse_time,
    split_list,
)


@pytest.mark.parametrize(
    ("value", "unit", "seconds"),
    [
        ("300s", "s", 300),
        ("300", "s", 300),
        ("5d", "s", 5 * 86400),
        ("5", "d", 5 * 86400),
        ("1h", "s", 3600),
        ("2w", "s", 14 * 86400),
        ("10m", "s", 600),
        ("0h", "h", 0),
        (" 60s ", "s", 60),
        ("1", "h", 3600),
    ],
)
def test_parse_time(value: str, unit: str, seconds: int) -> None:
    assert parse_time(value, unit) == seconds


@pytest.mark.parametrize(
    "value", ["", "s", "1.5h", "1h30m", "10x", "-5s", "10S", "5 d", "99999999999w"]
)
def test_parse_time_rejects(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_time(value)


def test_parse_time_bounds() -> None:
    assert parse_time("1s", min=1) == 1
    with pytest.raises(ConfigError, match=">= 1"):
        parse_time("0s", min=1)
    with pytest.raises(ConfigError, match="<= 60"):
        parse_time("2m", max=60)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("yes", True), ("YES", True), ("Yes", True), ("no", False), ("No", False),
     ("true", True), ("FALSE", False), (" yes ", True)],
)
def test_parse_bool(value: str, expected: bool) -> None:
    assert parse_bool(value) is expected


@pytest.mark.parametrize("value", ["", "y", "n", "1", "0", "on", "yes please"])
def test_parse_bool_rejects(value: str) -> None:
    with pytest.raises(ConfigError, match="bad boolean"):
        parse_bool(value)


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("100", 100), ("-1", -1), (" 7 ", 7)])
def test_parse_int(value: str, expected: int) -> None:
    assert parse_int(value) == expected


@pytest.mark.parametrize("value", ["", "1.0", "10k", "0x10", "1 2", "3000000000"])
def test_parse_int_rejects(value: str) -> None:
    with pytest.raises(ConfigError):
        parse_int(value)


def test_parse_int_bounds() -> None:
    assert parse_int("400", min=400, max=599) == 400
    with pytest.raises(ConfigError, match="<= 599"):
        parse_int("600", min=400, max=599)


def test_parse_size() -> None:
    assert parse_size("10240000") == 10240000
    assert parse_size("3000000000") == 3000000000  # a C long, unlike int
    with pytest.raises(ConfigError):
        parse_size("10M")  # Postfix has no size suffixes


@pytest.mark.parametrize(
    ("value", "tokens"),
    [
        ("", []),
        ("a, b c,,d", ["a", "b", "c", "d"]),
        ("  a\n\tb\r\n", ["a", "b"]),
        ("hash:/etc/aliases, nis:mail.aliases", ["hash:/etc/aliases", "nis:mail.aliases"]),
        ("inline:{a=b, c=d}, static:x", ["inline:{a=b, c=d}", "static:x"]),
        (
            "permit_mynetworks, check_policy_service { inet:127.0.0.1:9998, timeout=10s }, reject",
            ["permit_mynetworks", "check_policy_service",
             "{ inet:127.0.0.1:9998, timeout=10s }", "reject"],
        ),
        ("inline:{{a=b}, {c = d}} x", ["inline:{{a=b}, {c = d}}", "x"]),
        ("a} b", ["a}", "b"]),
    ],
)
def test_split_list(value: str, tokens: list[str]) -> None:
    assert split_list(value) == tokens


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"file": "/etc/postbus/main.cf", "line": 12, "parameter": "foo"},
         "/etc/postbus/main.cf, line 12: parameter foo: bad"),
        ({"file": "/etc/postbus/main.cf"}, "/etc/postbus/main.cf: bad"),
        ({"parameter": "foo"}, "parameter foo: bad"),
        ({}, "bad"),
    ],
)
def test_config_error_message(kwargs: dict[str, Any], message: str) -> None:
    assert str(ConfigError("bad", **kwargs)) == message


def test_config_error_located_keeps_known_parts() -> None:
    err = ConfigError("bad", parameter="foo").located(file="m.cf", line=3, parameter="bar")
    assert str(err) == "m.cf, line 3: parameter foo: bad"
