"""postbus postmap: build, query and edit lookup tables, as postmap(1).

``postbus postmap hash:/etc/postbus/virtual`` parses the source file (the
same parser as ``texthash:``) and compiles it into ``/etc/postbus/virtual.db``
beside it, whether or not the system runs; when the system's Redis
(``postbus_redis_url``) answers, the same build is loaded into Redis at
once and a change event on the bus makes every replica drop its cached
answers.  A system started later, or whose Redis was down, loads the
compiled file itself at its next lookup.  Why: docs/postmap.md; how:
:mod:`postbus.cli.maptool_tables`, :mod:`postbus.maps.compiled`,
:mod:`postbus.maps.sync`.  The indexed types ``hash``, ``btree``, ``lmdb``,
``cdb``, ``dbm``, ``sdbm`` are built this way; ``redis:name`` lives in Redis
only; the other types are read-only, as in Postfix.

Flags, messages and exit codes are postmap's (3.7):

* ``-q key`` prints the first map's value (exit 0), or nothing (exit 1);
  ``-q -`` reads keys from stdin and prints ``key<TAB>value`` for each key
  found (exit 0 when at least one was found); a table never built is
  ``postmap: fatal: open database /etc/postbus/x.db: No such file or directory``;
* ``-s`` prints every ``key<TAB>value``; ``-d key`` / ``-d -`` deletes
  (exit 0 when found);
* ``-i`` adds the entries on stdin to an existing table (``-r`` replaces
  existing keys silently, ``-w`` ignores them silently, else a warning);
* ``-f`` keeps case when building or querying; ``-F`` stores the
  base64-encoded contents of the files a value names, and base64-decodes
  values on ``-q``/``-s``;
* a new .db file takes the source file's group and other permissions
  (``-p``: mode 0644); run as root, postmap works as the source file's
  owner (``-o``: stays root);
* ``-N``, ``-n``, ``-u``, ``-U`` are accepted and change nothing here;
  ``-b``, ``-h``, ``-m`` (message query modes) are not supported;
* ``--push=URL`` (ours) also uploads each changed table to maps-api at
  URL: the way into a cluster of containers (:mod:`postbus.cli.maptool_push`).

The machinery is shared with ``postbus postalias`` (postalias.py):
:mod:`postbus.cli.maptool` (options), :mod:`postbus.cli.maptool_session`
(the modes).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

from postbus.cli.maptool import Options, Tool
from postbus.cli.maptool_session import run_tool
from postbus.maps.table import fold_key
from postbus.maps.types._syntax import SPACE, split_tokens
from postbus.maps.types.hashfile import iter_kv_source

__all__ = ["POSTMAP", "Options", "Tool", "main", "parse_postmap_source", "run_tool"]

log = logging.getLogger("postbus.maps")


def parse_postmap_source(text: str, path: str, opts: Options) -> Iterator[tuple[int, str, str]]:
    """postmap's source syntax: ``key whitespace value`` (``-F``: value names files)."""
    for lineno, key, value in iter_kv_source(text, path, postmap=True):
        if opts.fold:
            key = fold_key(key)
        if opts.base64:
            encoded = _files_base64(value, path, lineno)
            if encoded is None:
                continue
            value = encoded
        yield lineno, key, value


def _files_base64(value: str, path: str, lineno: int) -> str | None:
    """``-F``: the base64 of the named files' contents, joined by newlines."""
    parts: list[bytes] = []
    for name in split_tokens(value, ", " + SPACE):
        try:
            with open(name, "rb") as fp:
                parts.append(fp.read())
        except OSError as exc:
            log.warning("%s, line %d: open %s: %s: skipping this entry",
                        path, lineno, name, exc.strerror)
            return None
    return base64.b64encode(b"\n".join(parts)).decode("ascii")


POSTMAP = Tool(
    prog="postmap",
    optstring="bc:d:fFhimnNopq:rsuUvw",
    usage="usage: postmap [-bfFhimnNoprsuUvw] [-c config_dir] [-d key] [-q key]"
          " [map_type:]file...",
    parse=parse_postmap_source,
)


def main(argv: list[str]) -> int:
    return run_tool(POSTMAP, argv)

