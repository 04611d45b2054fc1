"""``postbus postmap`` / ``postbus postalias`` against Debian's postmap/postalias 3.7.

The same source files are built and queried by both; stdout, stderr
(with the file names mapped) and exit codes must match.  ``-s`` output is
compared as a set: both print in database order, which differs.  Skipped
when Postfix is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from postbus.servers import ServerProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("postmap", path="/usr/sbin:" + os.environ["PATH"]) is None,
                       reason="postmap (Postfix) is not installed: differential test skipped"),
]

POSTBUS = [sys.executable, "-m", "postbus.cli.main"]

SOURCE = """# access-style table
user@example.com        OK user
User2@Example.COM       REJECT mixed case key
example.com             domain
.example.com            dot-domain
@example.org            at-domain
user+ext@example.net    extension
user@                   localpart-at
postmaster              local
1.2.3                   net
2001:db8::1             net6
dup                     first
DUP                     second
cont                    a
   b   c
"quoted key"            quoted
"a\\"b"                 escaped-quote
ÄBC@ex.com              utf8
strasse                 street
\tleading-tab-line      x
novalue
key:                    colon
bad"quote value
tab\there               t
# end
"""

KEYS = [
    "user@example.com", "USER@EXAMPLE.COM", "User2@example.com", "user2@EXAMPLE.com",
    "example.com", "EXAMPLE.COM", ".example.com", "sub.example.com", "@example.org",
    "user+ext@example.net", "user@example.net", "user@", "postmaster", "Postmaster",
    "1.2.3", "2001:db8::1", "2001:DB8::1", "dup", "Dup", "cont", '"quoted key"',
    '"QUOTED KEY"', "quoted key", '"a\\"b"', "äbc@ex.com", "ÄBC@EX.COM", "STRASSE",
    "straße", "novalue", "key:", "key", "leading-tab-line", "tab", "nosuch", " user@example.com",
]

ALIASES = """# aliases(5)
postmaster: root
Root:  Joe,  "|/bin/prog arg" ,
  /var/mail/file
list: :include:/etc/list
dup: a
DUP: b
nocolon value
empty:
"quoted name": x
bad"q: v
a b: c
 lead: x
user@example.com: nonlocal
joe: joe . smith @ example . com, (comment) bob
MAILER-DAEMON: postmaster
owner-list: "quoted, value"
"""

ALIAS_KEYS = ["postmaster", "ROOT", "list", "dup", "quoted name", '"quoted name"', "a b",
              "joe", "mailer-daemon", "owner-list", "nocolon", "empty", "@", "nosuch"]


def cool(path: Path) -> None:
    os.utime(path, (1_000_000_000, 1_000_000_000))  # Postfix waits for "hot" files


@pytest.fixture
def env(tmp_path: Path, redis: ServerProcess) -> dict[str, Path]:
    pfx = tmp_path / "postfix"
    pbx = tmp_path / "postbus"
    pfx.mkdir()
    pbx.mkdir()
    (pfx / "main.cf").write_text("compatibility_level = 3.6\nmyhostname = mail.example.test\n")
    (pbx / "main.cf").write_text(f"postbus_redis_url = {redis.url}\n"
                                 "myhostname = mail.example.test\n")
    cool(pfx / "main.cf")
    return {"postfix": pfx, "postbus": pbx, "pf_dir": tmp_path / "pf", "pb_dir": tmp_path / "pb"}


class Pair:
    """Runs one command line through real Postfix and through Postbus, on twin files."""

    def __init__(self, env: dict[str, Path], tool: str) -> None:
        self.env, self.tool = env, tool
        env["pf_dir"].mkdir(exist_ok=True)
        env["pb_dir"].mkdir(exist_ok=True)

    def write(self, name: str, text: str) -> None:
        for d in ("pf_dir", "pb_dir"):
            path = self.env[d] / name
            path.write_text(text)
            cool(path)

    def run(self, *args: str, stdin: str = "") -> tuple[tuple[int, str, str], tuple[int, str, str]]:
        real = subprocess.run(
            [shutil.which(self.tool, path="/usr/sbin:" + os.environ["PATH"]) or self.tool,
             *[a.replace("@DIR@", str(self.env["pf_dir"])) for a in args]],
            input=stdin.encode(), capture_output=True, timeout=60, check=False,
            env={**os.environ, "MAIL_CONFIG": str(self.env["postfix"]), "LANG": "C.UTF-8"},
        )
        ours = subprocess.run(
            [*POSTBUS, "-c", str(self.env["postbus"]), self.tool,
             *[a.replace("@DIR@", str(self.env["pb_dir"])) for a in args]],
            input=stdin.encode(), capture_output=True, timeout=60, check=False,
        )

        def norm(proc: subprocess.CompletedProcess[bytes], d: str) -> tuple[int, str, str]:
            err = proc.stderr.decode("utf-8", "replace").replace(str(self.env[d]), "@DIR@")
            return proc.returncode, proc.stdout.decode("utf-8", "replace"), err

        return norm(real, "pf_dir"), norm(ours, "pb_dir")

    def same(self, *args: str, stdin: str = "", as_set: bool = False) -> tuple[int, str, str]:
        real, ours = self.run(*args, stdin=stdin)
        if as_set:
            real = (real[0], "\n".join(sorted(real[1].splitlines())), real[2])
            ours = (ours[0], "\n".join(sorted(ours[1].splitlines())), ours[2])
        assert ours == real, f"{args}"
        return ours


@pytest.mark.parametrize("typ", ["hash", "btree"])
def test_postmap_build_query_dump(env: dict[str, Path], typ: str) -> None:
    pm = Pair(env, "postmap")
    pm.write("t", SOURCE)
    spec = f"{typ}:@DIR@/t"
    rc, _, err = pm.same(spec)
    assert rc == 0 and 'duplicate entry: "dup"' in err
    for key in KEYS[:12]:
        pm.same("-q", key, spec)
    rc, out, _ = pm.same("-q", "-", spec, stdin="".join(k + "\n" for k in KEYS) + "\n")
    assert rc == 0 and "user@example.com\tOK user" in out
    pm.same("-q", "-", spec, stdin="nosuch\nother\n")
    pm.same("-s", spec, as_set=True)
    pm.same("-f", "-q", "User2@Example.COM", spec)


def test_postmap_default_type_f_flag_and_multiple_maps(env: dict[str, Path]) -> None:
    pm = Pair(env, "postmap")
    pm.write("t", SOURCE)
    pm.write("u", "Mixed Case\nother x\n")
    pm.same("@DIR@/t")
    pm.same("-f", "hash:@DIR@/u")
    for key in ("Mixed", "mixed"):
        pm.same("-q", key, "hash:@DIR@/u")
        pm.same("-f", "-q", key, "hash:@DIR@/u")
    pm.same("-q", "other", "@DIR@/t", "hash:@DIR@/u")
    pm.same("-q", "-", "hash:@DIR@/u", "@DIR@/t", stdin="other\npostmaster\nnone\n")
    pm.same("-q", "postmaster", "@DIR@/t", "hash:@DIR@/never")
    pm.same("-q", "other", "hash:@DIR@/never", "@DIR@/t")


def test_postmap_delete_and_incremental(env: dict[str, Path]) -> None:
    pm = Pair(env, "postmap")
    pm.write("t", SOURCE)
    pm.same("hash:@DIR@/t")
    assert pm.same("-d", "Postmaster", "hash:@DIR@/t")[0] == 0
    assert pm.same("-d", "postmaster", "hash:@DIR@/t")[0] == 1
    assert pm.same("-d", "-", "hash:@DIR@/t", stdin="dup\nzz\n")[0] == 0
    assert pm.same("-d", "-", "hash:@DIR@/t", stdin="zz\n")[0] == 1
    new = "New key\nuser@example.com other\nnovalue\nlater v\nLATER w\n"
    pm.same("-i", "hash:@DIR@/t", stdin=new)
    pm.same("-i", "-r", "hash:@DIR@/t", stdin="user@example.com replaced\n")
    pm.same("-i", "-w", "hash:@DIR@/t", stdin="user@example.com ignored\n")
    pm.same("-s", "hash:@DIR@/t", as_set=True)
    pm.same("-i", "hash:@DIR@/fresh", stdin="a b\n")
    pm.same("-s", "hash:@DIR@/fresh", as_set=True)


def test_postmap_base64_files(env: dict[str, Path]) -> None:
    pm = Pair(env, "postmap")
    pm.write("f1", "hello\n")
    pm.write("f2", "world")
    pm.write("tf", "k1 @DIR@/f1, @DIR@/f2\nk2 @DIR@/f1\nk3 @DIR@/nofile\n".replace(
        "@DIR@", "."))
    for d in ("pf_dir", "pb_dir"):  # file names in the source are relative to the cwd
        (env[d] / "tf").write_text(f"k1 {env[d]}/f1, {env[d]}/f2\nk2 {env[d]}/f1 \n"
                                   f"k3 {env[d]}/nofile\n")
        cool(env[d] / "tf")
    pm.same("-F", "hash:@DIR@/tf")
    pm.same("-s", "hash:@DIR@/tf", as_set=True)
    pm.same("-F", "-s", "hash:@DIR@/tf", as_set=True)
    pm.same("-F", "-q", "k1", "hash:@DIR@/tf")
    pm.write("plain", "k not-base64!\n")
    pm.same("hash:@DIR@/plain")
    pm.same("-F", "-q", "k", "hash:@DIR@/plain")


@pytest.mark.parametrize("args", [
    ("-q", "x", "hash:@DIR@/missing"),
    ("-s", "hash:@DIR@/missing"),
    ("-d", "x", "hash:@DIR@/missing"),
    ("hash:@DIR@/missing",),
    ("regexp:@DIR@/t",), ("pcre:@DIR@/t",), ("cidr:@DIR@/t",), ("texthash:@DIR@/t",),
    ("static:x",), ("foo:@DIR@/t",), ("-q", "x", "foo:@DIR@/t"),
    ("-q", "x", "texthash:@DIR@/nofile"),
    ("-q", "dup", "texthash:@DIR@/t"),
    ("-s", "regexp:@DIR@/re"),
    ("-s", "texthash:@DIR@/u"),
    (), ("-x",), ("-q",), ("-d", "a", "-d", "b", "hash:@DIR@/t"), ("-q", "a", "-s", "hash:@DIR@/t"),
    ("-s", "-q", "a", "hash:@DIR@/t"), ("-s", "-d", "a", "hash:@DIR@/t"),
    ("-b", "hash:@DIR@/t"),
])
def test_postmap_errors_and_exit_codes(env: dict[str, Path], args: tuple[str, ...]) -> None:
    pm = Pair(env, "postmap")
    pm.write("t", SOURCE)
    pm.write("u", "b 1\n")
    pm.write("re", "/x/ y\n")
    pm.same(*args)


def test_postalias_build_query_dump_delete(env: dict[str, Path]) -> None:
    pa = Pair(env, "postalias")
    pa.write("aliases", ALIASES)
    rc, _, err = pa.same("hash:@DIR@/aliases")
    assert rc == 0 and "need name:value pair" in err and "name must be local" in err
    for key in ALIAS_KEYS:
        pa.same("-q", key, "hash:@DIR@/aliases")
    pa.same("-q", "-", "hash:@DIR@/aliases", stdin="".join(k + "\n" for k in ALIAS_KEYS))

    def without_timestamp(out: str) -> list[str]:
        return sorted(line for line in out.splitlines() if not line.startswith("YP_LAST"))

    real, ours = pa.run("-s", "hash:@DIR@/aliases")
    assert (ours[0], without_timestamp(ours[1])) == (real[0], without_timestamp(real[1]))
    pa.same("-i", "hash:@DIR@/aliases", stdin="new: x\nbad\nroot: other\n")
    assert pa.same("-d", "new", "hash:@DIR@/aliases")[0] == 0
    assert pa.same("-d", "new", "hash:@DIR@/aliases")[0] == 1
    pa.same("@DIR@/aliases")
    pa.same("texthash:@DIR@/aliases")
    pa.same("-q", "x")
    pa.same("-F", "x")
