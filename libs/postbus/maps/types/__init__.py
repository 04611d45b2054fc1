"""Built-in table types; importing this package registers them (≈ dict_open.c's table)."""

from postbus.maps.types import proxy, socketmap, tcp  # noqa: F401  # isort: skip
from postbus.maps.types import redis_table  # noqa: F401  # isort: skip
from postbus.maps.types import cidr, composite, hashfile, inline, regexp, static

__all__ = ["cidr", "composite", "hashfile", "inline", "regexp", "static"]
