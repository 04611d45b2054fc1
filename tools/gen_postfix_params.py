#!/usr/bin/env python3
"""Generate libs/postbus/params_postfix.py: every Postfix 3.7 parameter that the
hand-written registry (libs/postbus/params.py) does not define.

Three sources, all from Postfix 3.7.11 itself:

- the defaults: ``postconf -c EMPTY -d`` of the installed Postfix (an empty
  main.cf and master.cf, so no per-transport names from a master.cf), verbatim;
- the kinds: the ``CONFIG_<TYPE>_TABLE`` arrays of the Postfix source at the
  tag (what postconf/extract.awk scans to build postconf's own tables):
  INT/NINT -> int, LONG -> size, BOOL/NBOOL -> bool, TIME -> time, STR/RAW ->
  str (list when the name or the default says so); RAW names stay unexpanded;
- the one-line docs: the first sentence of each ``%PARAM`` entry of
  ``proto/postconf.proto`` (the source of postconf(5)).

Run it where Postfix 3.7 is installed and the Postfix source is a git
repository, then review the diff::

    python tools/gen_postfix_params.py --postfix-git /work/.mirror/vdukhovni+postfix/repo \\
        --tag v3.7.11 > libs/postbus/params_postfix.py

Host-dependent values (myhostname, mydomain, mynetworks, process_id) are all
in the hand-written registry, which computes them; they never reach the
generated module.
"""

from __future__ import annotations

import argparse
import html
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "libs"))

from postbus.params import _TABLE  # noqa: E402 - the hand-written part only

CORE = {param.name for param in _TABLE}

KINDS = {
    "INT": "int", "NINT": "int", "LONG": "size", "BOOL": "bool", "NBOOL": "bool",
    "TIME": "time", "STR": "str", "STR_FN": "str", "RAW": "str",
}
LIST_SUFFIXES = (
    "_maps", "_checks", "_restrictions", "_domains", "_networks", "_classes", "_milters",
    "_list", "_exceptions", "_interfaces", "_clients", "_hosts", "_keywords", "_macros",
    "_commands", "_lookup", "_options", "_digests", "_curves", "_match", "_sites",
)
_TABLE_RE = re.compile(r"CONFIG_([A-Z_]+?)_TABLE\s+\w+\[\]\s*=\s*\{(.*?)\n\s*\};", re.S)
_DEFINE = re.compile(r'^#define\s+(VAR_\w+)\s+"([^"]+)"', re.M)


def git(repo: str, *args: str) -> str:
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True,
                          check=True).stdout


def postconf_defaults() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("main.cf", "master.cf"):
            Path(tmp, name).write_text("")
        out = subprocess.run(["postconf", "-c", tmp, "-d"], capture_output=True, text=True,
                             check=True).stdout
    values: dict[str, str] = {}
    for line in out.splitlines():
        name, sep, value = line.partition(" = ")
        values[name.removesuffix(" =")] = value if sep else ""
    return values


def source_kinds(repo: str, tag: str) -> tuple[dict[str, str], set[str]]:
    """name -> Postfix table type, and the RAW names, from the C source."""
    files = git(repo, "ls-tree", "-r", "--name-only", tag, "postfix/src").split()
    names: dict[str, str] = {}
    tables: list[tuple[str, str]] = []
    for path in files:
        if not path.endswith((".h", ".c")):
            continue
        text = git(repo, "show", f"{tag}:{path}")
        names.update(_DEFINE.findall(text))
        if path.endswith(".c") or path.endswith("install_table.h"):
            if path.endswith("install_table.h"):
                tables.append(("STR", text))
            tables += [(m.group(1), m.group(2)) for m in _TABLE_RE.finditer(text)]
    kinds: dict[str, str] = {}
    raw: set[str] = set()
    for kind, body in tables:
        for line in body.splitlines():
            match = re.match(r"\s*\{?\s*(VAR_\w+)\s*,", line)
            if match and match.group(1) in names:
                name = names[match.group(1)]
                kinds.setdefault(name, kind)
                if kind == "RAW":
                    raw.add(name)
    return kinds, raw


def proto_docs(repo: str, tag: str) -> dict[str, str]:
    text = git(repo, "show", f"{tag}:postfix/proto/postconf.proto")
    docs: dict[str, str] = {}
    for block in re.split(r"^%PARAM ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        name = name.split()[0]
        para = re.search(r"<p>(.*?)(?:</p>|<p>|$)", body, re.S)
        if not para:
            continue
        words = html.unescape(re.sub(r"<[^>]+>", "", para.group(1))).split()
        sentence = " ".join(words)
        end = re.search(r"(?<!e\.g)(?<!i\.e)(?<!etc)\.(\s|$)", sentence)
        if end:
            sentence = sentence[: end.start() + 1]
        if len(sentence) > 100:
            sentence = sentence[:97].rsplit(" ", 1)[0].rstrip(",;:") + "..."
        docs[name] = sentence
    return docs


def kind_of(name: str, pf_kind: str, default: str) -> str:
    kind = KINDS.get(pf_kind, "str")
    if kind == "str" and (name.endswith(LIST_SUFFIXES) or ", " in default):
        return "list"
    return kind


def time_unit(kind: str, default: str) -> str:
    last = default[-1:] if default else ""
    return last if kind == "time" and last in "smhdw" and last else "s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postfix-git", required=True, help="Postfix source git repository")
    parser.add_argument("--tag", default="v3.7.11")
    args = parser.parse_args()
    defaults = postconf_defaults()
    if defaults.get("mail_version", "").rsplit(".", 1)[0] != "3.7":
        sys.exit(f"postconf is Postfix {defaults.get('mail_version')}, not 3.7")
    kinds, raw = source_kinds(args.postfix_git, args.tag)
    docs = proto_docs(args.postfix_git, args.tag)
    rows = []
    for name in sorted(defaults):
        if name in CORE or name in ("process_id", "process_name", "service_name"):
            continue
        default = defaults[name]
        kind = kind_of(name, kinds.get(name, "STR"), default)
        doc = docs.get(name, "Legacy or per-instance Postfix parameter; see postconf(5).")
        rows.append((name, kind, time_unit(kind, default), default, doc))
    out = sys.stdout
    out.write('"""Postfix 3.7 parameters beyond the hand-written registry (generated: do not edit).\n\n')
    out.write(f"Generated by tools/gen_postfix_params.py from Postfix {defaults['mail_version']}:\n")
    out.write("defaults as ``postconf -d`` prints them, kinds from the Postfix source's\n")
    out.write("CONFIG_*_TABLE arrays, docs from the first sentence of postconf(5).\n")
    out.write("postbus.params turns each row into a Param; postbus.param_status says\n")
    out.write('which of them Postbus supports (none of these, so far).\n"""\n\n')
    out.write("#: name: (kind, time unit, default, doc)\n")
    out.write("POSTFIX_PARAMS: dict[str, tuple[str, str, str, str]] = {\n")
    for name, kind, unit, default, doc in rows:
        out.write(f"    {name!r}: ({kind!r}, {unit!r}, {default!r}, {doc!r}),\n")
    out.write("}\n\n")
    out.write("#: Parameters Postfix keeps unexpanded (CONFIG_RAW_TABLE).\n")
    out.write("POSTFIX_RAW = frozenset({\n")
    for name in sorted(n for n in raw if n not in CORE):
        out.write(f"    {name!r},\n")
    out.write("})\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
