"""The configurations and mail transactions of the address rewriting comparison
(tests/integration/test_rewrite_vs_postfix.py): one set of tables, written in
Postfix's syntax, read alike by a private Postfix and by Postbus.

The tables follow the EXAMPLES and TABLE SEARCH ORDER sections of
canonical(5), virtual(5), relocated(5) and transport(5), plus the cases
around them: extensions with several delimiter characters, addresses that
map to themselves, loops, catch-alls, remote and virtual-mailbox results,
duplicates, DSN attributes, and header forms (phrases, comments, groups,
Resent- headers, lists long enough to fold).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

CANONICAL = """\
# canonical(5): user@domain, user (in local domains), @domain
wietse                  Wietse.Venema
joe@legacy.example      joe.smith@postbus.test
@old.example            @new.example
chain                   chain2
chain2@postbus.test     chain3@postbus.test
multi@postbus.test      first@postbus.test, second@postbus.test
self@postbus.test       self@postbus.test
loop1@postbus.test      loop2@postbus.test
loop2@postbus.test      loop1@postbus.test
ext@postbus.test        extended@postbus.test
"a b"@postbus.test      ab@postbus.test
"""

CANONICAL_RE = """\
/^(.*)@legacy-re\\.example$/   ${1}@postbus.test
"""

VIRTUAL = """\
# virtual(5): a virtual alias domain and its users
virtual-alias.example             anything
postmaster@virtual-alias.example  postmaster
user1@virtual-alias.example       address1
user2@virtual-alias.example       address2, address3@example.net
# redirection of local, remote and virtual mailbox addresses, in any mix
@catchall.example                 catch@postbus.test
remote@postbus.test               someone@example.net
fanout@postbus.test               box1@postbus.test, box2@mbox.example, far@example.net
self@postbus.test                 self@postbus.test, copy@postbus.test
sales@postbus.test                alice@postbus.test, bob@postbus.test
team@postbus.test                 bob@postbus.test, carol@postbus.test
nested@postbus.test               sales@postbus.test, team@postbus.test
joe                               joe@example.net
plus@postbus.test                 plustarget@postbus.test
ploop@postbus.test                ploop-x@postbus.test
other@postbus.test                @example.org
both@postbus.test                 joe.smith@postbus.test
"""

RELOCATED = """\
# relocated(5)
moved@postbus.test      moved@new.example
@gone.example           new.example
oldname                 contact the front desk
"""

TRANSPORT = """\
# transport(5) EXAMPLES
error.example     error:mail for error.example is not deliverable
.error.example    error:5.7.1 no mail for subdomains
retry.example     retry:4.4.1 try again later
slow.example      slow:
"""

#: texthash lines too big for inline:{}: an alias bomb, a long chain, a long result
BOMB_SIZE = 10_000
CHAIN = 1_002


def limits_virtual() -> str:
    lines = ["bomb@postbus.test " + ", ".join(f"b{i}@example.net" for i in range(BOMB_SIZE))]
    lines += [f"chain{i}@postbus.test chain{i + 1}@postbus.test" for i in range(CHAIN)]
    lines += [
        "long@postbus.test " + "x" * 1001 + "@example.net",
        "short@postbus.test " + "x" * 985 + "@example.net",
        "pingpong@postbus.test pongping@postbus.test",
        "pongping@postbus.test pingpong@postbus.test",
        "mirror@postbus.test mirror@postbus.test",
        "list@postbus.test first@postbus.test, missing@postbus.test",
        "fine@postbus.test a@example.net, b@example.net",
    ]
    return "\n".join(lines) + "\n"


def write_tables(directory: Path) -> None:
    """The table files, readable by Postfix's daemons (user postfix)."""
    files = {
        "canonical": CANONICAL, "canonical.re": CANONICAL_RE, "virtual": VIRTUAL,
        "relocated": RELOCATED, "transport": TRANSPORT, "limits": limits_virtual(),
    }
    for name, text in files.items():
        path = directory / name
        path.write_text(text)
        path.chmod(0o644)


def common(directory: Path) -> dict[str, str]:
    """main.cf settings both systems read."""
    return {
        "compatibility_level": "3.6",
        "mail_name": "Postbus",
        "myhostname": "mx.postbus.test",
        "mydomain": "postbus.test",
        "myorigin": "postbus.test",
        "mydestination": "$myhostname, localhost, postbus.test",
        "inet_interfaces": "127.0.0.1",
        "inet_protocols": "ipv4",
        "mynetworks": "127.0.0.0/8",
        "local_recipient_maps": "",
        "alias_maps": "",
        "smtpd_error_sleep_time": "0",
        "smtpd_peername_lookup": "no",
        "recipient_delimiter": "+-",
        "canonical_maps": f"texthash:{directory}/canonical, regexp:{directory}/canonical.re",
        "sender_canonical_maps": "inline:{{sender-old@postbus.test=sender-new@postbus.test}}",
        "recipient_canonical_maps": "inline:{{rcpt-old@postbus.test=rcpt-new@postbus.test}}",
        "virtual_alias_maps": f"texthash:{directory}/virtual",
        "virtual_mailbox_domains": "mbox.example",
        "virtual_mailbox_maps": "inline:{{box2@mbox.example=x}, {known@mbox.example=x}}",
        "relocated_maps": f"texthash:{directory}/relocated",
        "transport_maps": f"texthash:{directory}/transport",
        "masquerade_domains": "!keep.postbus.test, postbus.test",
        "masquerade_exceptions": "root",
    }


def variants(directory: Path) -> dict[str, dict[str, str]]:
    base = common(directory)
    return {
        "local": base,
        # headers of remote clients: remote_header_rewrite_domain, else left alone
        "remote": {**base, "local_header_rewrite_clients": "",
                   "remote_header_rewrite_domain": "domain.invalid"},
        "untouched": {**base, "local_header_rewrite_clients": ""},
        # the classes and duplicate elimination without original recipients
        "classes": {**base, "canonical_classes": "envelope_sender, header_recipient",
                    "masquerade_classes": "envelope_recipient, header_sender",
                    "enable_original_recipient": "no",
                    "propagate_unmatched_extensions": "virtual",
                    "append_dot_mydomain": "yes"},
        # routing by sender: error: and retry: transports answered at RCPT
        "senders": {**base,
                    "sender_dependent_default_transport_maps": (
                        "inline:{{@blocked.example=error:5.7.1 no mail from blocked.example}, "
                        "{<>=error:5.7.0 no bounces here}, {slow@example.org=retry:4.7.0 later}, "
                        "{ok@example.org=DUNNO}, {relay@example.org=smtp:[10.0.0.1]}}"),
                    "sender_dependent_relayhost_maps": "inline:{{@example.org=[10.0.0.2]}}",
                    "relay_domains": "relay.example",
                    "transport_maps": f"texthash:{directory}/transport, "
                                      "inline:{{discard.example=discard:gone}}"},
        # receive_override_options: what a content filter's re-injection smtpd uses
        "overrides": {**base, "receive_override_options":
                      "no_address_mappings, no_unknown_recipient_checks"},
        # expansion limits
        "limits": {**base, "virtual_alias_maps": f"texthash:{directory}/limits"},
        # a table that fails in the middle of an expansion (every key the first table
        # lacks goes on to fail:); not a domain list, or every RCPT would fail
        "failing": {**base, "virtual_alias_maps": f"texthash:{directory}/limits, fail:broken",
                    "virtual_alias_domains": ""},
    }


@dataclass
class Txn:
    """One mail transaction: MAIL FROM, RCPT TOs (with parameters), the message."""

    sender: str
    rcpts: list[str]
    headers: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """MAIL and RCPT commands; a recipient written ``<addr> PARAMS`` keeps its parameters."""
        return [f"MAIL FROM:<{self.sender}>",
                *[f"RCPT TO:{r}" if r.startswith("<") else f"RCPT TO:<{r}>"
                  for r in self.rcpts]]

    def content(self) -> str:
        return "".join(h + "\r\n" for h in self.headers) + "\r\nbody\r\n"


ENVELOPE = Txn("wietse", ["wietse", "joe@legacy.example", "x@old.example", "chain@postbus.test",
                          "self@postbus.test", "ext+foo@postbus.test", "ext-foo@postbus.test",
                          "rcpt-old@postbus.test", "someone@legacy-re.example",
                          '"a b"@postbus.test'])

HEADERS = [
    "From: wietse",
    "Sender: Joe <joe@legacy.example>",
    "Reply-To: user@host.postbus.test, root@host.postbus.test, x@keep.postbus.test",
    "To: info@postbus.test, wietse (Wietse), \"Q. Public\" <x@old.example>",
    "Cc: undisclosed: a@host.postbus.test, b;, remote@example.net",
    "Bcc: someone@legacy-re.example",
    "Subject: wietse@host.postbus.test is not an address here",
    "Errors-To: errors",
    "Return-Receipt-To: <receipt@host.postbus.test>",
    "Mail-Followup-To: list@host.postbus.test",
    "Disposition-Notification-To: dnt",
    "X-Custom: wietse",
    "to: lower case name",
    "TO :  spaced@host.postbus.test",
]
LONG_LIST = "To: " + ", ".join(f"member{i}" for i in range(12))

CASES: dict[str, tuple[str, Txn]] = {
    # envelope senders: local rewriting, canonical, masquerade, the null sender
    "sender_bare": ("local", Txn("wietse", ["someone@example.net"])),
    "sender_masquerade": ("local", Txn("user@host.postbus.test", ["someone@example.net"])),
    "sender_exception": ("local", Txn("root@host.postbus.test", ["someone@example.net"])),
    "sender_kept_subdomain": ("local", Txn("x@keep.postbus.test", ["someone@example.net"])),
    "sender_mailer_daemon": ("local", Txn("MAILER-DAEMON@postbus.test", ["someone@example.net"])),
    "sender_null": ("local", Txn("", ["someone@example.net"])),
    "sender_canonical": ("local", Txn("sender-old@postbus.test", ["someone@example.net"])),
    "sender_domain": ("local", Txn("x@old.example", ["someone@example.net"])),
    "sender_regexp": ("local", Txn("a@legacy-re.example", ["someone@example.net"])),
    "sender_multi": ("local", Txn("multi@postbus.test", ["someone@example.net"])),
    "sender_loop": ("local", Txn("loop1@postbus.test", ["someone@example.net"])),
    # envelope recipients: canonical(5)
    "canonical_envelope": ("local", ENVELOPE),
    # virtual(5)
    "virtual_domain": ("local", Txn("s@example.net", [
        "postmaster@virtual-alias.example", "user1@virtual-alias.example",
        "user2@virtual-alias.example", "nobody@virtual-alias.example",
        "User1@Virtual-Alias.Example"])),
    "virtual_mix": ("local", Txn("s@example.net", [
        "x@catchall.example", "remote@postbus.test", "fanout@postbus.test",
        "self@postbus.test", "joe@postbus.test", "joe@example.com", "other@postbus.test",
        "both@postbus.test"])),
    "virtual_extensions": ("local", Txn("s@example.net", [
        "plus+foo@postbus.test", "plus-foo@postbus.test", "joe+x@postbus.test",
        "remote+tag@postbus.test", "x+y@catchall.example", "owner-plus@postbus.test",
        "plus-request@postbus.test"])),
    # ploop-x@ finds ploop@ with -x unmatched, which propagates: ploop-x-x@...
    "virtual_extension_loop": ("local", Txn("s@example.net", ["ploop@postbus.test"])),
    "virtual_duplicates": ("local", Txn("s@example.net", [
        "sales@postbus.test", "team@postbus.test", "nested@postbus.test",
        "bob@postbus.test", "Bob@postbus.test", "sales@postbus.test"])),
    "virtual_duplicates_orcpt": ("local", Txn("s@example.net", [
        "<sales@postbus.test> ORCPT=rfc822;x@example.org",
        "<team@postbus.test> ORCPT=rfc822;x@example.org",
        "<bob@postbus.test> ORCPT=rfc822;x@example.org",
        "<Bob@postbus.test> ORCPT=rfc822;x@example.org"])),
    "virtual_dsn": ("local", Txn("s@example.net", [
        "<fanout@postbus.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;orig@example.org",
        "<remote@postbus.test> NOTIFY=SUCCESS", "<bob@postbus.test> NOTIFY=SUCCESS",
        "<self@postbus.test> NOTIFY=DELAY"])),
    # relocated(5), transport(5) error and retry, unknown users, at RCPT
    "rcpt_rejects": ("local", Txn("s@example.net", [
        "moved@postbus.test", "moved+x@postbus.test", "anyone@gone.example",
        "oldname@postbus.test", "oldname@example.com", "user@error.example",
        "user@sub.error.example", "user@retry.example", "user@slow.example",
        "unknown@mbox.example", "box2@mbox.example", "known@mbox.example"])),
    # headers in the local context
    "headers_local": ("local", Txn("s@example.net", ["bob@postbus.test"], HEADERS)),
    "headers_long_list": ("local", Txn("s@example.net", ["bob@postbus.test"], [LONG_LIST])),
    "headers_missing": ("local", Txn("wietse", ["bob@postbus.test"], ["Subject: none"])),
    "headers_resent": ("local", Txn("wietse", ["bob@postbus.test"], [
        "From: a@example.net", "Resent-To: wietse", "Resent-Cc: x@old.example",
        "Resent-Sender: user@host.postbus.test", "Resent-Reply-To: bare"])),
    "headers_unchanged": ("local", Txn("s@example.net", ["bob@postbus.test"], [
        "From:   a@example.net  (Some   One)", "To: b@example.net,\r\n\tc@example.net"])),
    "headers_comments": ("local", Txn("s@example.net", ["bob@postbus.test"], [
        "From: (comment) wietse (more)", "To: <@route.example:wietse@postbus.test>",
        'Cc: "quoted, name" <joe@legacy.example>, group:;', "Reply-To: <>"])),
    # remote clients
    "remote_headers": ("remote", Txn("wietse", ["bob@postbus.test"], HEADERS)),
    "remote_missing": ("remote", Txn("wietse", ["bob@postbus.test"], ["Subject: none"])),
    "untouched_headers": ("untouched", Txn("wietse", ["bob@postbus.test"], HEADERS)),
    "untouched_missing": ("untouched", Txn("wietse", ["bob@postbus.test"], ["Subject: x"])),
    # classes, enable_original_recipient = no, propagation only for virtual
    "classes_envelope": ("classes", ENVELOPE),
    "classes_headers": ("classes", Txn("user@host.postbus.test", ["bob@host.postbus.test"],
                                       HEADERS)),
    "classes_duplicates": ("classes", Txn("s@example.net", [
        "sales@postbus.test", "team@postbus.test", "bob@postbus.test",
        "<bob@postbus.test> ORCPT=rfc822;x@example.org", "plus+foo@postbus.test",
        "ext+foo@postbus.test", "user@host"])),
    # routing by sender
    "senders_blocked": ("senders", Txn("x@blocked.example", [
        "someone@example.net", "bob@postbus.test", "user@relay.example", "box2@mbox.example",
        "user@discard.example"])),
    "senders_null": ("senders", Txn("", ["someone@example.net", "bob@postbus.test"])),
    "senders_retry": ("senders", Txn("slow@example.org", ["someone@example.net",
                                                          "user@error.example"])),
    "senders_dunno": ("senders", Txn("ok@example.org", ["someone@example.net"])),
    "senders_relay": ("senders", Txn("relay@example.org", ["someone@example.net"])),
    # receive_override_options
    "overrides_envelope": ("overrides", ENVELOPE),
    "overrides_headers": ("overrides", Txn("user@host.postbus.test", ["fanout@postbus.test"],
                                           HEADERS)),
    "overrides_rcpt": ("overrides", Txn("s@example.net", [
        "moved@postbus.test", "unknown@mbox.example", "nobody@virtual-alias.example",
        "user@error.example"])),
    # limits and failures: nothing half-expanded is queued
    "limits_bomb": ("limits", Txn("s@example.net", ["bomb@postbus.test"])),
    "limits_chain": ("limits", Txn("s@example.net", ["chain0@postbus.test"])),
    "limits_chain_edge": ("limits", Txn("s@example.net", ["chain2@postbus.test"])),
    "limits_chain_ok": ("limits", Txn("s@example.net", ["chain3@postbus.test"])),
    "limits_length": ("limits", Txn("s@example.net", ["long@postbus.test"])),
    "limits_length_ok": ("limits", Txn("s@example.net", ["short@postbus.test"])),
    "limits_pingpong": ("limits", Txn("s@example.net", ["pingpong@postbus.test"])),
    "limits_mirror": ("limits", Txn("s@example.net", ["mirror@postbus.test"])),
    "limits_mixed": ("limits", Txn("s@example.net", ["fine@postbus.test", "bomb@postbus.test",
                                                     "list@postbus.test"])),
    "failing_expansion": ("failing", Txn("s@example.net", ["list@postbus.test"])),
    "failing_mixed": ("failing", Txn("s@example.net", ["bomb@postbus.test", "list@postbus.test",
                                                       "unlisted@postbus.test"])),
}
