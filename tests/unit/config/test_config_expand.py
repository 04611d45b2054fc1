"""$name expansion: Postfix 3.7 mac_expand rules, table-driven."""

from __future__ import annotations

import pytest

from postbus.config.conv import ConfigError
from postbus.config.main_cf import expand, references

TABLE = {
    "mail_name": "Postfix",
    "mail_version": "3.7.11",
    "myhostname": "mx.example.com",
    "myorigin": "$myhostname",
    "empty": "",
    "nested": "<$myorigin>",
    "loop_a": "$loop_b",
    "loop_b": "x $loop_a",
    "self": "$self",
    "level": "3.6",
    "dollar": "$$HOME",
}


def lookup(name: str) -> str | None:
    return TABLE.get(name)


CASES = [
    ("plain", "plain"),
    ("$mail_name", "Postfix"),
    ("${mail_name}", "Postfix"),
    ("$(mail_name)", "Postfix"),
    ("${ mail_name }", "Postfix"),
    ("$$myhostname $(mail_name) ${mail_name}", "$myhostname Postfix Postfix"),
    ("a$$$mail_name", "a$Postfix"),
    ("$mail_name-$mail_version.", "Postfix-3.7.11."),
    ("$mail-name", "-name"),  # $mail is undefined: empty
    ("$1abc", ""),
    ("$undefined_x|", "|"),
    ("$nested", "<mx.example.com>"),
    ("$dollar", "$HOME"),
    ("${mail_name}}", "Postfix}"),
    # Conditionals, 2.x forms: bare text runs to the closing brace.
    ("${mail_name?yes}", "yes"),
    ("${empty?yes}", ""),
    ("${undefined_x?yes}", ""),
    ("${mail_name:no}", ""),
    ("${empty:no}", "no"),
    ("${undefined_x:no}", "no"),
    ("${mail_name?x:y}", "x:y"),
    ("${empty?:b}", ""),
    ("${mail_name??foo:{b}ar}", "?foo:{b}ar"),
    ("x${mail_name? a }y", "x a y"),
    ("${mail_name?$mail_version}", "3.7.11"),
    ("${mail_name?${mail_version}}", "3.7.11"),
    ("$(mail_name?(x))", "(x)"),
    ("${mail_name?x{y}z}", "x{y}z"),
    ("${mail_name?}", ""),
    # 3.0 forms with {} operands.
    ("${mail_name?{yes}}", "yes"),
    ("${mail_name?{ a b } : { c }}", " a b "),
    ("${empty?{a}:{b}}", "b"),
    ("${undefined_x?{a}:{b}} ${undefined_x:{u}}", "b u"),
    ("x${myhostname?{yes}:{no}}y", "xyesy"),
    ("${mail_name?{a}:b}", "a"),
    ("${empty?{a}:b}", "b"),
    ("${mail_name?{a}:}", "a"),
    ("${mail_name ? {x} : {y} }", "x"),
    ("${mail_name?{{a}}}", "{a}"),
    ("${mail_name?{$mail_version}}", "3.7.11"),
    # Relational expressions.
    ("${{$mail_name} == {Postfix} ? {eq} : {ne}}", "eq"),
    ("${{$mail_name} != {Postfix} ? {eq} : {ne}}", "ne"),
    ("${{a} != {b}}|${{a}=={a}}|${{$empty}=={}?yes}", "true|true|yes"),
    ("${{}=={}}", "true"),
    ("${ {a} == {a} ? {x} }", "x"),
    ("${{a}=={a}:x}", ""),
    ("${{1}<{2}?x}", "x"),
    ("${{10}<{9}?x:y}", ""),  # numeric: false, and "x:y" is the ?-text
    ("${{10}<{9}?{x}:{y}}", "y"),
    ("${{a}<{b}?x:y}", "x:y"),  # lexicographic
    ("${{10}<={10}?{le}}${{b}>{a}?{gt}}${{2}>={3}?{ge}:{lt}}", "legtlt"),
    ("${{$level} <level {2} ? {old} : {new}}", "new"),
    ("${{$level} <level {3.10} ? {old} : {new}}", "old"),
    ("${{3.6.1} >level {3.6} ? {newer}}", "newer"),
    ("${{0} <level {1} ? {no} : {yes}}", "no"),
]


@pytest.mark.parametrize(("value", "expected"), CASES)
def test_expand(value: str, expected: str) -> None:
    assert expand(value, lookup) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("foo $ bar", "empty macro name"),
        ("$", "empty macro name"),
        ("$mail_name$", "empty macro name"),
        ("${mail_name", "truncated macro reference"),
        ("$(mail_name}", "truncated macro reference"),
        ("${mail_name)", "truncated macro reference"),
        ("${mail_name{x}}", "attribute name syntax error"),
        ("${mail name}", "attribute name syntax error"),
        ("${mail_name?{a}:{b}:{c}}", "unexpected input"),
        ("${mail_name?{a} junk}", '":" expected'),
        ("${myhostname:{a}:{b}}", "unexpected input"),
        ("${mail_name?{a}:{b}", "truncated macro reference"),
        ("${{a} = {b}}", "expected at"),
        ("${{a} == b}", '"{expression}" expected'),
        ("${{a} == {b} x}", '"?" or ":" expected'),
        ("${{a} ==foo {b}}", "bad operator suffix"),
        ("${{x} <level {3}}", "bad compatibility level"),
        ("${{a} == {b}", "truncated macro reference"),
        ("${mail_name?{a}", "truncated macro reference"),
    ],
)
def test_expand_syntax_errors(value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        expand(value, lookup)


@pytest.mark.parametrize(
    ("value", "chain"),
    [
        ("$loop_a", "loop_a -> loop_b -> loop_a"),
        ("ok ${loop_b}", "loop_b -> loop_a -> loop_b"),
        ("$self", "self -> self"),
    ],
)
def test_expand_loop(value: str, chain: str) -> None:
    with pytest.raises(ConfigError, match=f"parameter expansion loop: {chain}"):
        expand(value, lookup)


def test_expand_loop_back_to_the_parameter_itself() -> None:
    with pytest.raises(ConfigError, match="myorigin -> myorigin"):
        expand("$myorigin", lambda n: "$myorigin" if n == "myorigin" else None, name="myorigin")


def test_non_recursive_expansion_takes_values_literally() -> None:
    assert expand("$myorigin", lookup, recursive=False) == "$myhostname"
    assert expand("$loop_a", lookup, recursive=False) == "$loop_b"


def test_conditional_self_reference_is_not_a_loop() -> None:
    assert expand("${self?{set}}", lookup, name="self") == "set"


def test_references() -> None:
    assert references("$a ${b} $(c?$d) ${e:{$f}} ${{$g} == {h} ? {$i} : {x}} $$j") == [
        "a", "b", "d", "c", "f", "e", "g", "i",
    ]
