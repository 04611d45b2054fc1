"""The milter client (smtpd_milters, non_smtpd_milters): Sendmail's mail filter protocol,
versions 2 to 6, as Postfix's milter8 speaks it (:mod:`postbus.milter.codec` the wire,
:mod:`postbus.milter.client` one milter, :mod:`postbus.milter.milters` the list)."""

from postbus.milter.client import Milter, Reply
from postbus.milter.milters import Lookup, Milters
from postbus.milter.settings import MilterSettings, MilterSpec

__all__ = ["Lookup", "Milter", "MilterSettings", "MilterSpec", "Milters", "Reply"]
