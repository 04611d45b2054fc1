"""The protocol parameters of one smtp or lmtp transport (≈ the smtp_*/lmtp_*
parameters smtp(8) reads), read once per transport."""

from __future__ import annotations

import socket
from dataclasses import dataclass

from postbus.config.loader import Config


@dataclass(frozen=True)
class Settings:
    """Protocol parameters of one transport (``smtp_*``, or ``lmtp_*`` for LMTP)."""

    lmtp: bool = False
    helo_name: str = "localhost"
    connect_timeout: float | None = 30.0
    helo_timeout: float = 300.0
    mail_timeout: float = 300.0
    rcpt_timeout: float = 300.0
    data_init_timeout: float = 120.0
    data_xfer_timeout: float = 180.0
    data_done_timeout: float = 600.0
    rset_timeout: float = 20.0
    quit_timeout: float = 300.0
    starttls_timeout: float = 300.0
    skip_5xx_greeting: bool = True
    default_port: int = 25
    line_limit: int = 998
    myhostname: str = "localhost"  # names a UNIX-domain LMTP server in texts, as Postfix
    mime_conversion: bool = True  # not disable_mime_output_conversion
    nesting_limit: int = 100  # mime_nesting_limit
    send_xforward: bool = False  # smtp_send_xforward_command
    xforward_timeout: float = 300.0

    @classmethod
    def from_config(cls, cfg: Config, lmtp: bool) -> Settings:
        """Read ``lmtp_<x>`` for LMTP when Postfix has one, else ``smtp_<x>``."""

        def name(smtp_name: str) -> str:
            if lmtp:
                twin = "lmtp_" + smtp_name[5:].replace("helo", "lhlo")
                try:
                    cfg.raw(twin)
                    return twin
                except KeyError:
                    pass
            return smtp_name

        def seconds(smtp_name: str) -> float:
            return cfg.time(name(smtp_name))

        connect = seconds("smtp_connect_timeout")
        return cls(
            lmtp=lmtp,
            helo_name=cfg.get(name("smtp_helo_name")),
            connect_timeout=connect or None,  # 0 = the system's own limit
            helo_timeout=seconds("smtp_helo_timeout"),
            mail_timeout=seconds("smtp_mail_timeout"),
            rcpt_timeout=seconds("smtp_rcpt_timeout"),
            data_init_timeout=seconds("smtp_data_init_timeout"),
            data_xfer_timeout=seconds("smtp_data_xfer_timeout"),
            data_done_timeout=seconds("smtp_data_done_timeout"),
            rset_timeout=seconds("smtp_rset_timeout"),
            quit_timeout=seconds("smtp_quit_timeout"),
            starttls_timeout=seconds("smtp_starttls_timeout"),
            skip_5xx_greeting=cfg.bool("smtp_skip_5xx_greeting"),
            default_port=_lmtp_port(cfg) if lmtp else 25,
            line_limit=cfg.int(name("smtp_line_length_limit")),
            myhostname=cfg.get("myhostname"),
            mime_conversion=not cfg.bool("disable_mime_output_conversion"),
            nesting_limit=cfg.int("mime_nesting_limit"),
            send_xforward=cfg.bool(name("smtp_send_xforward_command")),
            xforward_timeout=seconds("smtp_xforward_timeout"),
        )


def _lmtp_port(cfg: Config) -> int:
    value = cfg.get("lmtp_tcp_port")
    return int(value) if value.isdigit() else socket.getservbyname(value, "tcp")
