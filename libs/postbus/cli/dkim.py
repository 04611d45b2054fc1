"""postbus dkim keygen: a DKIM key pair and its DNS record (≈ opendkim-genkey).

    postbus dkim keygen -d DOMAIN -s SELECTOR [-b BITS] [-D DIRECTORY]

writes ``SELECTOR.private`` (the RSA private key, PEM, mode 0600) and
``SELECTOR.txt`` (the TXT record in zone file syntax) into DIRECTORY, and
prints the record. The key is made by the openssl tool, as opendkim-genkey
does. An existing key file is never overwritten. The private key's path
goes into postbus_dkim_key_table as ``DOMAIN:SELECTOR:PATH``.
"""

from __future__ import annotations

import argparse
import base64
import os
import shutil
import subprocess
import sys
from pathlib import Path

PROG = "postbus dkim"


def txt_record(domain: str, selector: str, public_der: bytes) -> str:
    """The record as opendkim-genkey writes it: strings of at most 250 characters."""
    value = "v=DKIM1; h=sha256; k=rsa; p=" + base64.b64encode(public_der).decode()
    chunks = [value[i:i + 250] for i in range(0, len(value), 250)]
    quoted = "\n\t  ".join(f'"{c}"' for c in chunks)
    return f"{selector}._domainkey\tIN\tTXT\t( {quoted} )  ; ----- DKIM key {selector} " \
           f"for {domain}\n"


def keygen(domain: str, selector: str, bits: int, directory: Path) -> tuple[Path, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl tool is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    private = directory / f"{selector}.private"
    if private.exists():
        raise RuntimeError(f"{private} exists; not overwritten")
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        made = subprocess.run(
            [openssl, "genpkey", "-algorithm", "RSA", "-pkeyopt", f"rsa_keygen_bits:{bits}"],
            capture_output=True, check=True)
        os.write(fd, made.stdout)
    except (subprocess.CalledProcessError, OSError):
        os.close(fd)
        private.unlink()
        raise
    os.close(fd)
    public = subprocess.run([openssl, "pkey", "-in", str(private), "-pubout", "-outform", "DER"],
                            capture_output=True, check=True).stdout
    record = txt_record(domain, selector, public)
    (directory / f"{selector}.txt").write_text(record)
    return private, record


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG)
    parser.add_argument("-c", dest="config_dir", help="(ignored: keygen reads no main.cf)")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("keygen", help="make a DKIM key pair and its TXT record")
    gen.add_argument("-d", "--domain", required=True)
    gen.add_argument("-s", "--selector", default="default")
    gen.add_argument("-b", "--bits", type=int, default=2048)
    gen.add_argument("-D", "--directory", default=".")
    args = parser.parse_args(argv)
    if not 1024 <= args.bits <= 8192:
        print(f"{PROG}: fatal: key size {args.bits}: use 1024 to 8192 bits", file=sys.stderr)
        return 1
    try:
        private, record = keygen(args.domain.lower().rstrip("."), args.selector, args.bits,
                                 Path(args.directory))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"{PROG}: fatal: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(record)
    print(f"{PROG}: private key in {private}; key table entry: "
          f"{args.domain.lower().rstrip('.')}:{args.selector}:{private.resolve()}", file=sys.stderr)
    return 0
