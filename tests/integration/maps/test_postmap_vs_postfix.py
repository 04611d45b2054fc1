"""``postbus postmap`` / ``postbus postalias`` against Debian's postmap/postalias 3.7.

The same source files are built and queried by both; stdout, stderr
(with the file names mapped) and exit codes must match.  ``-s`` output is
compared as a set: both print in database order, which differs.

Postfix's answers are live where Postfix is installed and recorded
everywhere (``tests/data/postfix/postmap.json``, see tests/recorded.py), so
the comparison never skips.  Postbus runs each sequence with its Redis in
one of four states (``mode``): never running (``down``), running
throughout (``up``), started after the first build (``late``: postmap,
then postbus start) and stopped after it (``gone``): the answers must be
Postfix's in every one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from postbus.servers import ServerProcess, redis_server
from tests.recorded import Recording

pytestmark = pytest.mark.integration

POSTBUS = [sys.executable, "-m", "postbus.cli.main"]
RECORDING = Recording("postmap")
LIVE = shutil.which("postmap", path="/usr/sbin:" + os.environ["PATH"]) is not None
ALL_MODES = ["down", "up", "late", "gone"]
Answer = tuple[int, str, str]

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


class Env:
    """Twin directories for Postfix and Postbus, and Postbus's Redis in a given state."""

    def __init__(self, tmp_path: Path, redis: ServerProcess, mode: str) -> None:
        self.tmp, self.redis, self.mode = tmp_path, redis, mode
        self.postfix, self.postbus = tmp_path / "postfix", tmp_path / "postbus"
        self.pf_dir, self.pb_dir = tmp_path / "pf", tmp_path / "pb"
        for d in (self.postfix, self.postbus, self.pf_dir, self.pb_dir):
            d.mkdir()
        (self.postfix / "main.cf").write_text("compatibility_level = 3.6\n"
                                              "myhostname = mail.example.test\n")
        (self.postbus / "main.cf").write_text(f"postbus_redis_url = {redis.url}\n"
                                              "myhostname = mail.example.test\n")
        cool(self.postfix / "main.cf")
        if mode in ("up", "gone"):
            redis.start()

    def after_first_step(self) -> None:
        if self.mode == "late":
            self.redis.start()
        elif self.mode == "gone":
            self.redis.stop()


@pytest.fixture
def env(tmp_path: Path, mode: str) -> Iterator[Env]:
    redis = redis_server(tmp_path / "redis")
    yield Env(tmp_path, redis, mode)
    redis.stop()


class Pair:
    """Runs each command line through Postbus and (live or recorded) Postfix, on twin files."""

    def __init__(self, env: Env, tool: str, name: str) -> None:
        self.env, self.tool, self.name = env, tool, name
        self.step = 0

    def write(self, name: str, text: str) -> None:
        for d in (self.env.pf_dir, self.env.pb_dir):
            self.write_in(d, name, text)

    @staticmethod
    def write_in(d: Path, name: str, text: str) -> None:
        path = d / name
        path.write_text(text)
        cool(path)

    def run(self, argv: list[str], d: Path, stdin: str, as_set: bool,
            env: dict[str, str] | None = None) -> Answer:
        proc = subprocess.run(
            [a.replace("@DIR@", str(d)) for a in argv], input=stdin.encode(),
            capture_output=True, timeout=60, check=False, env=env,
        )

        def norm(raw: bytes) -> str:
            text = raw.decode("utf-8", "replace").replace(str(d), "@DIR@")
            return re.sub(r"YP_LAST_MODIFIED(:?)\t\d+", r"YP_LAST_MODIFIED\1\t@TIME@", text)

        out = norm(proc.stdout)
        if as_set:
            out = "\n".join(sorted(out.splitlines()))
        return proc.returncode, out, norm(proc.stderr)

    def postfix(self, args: tuple[str, ...], stdin: str, as_set: bool) -> Answer:
        real = shutil.which(self.tool, path="/usr/sbin:" + os.environ["PATH"]) or self.tool
        return self.run([real, *args], self.env.pf_dir, stdin, as_set, env={
            **os.environ, "MAIL_CONFIG": str(self.env.postfix), "LANG": "C.UTF-8"})

    def same(self, *args: str, stdin: str = "", as_set: bool = False) -> Answer:
        self.step += 1
        case = f"{self.name} {self.step}: {self.tool} {' '.join(args)}"
        if stdin:
            case += f" <<{stdin!r}"
        live = (lambda: self.postfix(args, stdin, as_set)) if LIVE else None
        real = tuple(RECORDING.answer(case, live))
        ours = self.run([*POSTBUS, "-c", str(self.env.postbus), self.tool, *args],
                        self.env.pb_dir, stdin, as_set)
        assert ours == real, f"{case} (Redis {self.env.mode})"
        if self.step == 1:
            self.env.after_first_step()
        return ours


@pytest.mark.parametrize(("typ", "mode"), [("hash", m) for m in ALL_MODES] + [("btree", "up")])
def test_postmap_build_query_dump(env: Env, typ: str) -> None:
    pm = Pair(env, "postmap", f"build_query_dump[{typ}]")
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


@pytest.mark.parametrize("mode", ["down", "up"])
def test_postmap_default_type_f_flag_and_multiple_maps(env: Env) -> None:
    pm = Pair(env, "postmap", "default_type_f_flag_and_multiple_maps")
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


@pytest.mark.parametrize("mode", ALL_MODES)
def test_postmap_delete_and_incremental(env: Env) -> None:
    pm = Pair(env, "postmap", "delete_and_incremental")
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
    pm.same("-q", "user@example.com", "hash:@DIR@/t")


@pytest.mark.parametrize("mode", ["down"])
def test_postmap_base64_files(env: Env) -> None:
    pm = Pair(env, "postmap", "base64_files")
    pm.write("f1", "hello\n")
    pm.write("f2", "world")
    for d in (env.pf_dir, env.pb_dir):  # file names in the source are relative to the cwd
        pm.write_in(d, "tf", f"k1 {d}/f1, {d}/f2\nk2 {d}/f1 \nk3 {d}/nofile\n")
    pm.same("-F", "hash:@DIR@/tf")
    pm.same("-s", "hash:@DIR@/tf", as_set=True)
    pm.same("-F", "-s", "hash:@DIR@/tf", as_set=True)
    pm.same("-F", "-q", "k1", "hash:@DIR@/tf")
    pm.write("plain", "k not-base64!\n")
    pm.same("hash:@DIR@/plain")
    pm.same("-F", "-q", "k", "hash:@DIR@/plain")


MISSING = [
    ("-q", "x", "hash:@DIR@/missing"),
    ("-s", "hash:@DIR@/missing"),
    ("-d", "x", "hash:@DIR@/missing"),
    ("hash:@DIR@/missing",),
]
ERRORS = [
    ("regexp:@DIR@/t",), ("pcre:@DIR@/t",), ("cidr:@DIR@/t",), ("texthash:@DIR@/t",),
    ("static:x",), ("foo:@DIR@/t",), ("-q", "x", "foo:@DIR@/t"),
    ("-q", "x", "texthash:@DIR@/nofile"),
    ("-q", "dup", "texthash:@DIR@/t"),
    ("-s", "regexp:@DIR@/re"),
    ("-s", "texthash:@DIR@/u"),
    (), ("-x",), ("-q",), ("-d", "a", "-d", "b", "hash:@DIR@/t"), ("-q", "a", "-s", "hash:@DIR@/t"),
    ("-s", "-q", "a", "hash:@DIR@/t"), ("-s", "-d", "a", "hash:@DIR@/t"),
    ("-b", "hash:@DIR@/t"),
]


@pytest.mark.parametrize(("args", "mode"), [(a, m) for a in MISSING for m in ("down", "up")]
                         + [(a, "down") for a in ERRORS])
def test_postmap_errors_and_exit_codes(env: Env, args: tuple[str, ...]) -> None:
    pm = Pair(env, "postmap", "errors")
    pm.write("t", SOURCE)
    pm.write("u", "b 1\n")
    pm.write("re", "/x/ y\n")
    pm.same(*args)


@pytest.mark.parametrize("mode", ["late", "gone"])
def test_postalias_build_query_dump_delete(env: Env) -> None:
    pa = Pair(env, "postalias", "postalias")
    pa.write("aliases", ALIASES)
    rc, _, err = pa.same("hash:@DIR@/aliases")
    assert rc == 0 and "need name:value pair" in err and "name must be local" in err
    for key in ALIAS_KEYS:
        pa.same("-q", key, "hash:@DIR@/aliases")
    pa.same("-q", "-", "hash:@DIR@/aliases", stdin="".join(k + "\n" for k in ALIAS_KEYS))
    pa.same("-s", "hash:@DIR@/aliases", as_set=True)
    pa.same("-i", "hash:@DIR@/aliases", stdin="new: x\nbad\nroot: other\n")
    assert pa.same("-d", "new", "hash:@DIR@/aliases")[0] == 0
    assert pa.same("-d", "new", "hash:@DIR@/aliases")[0] == 1
    pa.same("@DIR@/aliases")
    pa.same("texthash:@DIR@/aliases")
    pa.same("-q", "x")
    pa.same("-F", "x")
