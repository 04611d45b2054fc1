"""The MIME walk of header and body checks (≈ mime_state.c as cleanup drives it).

:func:`inspect` reads a CRLF message line by line with Postfix's MIME state
machine: the primary header block, then the body; a ``multipart/*``
Content-Type pushes its boundary (up to mime_nesting_limit deep, each
boundary cut at mime_boundary_length_limit) and each part starts with a
header block (checked with mime_header_checks); a ``message/rfc822`` part
starts with the attachment's headers (nested_header_checks). MIME headers
(Content-Type and the rest) are always mime_header_checks' wherever they
are. A logical header is matched as one string, its lines joined by
``\\n``; body lines one at a time, in pieces of line_length_limit bytes,
while their offset in their part is below body_checks_size_limit. Lines
are never recursed into, so a MIME bomb costs one pass.

The walk keeps a list of edits (IGNORE, REPLACE, PREPEND) and applies them
at the end: a message no action changes is returned as it came.
"""

from __future__ import annotations

import re

from postbus.cleanup.checks import MULTIPART, NESTED, PRIMARY, Inspection

_NAME = re.compile(rb"^([!-9;-~]+)[ \t]*:")
_TSPECIAL = r'\s()<>@,;:\\"/\[\]?='
_CTYPE = re.compile(rf"^[ \t\n]*([^{_TSPECIAL}]+)[ \t\n]*(?:/[ \t\n]*([^{_TSPECIAL}]+))?")
_BOUNDARY = re.compile(
    rf';[ \t\n]*boundary[ \t\n]*=[ \t\n]*(?:"((?:[^"\\]|\\.)*)"|([^{_TSPECIAL}]+))', re.I)
_CONTENT_TYPE = re.compile(rb"^content-type[ \t]*:", re.I)

Edit = tuple[int, int, bytes]


def _dec(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _enc(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class _Walk:
    """One message's MIME state (≈ MIME_STATE)."""

    def __init__(self, insp: Inspection, data: bytes, top: int = 0) -> None:
        self.insp = insp
        self.data = data
        self.top = top  # the receiver's own headers end here: no header spans it
        checks = insp.checks
        self.mime = checks.mime
        self.header_tables = any(n in checks.tables for n in (PRIMARY, MULTIPART, NESTED))
        self.body_table = "body_checks" in checks.tables
        self.line_limit = checks.line_limit
        self.edits: list[Edit] = []
        self.state = PRIMARY  # or MULTIPART, NESTED (header blocks), or "body"
        self.ctype, self.stype = "text", "plain"
        self.stack: list[tuple[bytes, str, str]] = []  # boundary, default type, subtype
        self.body_offset = 0

    async def run(self) -> None:
        data, n, pos = self.data, len(self.data), 0
        start = -1  # where the header being read starts
        lines: list[bytes] = []
        while pos < n:
            end = data.find(b"\r\n", pos)
            nxt = n if end < 0 else end + 2
            line = data[pos : n if end < 0 else end]
            if self.state != "body":
                if lines and line[:1] in (b" ", b"\t") and pos != self.top:
                    lines.append(line)
                    pos = nxt
                    continue
                if lines:
                    await self.header(start, pos, lines)
                    lines = []
                if _NAME.match(line):
                    start, lines = pos, [line]
                    pos = nxt
                    continue
                self.end_of_headers(line)
            await self.body(line, pos)
            pos = nxt
        if lines:
            await self.header(start, n, lines)

    async def header(self, start: int, end: int, lines: list[bytes]) -> None:
        """One logical header: MIME bookkeeping, then the checks of its class."""
        raw = b"\n".join(lines)
        if self.mime and _CONTENT_TYPE.match(raw):
            self.content_type(_dec(raw[raw.find(b":") + 1 :]), _dec(raw))
        if not self.header_tables:
            return
        m = _NAME.match(raw)
        assert m is not None
        text = _dec(m.group(1) + raw[m.end() - 1 :])
        result, before = await self.insp.header(self.state, text)
        if result == text and not before:
            return
        out = [_enc(h.replace("\n", "\r\n")) + b"\r\n" for h in before]
        if result == text:
            out.append(self.data[start:end])
        elif result is not None:
            out.append(_enc(result.replace("\n", "\r\n")) + b"\r\n")
        self.edits.append((start, end, b"".join(out)))

    def content_type(self, value: str, header: str) -> None:
        """≈ mime_state_content_type(): the part's type; multipart pushes boundaries."""
        m = _CTYPE.match(value)
        if m is None:
            self.ctype = "other"
            return
        ctype, stype = m.group(1).lower(), (m.group(2) or "").lower()
        if ctype == "text":
            self.ctype, self.stype = "text", stype
        elif ctype == "message":
            self.ctype, self.stype = "message", stype
        elif ctype == "multipart":
            self.ctype, self.stype = "multipart", stype
            default = ("message", "rfc822") if stype == "digest" else ("text", "plain")
            checks = self.insp.checks
            for quoted, token in _BOUNDARY.findall(value[m.end() :]):
                bound = re.sub(r"\\(.)", r"\1", quoted) if quoted else token
                if len(self.stack) - 1 > checks.nesting_limit:  # nesting_level starts at -1
                    if checks.report_nesting:
                        self.insp.mime_error("MIME nesting exceeds safety limit", header)
                    continue
                self.stack.append((_enc(bound)[: checks.boundary_limit], *default))
        else:
            self.ctype = "other"

    def end_of_headers(self, line: bytes) -> None:
        """A line that is no header ends the block (≈ the end of a header state)."""
        if line:  # garbage: the body starts here
            self.state = "body"
            return
        self.body_offset = 0
        if self.ctype == "message" and self.stype in ("rfc822", "global"):
            self.state = NESTED
            self.ctype, self.stype = "text", "plain"
        elif self.ctype == "multipart":
            self.state = "body"
            self.ctype, self.stype = "other", "other"
        else:
            self.state = "body"

    async def body(self, line: bytes, pos: int) -> None:
        """A body line: boundaries change the state; the line goes to body_checks."""
        if self.stack and line[:2] == b"--" and len(line) > 2:
            for depth in range(len(self.stack) - 1, -1, -1):
                bound, dtype, dsub = self.stack[depth]
                if line.startswith(bound, 2):
                    del self.stack[depth + 1 :]
                    if line.startswith(b"--", 2 + len(bound)):
                        self.stack.pop()
                        self.state, self.ctype, self.stype = "body", "other", "other"
                    else:
                        self.state, self.ctype, self.stype = MULTIPART, dtype, dsub
                    break
        if not self.body_table:
            return
        limit = self.line_limit
        if len(line) <= limit:
            await self.body_piece(line, pos, whole=True)
            return
        for at in range(0, len(line), limit):
            await self.body_piece(line[at : at + limit], pos + at, whole=False)

    async def body_piece(self, piece: bytes, pos: int, *, whole: bool) -> None:
        text = _dec(piece)
        offset = self.body_offset
        self.body_offset += len(piece) + 1
        result, before = await self.insp.body(text, offset)
        if result == text and not before:
            return
        out = b"".join(_enc(b) + b"\r\n" for b in before)
        end = pos + len(piece)
        if result is None and whole:
            end += 2 if self.data[end : end + 2] == b"\r\n" else 0
        elif result is not None:
            out += _enc(result)
        if result == text:
            self.edits.append((pos, pos, out))
        else:
            self.edits.append((pos, end, out))


def _apply(data: bytes, edits: list[Edit], lo: int, hi: int) -> bytes:
    out: list[bytes] = []
    at = lo
    for start, end, new in edits:
        out.append(data[at:start])
        out.append(new)
        at = end
    out.append(data[at:hi])
    return b"".join(out)


async def inspect(insp: Inspection, data: bytes, top: int = 0) -> tuple[bytes, bytes] | None:
    """Check a CRLF message whose first ``top`` bytes are headers the receiver added
    (smtpd's Received:); returns those and the rest as the actions left them, or
    None when nothing changed. The decisions are in ``insp.finish()``."""
    walk = _Walk(insp, data, top)
    await walk.run()
    if not walk.edits:
        return None
    edits = sorted(walk.edits, key=lambda e: (e[0], e[1]))
    head = [e for e in edits if e[0] < top]
    rest = [e for e in edits if e[0] >= top]
    return _apply(data, head, 0, top), _apply(data, rest, top, len(data))
