"""postbus postconf, what Postbus supports: ``-a``/``-A`` (SASL types), ``-T``
(TLS library), ``-b``/``-t`` (notice templates), ``-m`` (table types) and
``-l`` (mailbox locks) (≈ postconf_other.c and ``bounce -SVn...``).

Each answer is Postbus's own, in Postfix's format: the SASL types Postbus
implements (none yet: smtpd offers no AUTH, the SMTP client does not
authenticate), the OpenSSL that Python's ssl module was built with and
runs, and the notice templates the qmgr uses (bounce_template_file's).
"""

from __future__ import annotations

import ssl

from postbus.bounce_template import TemplateError, load_file
from postbus.cli.postconf_names import (
    expand_value,
    lookup_chain,
    register_builtin,
    register_services,
)
from postbus.cli.postconf_session import Fatal, Session, read_main
from postbus.config.conv import ConfigError, parse_bool

__all__ = ["SASL_CLIENT_TYPES", "SASL_SERVER_TYPES", "show_locks", "show_maps", "show_sasl",
           "show_templates", "show_tls"]

#: smtpd_sasl_type values Postbus implements (Postfix: cyrus, dovecot).
SASL_SERVER_TYPES: tuple[str, ...] = ()
#: smtp_sasl_type values Postbus implements (Postfix: cyrus).
SASL_CLIENT_TYPES: tuple[str, ...] = ()

#: OpenSSL cipher authentication -> postconf's public key algorithm name.
_KEY_ALGORITHMS = {"auth-dss": "dsa", "auth-ecdsa": "ecdsa", "auth-rsa": "rsa"}


def show_sasl(session: Session, server: bool) -> int:
    for name in SASL_SERVER_TYPES if server else SASL_CLIENT_TYPES:
        session.out.write(name + "\n")
    return 0


def show_maps(session: Session) -> int:
    from postbus.maps.table import registered_types

    for name in registered_types():
        session.out.write(name + "\n")
    return 0


def show_locks(session: Session) -> int:
    session.out.write("flock\nfcntl\ndotlock\n")
    return 0


# -- TLS ------------------------------------------------------------------------------


def _openssl_text(version: tuple[int, ...]) -> str:
    """``OpenSSL 3.0.16`` from (3, 0, 0, 16, 0), ``OpenSSL 1.1.1w`` from (1, 1, 1, 23, 15)."""
    major, minor, fix, patch = version[:4]
    if major >= 3:
        return f"OpenSSL {major}.{minor}.{patch}"
    return f"OpenSSL {major}.{minor}.{fix}" + (chr(ord("a") + patch - 1) if patch else "")


def compile_version() -> str:
    """The OpenSSL the ssl module was built with; its release text when the
    library that runs is the same release (Python keeps only the number)."""
    built = tuple(getattr(ssl, "_OPENSSL_API_VERSION", ssl.OPENSSL_VERSION_INFO))
    text = _openssl_text(built)
    if tuple(ssl.OPENSSL_VERSION_INFO) == built and ssl.OPENSSL_VERSION.startswith(text + " "):
        return ssl.OPENSSL_VERSION
    return text


def public_key_algorithms() -> list[str]:
    """Key types the TLS library can authenticate with, sorted (≈ tls_pkey_algorithms())."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.set_ciphers("ALL:@SECLEVEL=0")
    found = {_KEY_ALGORITHMS.get(cipher.get("auth", "")) for cipher in context.get_ciphers()}
    return sorted(name for name in found if name)


def show_tls(session: Session, mode: str) -> int:
    """``postconf -T compile-version|run-version|public-key-algorithms``."""
    if mode == "compile-version":
        session.out.write(compile_version() + "\n")
    elif mode == "run-version":
        session.out.write(ssl.OPENSSL_VERSION + "\n")
    elif mode == "public-key-algorithms":
        session.out.write("".join(name + "\n" for name in public_key_algorithms()))
    else:
        session.warn(f"unknown 'postconf -T' mode: {mode}")
        return 1
    return 0


# -- notice templates -------------------------------------------------------------------


def show_templates(session: Session, args: list[str]) -> int:
    """``postconf -t [file]`` prints the templates, ``-b [file]`` their expanded
    text: those of bounce_template_file, or of the file named (the built-in ones
    when it is ""), as the qmgr uses them; messages about the file come from
    ``$syslog_name/bounce``, as in Postfix."""
    if len(args) > 1:
        raise Fatal("options -b and -t require at most one template file")
    read_main(session)
    register_builtin(session)
    register_services(session)
    lookup = lookup_chain(session, None, defaults_only=False)

    def value(name: str) -> str | None:
        raw = lookup(name)
        return None if raw is None else expand_value(raw, lookup)

    ident = f"{value('syslog_name')}/bounce"

    def say(level: str, text: str) -> None:
        session.say(f"{ident}: {level}: {text}")

    def warn(text: str) -> None:
        say("warning", text)

    path = args[0] if args else value("bounce_template_file") or ""
    try:
        utf8 = parse_bool(value("smtputf8_enable") or "no")
    except ConfigError:
        utf8 = False
    try:
        templates = load_file(path, warn).values()
        if "t" in session.flags:
            output = "\n".join(t.dump() for t in templates)
        else:
            output = "\n".join(
                "".join([f"expanded_{t.kind}_text = <<EOF\n",
                         *(line + "\n" for line in t.expand(value, warn, utf8)), "EOF\n"])
                for t in templates
            )
    except TemplateError as exc:
        say("fatal", str(exc))
        return 1
    session.out.write(output)
    return 0
