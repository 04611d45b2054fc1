"""The parameter registry (≈ mail_params.h): every main.cf parameter Postbus knows.

Each :class:`Param` carries the name verbatim, the default exactly as
``postconf -d`` of Postfix 3.7 prints it (unexpanded, so ``myorigin`` is
``$myhostname``), the value kind used for validation, bounds and a one-line
doc.  The config loader, ``postbus postconf -d`` and the generated docs all
read this table; no other module spells a default.

Three defaults depend on the host and are computed by :func:`host_default`
(myhostname, mydomain, mynetworks).  Three defaults deliberately differ from
Postfix (DIFFERS_FROM_POSTFIX): ``config_directory`` is ``/etc/postbus``,
``mail_name`` is our product's name, Postbus, and ``syslog_name`` follows it.
Parameters that only Postbus has carry the ``postbus_`` prefix.

The table below holds the parameters Postbus has code for (and a few it
documents by hand); every other Postfix 3.7 parameter comes from the
generated :mod:`postbus.params_postfix`, so ``postbus postconf -d`` knows all
of them.  Which parameters Postbus honours is :mod:`postbus.param_status`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, cast

from postbus.params_postfix import POSTFIX_PARAMS, POSTFIX_RAW

__all__ = [
    "DIFFERS_FROM_POSTFIX",
    "HOST_DEPENDENT",
    "PARAMS",
    "RAW_PARAMS",
    "Kind",
    "Param",
    "default_value",
    "host_default",
]

Kind = Literal["str", "int", "bool", "time", "size", "list"]


@dataclass(frozen=True)
class Param:
    """One configuration parameter."""

    name: str
    default: str
    kind: Kind
    doc: str
    min: int | None = None  # bounds; in seconds for kind "time"
    max: int | None = None
    time_unit: str = "s"  # unit of a bare number, as in conv_time()


def _p(
    name: str,
    kind: Kind,
    default: str,
    doc: str,
    *,
    min: int | None = None,
    max: int | None = None,
    time_unit: str = "s",
) -> Param:
    return Param(name, default, kind, doc, min, max, time_unit)


#: Parameters whose default is computed on the host (see host_default()).  Found
#: by comparing ``postconf -d`` under another host name and network namespace:
#: only these differ (and postconf's own process_id).
HOST_DEPENDENT = frozenset({"myhostname", "mydomain", "mynetworks"})

#: Parameters kept raw at load (≈ CONFIG_RAW_TABLE): their ``$names`` are
#: delivery- or reply-time attributes ($home, $rbl_code, ...) that the
#: daemon expands itself, so Config.get() returns them unexpanded.
RAW_PARAMS = frozenset(
    {"forward_path", "mailbox_command", "luser_relay", "smtpd_reject_footer", "default_rbl_reply"}
) | POSTFIX_RAW

#: Parameters whose Postbus default is not Postfix's, and why.
DIFFERS_FROM_POSTFIX: dict[str, str] = {
    "config_directory": "Postbus reads its configuration from /etc/postbus",
    "mail_name": "the banner and bounces name the software that runs: Postbus",
    "syslog_name": "log lines read postbus/smtpd[pid] (pflogsumm --syslog-name=postbus)",
}

_TABLE: tuple[Param, ...] = (
    # -- Identity and addressing -----------------------------------
    _p("compatibility_level", "str", "0",
       "Backwards-compatibility level; old defaults apply below the level that changed them."),
    _p("mail_name", "str", "Postbus",
       "Mail system name in smtpd_banner and Received headers: Postbus, our product's name."),
    _p("mail_version", "str", "3.7.11",
       "Version of the Postfix configuration language Postbus implements."),
    _p("mail_owner", "str", "postfix", "Owner of the queue and of the daemon processes."),
    _p("myhostname", "str", "",
       "Fully-qualified name of this mail host (computed from the host name when unset)."),
    _p("mydomain", "str", "", "Internet domain of this host (myhostname minus its first label)."),
    _p("myorigin", "str", "$myhostname",
       "Domain appended to locally-posted unqualified sender addresses."),
    _p("mydestination", "list", "$myhostname, localhost.$mydomain, localhost",
       "Domains delivered locally (the local domain address class)."),
    _p("mynetworks", "list", "",
       "Trusted client networks for permit_mynetworks (default from mynetworks_style)."),
    _p("mynetworks_style", "str", "${{$compatibility_level} <level {2} ? {subnet} : {host}}",
       "How to derive mynetworks when it is not set: host, subnet or class."),
    _p("inet_interfaces", "list", "all",
       "Local addresses the SMTP server listens on; all, loopback-only or a list."),
    _p("inet_protocols", "list", "all", "Address families to use: all, ipv4, ipv6."),
    _p("proxy_interfaces", "list", "",
       "Addresses this host receives mail on through a proxy or NAT."),
    _p("relay_domains", "list", "${{$compatibility_level} <level {2} ? {$mydestination} : {}}",
       "Domains this host relays mail to (the relay domain address class)."),
    _p("relayhost", "str", "", "Next-hop for non-local mail instead of direct MX delivery."),
    _p("fast_flush_domains", "list", "$relay_domains",
       "Destinations whose deferred mail postqueue -s (and ETRN) may flush."),
    _p("relay_recipient_maps", "list", "",
       "Valid recipients in relay_domains; empty means all are valid."),
    _p("append_dot_mydomain", "bool", "${{$compatibility_level} <level {1} ? {yes} : {no}}",
       "Append .$mydomain to addresses of the form user@host."),
    _p("append_at_myorigin", "bool", "yes", "Append @$myorigin to addresses without a domain."),
    _p("swap_bangpath", "bool", "yes", "Rewrite site!user into user@site."),
    _p("allow_percent_hack", "bool", "yes", "Rewrite user%domain into user@domain."),
    _p("masquerade_domains", "list", "",
       "Domains that hide their subdomains in rewritten addresses."),
    _p("masquerade_classes", "list", "envelope_sender, header_sender, header_recipient",
       "Address classes that masquerading applies to."),
    _p("masquerade_exceptions", "list", "", "Local parts that are never masqueraded."),
    _p("parent_domain_matches_subdomains", "list",
       "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,"
       "qmqpd_authorized_clients,relay_domains,smtpd_access_maps",
       "Features where a domain name also matches its subdomains."),
    _p("resolve_dequoted_address", "bool", "yes",
       "Resolve the address after removing quotes around the local part."),
    _p("resolve_null_domain", "bool", "no",
       "Resolve user@ (empty domain) as an address in the default domain class."),
    _p("resolve_numeric_domain", "bool", "no",
       "Resolve user@ipaddress as user@[ipaddress]."),
    _p("allow_untrusted_routing", "bool", "no",
       "Relay mail with sender-specified routing (user%domain@domain) for untrusted clients."),
    _p("show_user_unknown_table_name", "bool", "yes",
       "Name the table in \"User unknown\" replies and bounces."),
    _p("remote_header_rewrite_domain", "str", "",
       "Domain appended to incomplete header addresses of remote clients."),
    _p("local_header_rewrite_clients", "list", "permit_inet_interfaces",
       "Clients whose message headers are rewritten as local."),
    _p("disable_dns_lookups", "bool", "no",
       "Obsolete switch to turn off DNS lookups; see smtp_dns_support_level."),
    # -- Directories and files -------------------------------------
    _p("config_directory", "str", "/etc/postbus", "Directory holding main.cf and master.cf."),
    _p("queue_directory", "str", "/var/spool/postfix",
       "Root of the Postfix queue (the JetStream data in Postbus)."),
    _p("data_directory", "str", "/var/lib/postfix",
       "Directory for data files that are not queue files."),
    _p("daemon_directory", "str", "/usr/lib/postfix/sbin",
       "Directory with the Postfix daemon programs."),
    _p("command_directory", "str", "/usr/sbin", "Directory with the administrative commands."),
    _p("meta_directory", "str", "/etc/postfix", "Directory with non-executable support files."),
    _p("service_throttle_time", "time", "60s",
       "How long the master waits before it starts again a service that failed at startup.",
       min=1),
    # -- Queue -----------------------------------------------------
    _p("maximal_queue_lifetime", "time", "5d",
       "How long a deferred message stays queued before it bounces.", min=0, time_unit="d"),
    _p("bounce_queue_lifetime", "time", "5d",
       "How long a deferred bounce message stays queued.", min=0, time_unit="d"),
    _p("minimal_backoff_time", "time", "300s",
       "Minimal time between delivery attempts of a deferred message.", min=1),
    _p("maximal_backoff_time", "time", "4000s",
       "Maximal time between delivery attempts of a deferred message.", min=1),
    _p("queue_run_delay", "time", "300s", "Time between scans of the deferred queue.", min=1),
    _p("delay_warning_time", "time", "0h",
       "Time after which the sender is warned about a delay; 0 disables it.", min=0, time_unit="h"),
    _p("enable_long_queue_ids", "bool", "no", "Use long, non-repeating queue IDs."),
    _p("hash_queue_names", "list", "deferred, defer",
       "Queues that are split into hashed subdirectories."),
    _p("hash_queue_depth", "int", "1", "Number of subdirectory levels of hashed queues.", min=1),
    _p("queue_minfree", "size", "0",
       "Free space a queue must keep before mail is accepted.", min=0),
    _p("qmgr_message_active_limit", "int", "20000",
       "Maximal number of messages in the active queue.", min=1),
    _p("qmgr_message_recipient_limit", "int", "20000",
       "Maximal number of recipients held in memory by the queue manager.", min=1),
    _p("initial_destination_concurrency", "int", "5",
       "Initial number of parallel deliveries to one destination.", min=1),
    _p("default_destination_concurrency_limit", "int", "20",
       "Default maximal number of parallel deliveries to one destination.", min=0),
    _p("default_destination_recipient_limit", "int", "50",
       "Default maximal number of recipients per delivery request.", min=0),
    _p("default_destination_rate_delay", "time", "0s",
       "Default delay between deliveries to one destination.", min=0),
    _p("default_recipient_limit", "int", "20000",
       "Default maximal number of recipients held in memory per transport.", min=1),
    _p("smtp_destination_concurrency_limit", "int", "$default_destination_concurrency_limit",
       "Parallel deliveries per destination for the smtp transport.", min=0),
    _p("smtp_destination_recipient_limit", "int", "$default_destination_recipient_limit",
       "Recipients per delivery request for the smtp transport.", min=0),
    _p("lmtp_destination_concurrency_limit", "int", "$default_destination_concurrency_limit",
       "Parallel deliveries per destination for the lmtp transport.", min=0),
    _p("lmtp_destination_recipient_limit", "int", "$default_destination_recipient_limit",
       "Recipients per delivery request for the lmtp transport.", min=0),
    _p("local_destination_concurrency_limit", "int", "2",
       "Parallel deliveries per recipient for the local transport.", min=0),
    _p("local_destination_recipient_limit", "int", "1",
       "Recipients per delivery request for the local transport.", min=0),
    _p("virtual_destination_concurrency_limit", "int", "$default_destination_concurrency_limit",
       "Parallel deliveries per destination for the virtual transport.", min=0),
    _p("virtual_destination_recipient_limit", "int", "$default_destination_recipient_limit",
       "Recipients per delivery request for the virtual transport.", min=0),
    _p("relay_destination_concurrency_limit", "int", "$default_destination_concurrency_limit",
       "Parallel deliveries per destination for the relay transport.", min=0),
    _p("relay_destination_recipient_limit", "int", "$default_destination_recipient_limit",
       "Recipients per delivery request for the relay transport.", min=0),
    _p("default_process_limit", "int", "100",
       "Default maximal number of processes (replicas) per service.", min=0),
    _p("default_delivery_slot_cost", "int", "5",
       "How often a message may preempt others (qmgr scheduler).", min=0),
    _p("transport_retry_time", "time", "60s",
       "Time between attempts to contact a broken delivery transport.", min=1),
    # -- Size limits -----------------------------------------------
    _p("message_size_limit", "size", "10240000",
       "Maximal size in bytes of a message including envelope information.", min=0),
    _p("line_length_limit", "size", "2048", "Maximal length of a line before it is broken.", min=1),
    _p("header_size_limit", "size", "102400",
       "Maximal size of one message header; excess is discarded.", min=1),
    _p("header_address_token_limit", "int", "10240",
       "Maximal number of address tokens in one header.", min=1),
    _p("mailbox_size_limit", "size", "51200000",
       "Maximal size of a mailbox file or maildir message written by local.", min=0),
    _p("virtual_mailbox_limit", "size", "51200000",
       "Maximal size of a mailbox written by virtual.", min=0),
    _p("body_checks_size_limit", "size", "51200",
       "Amount of body text per part that body_checks inspects.", min=0),
    # -- Transports and routing ------------------------------------
    _p("default_transport", "str", "smtp",
       "Transport for destinations not matched by another address class."),
    _p("relay_transport", "str", "relay", "Transport for the relay domain address class."),
    _p("local_transport", "str", "local:$myhostname",
       "Transport for the local domain address class."),
    _p("virtual_transport", "str", "virtual",
       "Transport for the virtual mailbox domain address class."),
    _p("transport_maps", "list", "",
       "Tables mapping recipient domains or addresses to transport:nexthop."),
    _p("content_filter", "str", "", "After-queue content filter transport:destination."),
    _p("empty_address_recipient", "str", "MAILER-DAEMON",
       "Recipient of mail addressed to the null address."),
    _p("fallback_transport", "str", "",
       "Transport for local recipients not found in the UNIX passwd database."),
    _p("default_filter_nexthop", "str", "", "Next hop of a content_filter that names none."),
    _p("receive_override_options", "list", "",
       "Features to turn off for mail that comes back from a content filter."),
    # -- Address rewriting -----------------------------------------
    _p("canonical_maps", "list", "",
       "Address mapping tables for sender and recipient, envelope and header."),
    _p("sender_canonical_maps", "list", "", "Address mapping tables for sender addresses."),
    _p("recipient_canonical_maps", "list", "", "Address mapping tables for recipient addresses."),
    _p("canonical_classes", "list",
       "envelope_sender, envelope_recipient, header_sender, header_recipient",
       "Address classes that canonical_maps applies to."),
    _p("sender_canonical_classes", "list", "envelope_sender, header_sender",
       "Address classes that sender_canonical_maps applies to."),
    _p("recipient_canonical_classes", "list", "envelope_recipient, header_recipient",
       "Address classes that recipient_canonical_maps applies to."),
    _p("relocated_maps", "list", "",
       "Tables of users that have moved, for \"user has moved\" bounces."),
    _p("virtual_alias_maps", "list", "$virtual_maps", "Virtual aliases for any address class."),
    _p("virtual_alias_domains", "list", "$virtual_alias_maps",
       "Domains of the virtual alias address class."),
    _p("virtual_alias_expansion_limit", "int", "1000",
       "Maximal number of addresses one virtual alias expands to.", min=1),
    _p("virtual_alias_recursion_limit", "int", "1000",
       "Maximal nesting depth of virtual alias expansion.", min=1),
    _p("virtual_alias_address_length_limit", "int", "1000",
       "Maximal length of an address produced by virtual alias expansion.", min=1),
    _p("propagate_unmatched_extensions", "list", "canonical, virtual",
       "Lookup tables that copy an unmatched address extension to the result."),
    _p("recipient_delimiter", "str", "",
       "Characters that separate a user name from an address extension."),
    _p("owner_request_special", "bool", "yes",
       "Treat owner-list and list-request addresses specially."),
    # -- Local delivery --------------------------------------------
    _p("alias_maps", "list", "hash:/etc/aliases, nis:mail.aliases",
       "Alias tables used by local delivery."),
    _p("alias_database", "list", "hash:/etc/aliases", "Alias databases built by newaliases."),
    _p("home_mailbox", "str", "",
       "Mailbox path relative to the home directory; ends in / for Maildir."),
    _p("mail_spool_directory", "str", "/var/mail",
       "Directory of UNIX-style mailboxes; ends in / for Maildir."),
    _p("mailbox_command", "str", "", "External command that local uses for mailbox delivery."),
    _p("mailbox_transport", "str", "", "Transport that local hands mailbox delivery to."),
    _p("forward_path", "list", "$home/.forward${recipient_delimiter}${extension}, $home/.forward",
       "Where local looks for .forward files."),
    _p("allow_mail_to_commands", "list", "alias, forward",
       "Aliases or .forward files that may deliver to commands."),
    _p("allow_mail_to_files", "list", "alias, forward",
       "Aliases or .forward files that may deliver to files."),
    _p("local_recipient_maps", "list", "proxy:unix:passwd.byname $alias_maps",
       "Valid local recipients; empty disables recipient checks for local domains."),
    _p("local_command_shell", "str", "",
       "Shell that runs commands from aliases and .forward files."),
    _p("biff", "bool", "yes", "Notify comsat about new mail."),
    _p("expand_owner_alias", "bool", "no",
       "Use the value of owner-alias instead of the address itself."),
    _p("mailbox_delivery_lock", "list", "fcntl, dotlock",
       "File locking used for mailbox delivery."),
    _p("luser_relay", "str", "", "Destination for unknown local recipients."),
    _p("strict_mailbox_ownership", "bool", "yes",
       "Defer delivery when a mailbox file is not owned by its recipient."),
    # -- Virtual mailbox delivery ----------------------------------
    _p("virtual_mailbox_domains", "list", "$virtual_mailbox_maps",
       "Domains of the virtual mailbox address class."),
    _p("virtual_mailbox_maps", "list", "",
       "Valid virtual mailbox addresses and their mailbox paths."),
    _p("virtual_mailbox_base", "str", "", "Prefix of every virtual_mailbox_maps path."),
    _p("virtual_uid_maps", "list", "", "User ID of each virtual mailbox."),
    _p("virtual_gid_maps", "list", "", "Group ID of each virtual mailbox."),
    _p("virtual_minimum_uid", "int", "100",
       "Minimal user ID that virtual accepts from virtual_uid_maps.", min=1),
    _p("virtual_mailbox_lock", "list", "fcntl, dotlock",
       "File locking used by virtual for mailbox delivery."),
    # -- Content inspection ----------------------------------------
    _p("header_checks", "list", "", "Pattern tables for primary message headers."),
    _p("body_checks", "list", "", "Pattern tables for body lines."),
    _p("mime_header_checks", "list", "$header_checks",
       "Pattern tables for MIME headers; default $header_checks."),
    _p("nested_header_checks", "list", "$header_checks",
       "Pattern tables for headers of attached messages; default $header_checks."),
    _p("milter_protocol", "str", "6", "Milter protocol version."),
    _p("milter_default_action", "str", "tempfail",
       "What to do when a milter is unavailable: accept, reject, tempfail, quarantine."),
    _p("milter_connect_timeout", "time", "30s", "Time limit for connecting to a milter.", min=1),
    _p("milter_command_timeout", "time", "30s", "Time limit for a milter command.", min=1),
    _p("milter_content_timeout", "time", "300s",
       "Time limit for sending message content to a milter.", min=1),
    _p("milter_macro_daemon_name", "str", "$myhostname",
       "Value of the {daemon_name} milter macro."),
    _p("non_smtpd_milters", "list", "", "Milters for mail that does not arrive over SMTP."),
    _p("disable_mime_input_processing", "bool", "no",
       "Treat the message body as plain text, not MIME."),
    _p("strict_rfc821_envelopes", "bool", "no", "Require RFC 821 syntax in MAIL FROM and RCPT TO."),
    # -- Notifications ---------------------------------------------
    _p("notify_classes", "list", "resource, software",
       "Problem classes reported to the postmaster."),
    _p("bounce_notice_recipient", "str", "postmaster",
       "Recipient of postmaster notices about bounced mail."),
    _p("2bounce_notice_recipient", "str", "postmaster", "Recipient of undeliverable bounces."),
    _p("delay_notice_recipient", "str", "postmaster",
       "Recipient of postmaster notices about delayed mail."),
    _p("error_notice_recipient", "str", "postmaster",
       "Recipient of postmaster notices about errors."),
    _p("double_bounce_sender", "str", "double-bounce",
       "Sender address of postmaster notifications that must not bounce."),
    _p("bounce_size_limit", "size", "50000",
       "Maximal amount of the original message returned in a bounce.", min=1),
    _p("bounce_template_file", "str", "", "File with custom bounce message templates."),
    # -- Logging ---------------------------------------------------
    _p("syslog_name", "str", "${multi_instance_name?{$multi_instance_name}:{postbus}}",
       "Prefix of log records; default ${multi_instance_name?{$multi_instance_name}:{postfix}}."),
    _p("syslog_facility", "str", "mail", "Syslog facility of log records."),
    _p("maillog_file", "str", "", "File to log to instead of syslog."),
    _p("maillog_file_prefixes", "list", "/var, /dev/stdout", "Allowed prefixes of maillog_file."),
    _p("debug_peer_list", "list", "", "Clients or servers to log in more detail."),
    _p("debug_peer_level", "int", "2", "Verbosity added for debug_peer_list matches.", min=1),
    _p("respectful_logging", "bool", "${{$compatibility_level} <level {3.6} ? {no} : {yes}}",
       "Avoid words that imply accusation or blame in log messages."),
    _p("multi_instance_name", "str", "", "Name of this instance in a multi-instance setup."),
    # -- SMTP server -----------------------------------------------
    _p("smtpd_banner", "str", "$myhostname ESMTP $mail_name",
       "Text after 220 in the SMTP greeting."),
    _p("smtpd_client_restrictions", "list", "", "Restrictions on the client connection."),
    _p("smtpd_helo_restrictions", "list", "", "Restrictions on HELO/EHLO."),
    _p("smtpd_sender_restrictions", "list", "", "Restrictions on MAIL FROM."),
    _p("smtpd_relay_restrictions", "list",
       "${{$compatibility_level} <level {1} ? {} : {permit_mynetworks, "
       "permit_sasl_authenticated, defer_unauth_destination}}",
       "Relay-control restrictions on RCPT TO, evaluated before smtpd_recipient_restrictions."),
    _p("smtpd_recipient_restrictions", "list", "", "Restrictions on RCPT TO."),
    _p("smtpd_data_restrictions", "list", "", "Restrictions on DATA."),
    _p("smtpd_end_of_data_restrictions", "list", "", "Restrictions after the message content."),
    _p("smtpd_etrn_restrictions", "list", "", "Restrictions on ETRN."),
    _p("smtpd_restriction_classes", "list", "", "User-defined names for lists of restrictions."),
    _p("smtpd_delay_reject", "bool", "yes",
       "Wait until RCPT TO before applying client, helo and sender restrictions."),
    _p("smtpd_helo_required", "bool", "no", "Require HELO or EHLO before MAIL FROM."),
    _p("smtpd_timeout", "time", "${stress?{10}:{300}}s",
       "Time limit for the client to send a request or receive a response.", min=1),
    _p("smtpd_recipient_limit", "int", "1000", "Maximal number of recipients per message.", min=1),
    _p("smtpd_recipient_overshoot_limit", "int", "1000",
       "Recipients over the limit counted towards the hard error limit.", min=1),
    _p("smtpd_soft_error_limit", "int", "10", "Errors after which each reply is delayed.", min=0),
    _p("smtpd_hard_error_limit", "int", "${stress?{1}:{20}}",
       "Errors after which the connection is closed.", min=0),
    _p("smtpd_error_sleep_time", "time", "1s",
       "Delay of an error reply below the soft error limit.", min=0),
    _p("smtpd_junk_command_limit", "int", "${stress?{1}:{100}}",
       "Maximal number of NOOP, VRFY, ETRN or RSET per session.", min=1),
    _p("smtpd_history_flush_threshold", "int", "100",
       "Lines of client history kept for postmaster error reports.", min=0),
    _p("smtpd_reject_unlisted_recipient", "bool", "yes",
       "Reject RCPT TO addresses that are not known in their domain class."),
    _p("smtpd_reject_unlisted_sender", "bool", "no",
       "Reject MAIL FROM addresses that are not known in their domain class."),
    _p("smtpd_sender_login_maps", "list", "",
       "Owners of MAIL FROM addresses, for reject_sender_login_mismatch."),
    _p("smtpd_null_access_lookup_key", "str", "<>",
       "Lookup key used for the null sender in access maps."),
    _p("smtpd_client_connection_count_limit", "int", "50",
       "Simultaneous connections one client may make.", min=0),
    _p("smtpd_client_connection_rate_limit", "int", "0",
       "Connections one client may make per anvil_rate_time_unit.", min=0),
    _p("smtpd_client_message_rate_limit", "int", "0",
       "Messages one client may send per anvil_rate_time_unit.", min=0),
    _p("smtpd_client_recipient_rate_limit", "int", "0",
       "Recipients one client may send per anvil_rate_time_unit.", min=0),
    _p("smtpd_client_event_limit_exceptions", "list",
       "${smtpd_client_connection_limit_exceptions:$mynetworks}",
       "Clients exempt from connection and rate limits."),
    _p("anvil_rate_time_unit", "time", "60s", "Time unit of the client rate limits.", min=1),
    _p("smtpd_policy_service_timeout", "time", "100s",
       "Time limit for a policy server request.", min=1),
    _p("smtpd_policy_service_max_idle", "time", "300s",
       "Idle time after which a policy server connection is closed.", min=1),
    _p("smtpd_policy_service_max_ttl", "time", "1000s",
       "Age after which a policy server connection is closed.", min=1),
    _p("smtpd_policy_service_default_action", "str", "451 4.3.5 Server configuration problem",
       "Reply when the policy server is unavailable."),
    _p("smtpd_policy_service_request_limit", "int", "0",
       "Requests per policy server connection; 0 means no limit.", min=0),
    _p("smtpd_policy_service_policy_context", "str", "",
       "Text sent as policy_context in every policy request."),
    _p("smtpd_policy_service_try_limit", "int", "2", "Attempts to reach a policy server.", min=1),
    _p("smtpd_policy_service_retry_delay", "time", "1s",
       "Delay between attempts to reach a policy server.", min=1),
    _p("smtpd_proxy_filter", "str", "", "Before-queue content filter host:port."),
    _p("smtpd_proxy_timeout", "time", "100s",
       "Time limit for the before-queue content filter.", min=1),
    _p("smtpd_proxy_ehlo", "str", "$myhostname",
       "EHLO name sent to the before-queue content filter."),
    _p("smtpd_proxy_options", "list", "", "Options of the before-queue content filter connection."),
    _p("smtpd_milters", "list", "", "Milters for mail received over SMTP."),
    _p("smtpd_authorized_xclient_hosts", "list", "", "Clients that may use XCLIENT."),
    _p("smtpd_authorized_xforward_hosts", "list", "", "Clients that may use XFORWARD."),
    _p("smtpd_discard_ehlo_keywords", "list", "", "EHLO keywords not announced."),
    _p("smtpd_forbidden_commands", "list", "CONNECT GET POST regexp:{{/^[^A-Z]/ Bogus}}",
       "Commands that end the session, e.g. HTTP requests."),
    _p("smtpd_noop_commands", "list", "", "Commands answered with 250 and otherwise ignored."),
    _p("smtpd_command_filter", "str", "",
       "Table that rewrites SMTP commands before they are parsed."),
    _p("smtpd_log_access_permit_actions", "list", "",
       "Permit actions that are logged like reject actions."),
    _p("smtpd_peername_lookup", "bool", "yes", "Look up the client host name with DNS."),
    _p("smtpd_reject_footer", "str", "", "Text appended to every reject reply."),
    _p("smtpd_starttls_timeout", "time", "${stress?{10}:{300}}s",
       "Time limit for the TLS handshake.", min=1),
    _p("smtpd_tls_security_level", "str", "",
       "TLS policy of the SMTP server: none, may or encrypt."),
    _p("smtpd_tls_auth_only", "bool", "no", "Offer AUTH only after STARTTLS."),
    _p("smtpd_tls_cert_file", "str", "", "Server certificate in PEM format."),
    _p("smtpd_tls_key_file", "str", "$smtpd_tls_cert_file", "Server private key in PEM format."),
    _p("smtpd_tls_chain_files", "list", "", "Server keys and certificate chains in PEM format."),
    _p("smtpd_tls_CAfile", "str", "", "CA certificates for verifying client certificates."),
    _p("smtpd_tls_CApath", "str", "",
       "Directory of CA certificates for verifying client certificates."),
    _p("smtpd_tls_ask_ccert", "bool", "no", "Ask the client for a certificate."),
    _p("smtpd_tls_req_ccert", "bool", "no", "Require a client certificate with encrypt."),
    _p("smtpd_tls_loglevel", "int", "0", "TLS logging verbosity of the SMTP server.", min=0),
    _p("smtpd_tls_received_header", "bool", "no", "Record TLS details in the Received header."),
    _p("smtpd_tls_protocols", "list", ">=TLSv1", "TLS protocols the SMTP server accepts."),
    _p("smtpd_tls_mandatory_protocols", "list", ">=TLSv1",
       "TLS protocols the SMTP server accepts with encrypt."),
    _p("smtpd_tls_ciphers", "str", "medium", "Cipher grade for opportunistic TLS."),
    _p("smtpd_tls_mandatory_ciphers", "str", "medium", "Cipher grade for mandatory TLS."),
    _p("smtpd_tls_fingerprint_digest", "str",
       "${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}",
       "Digest of client certificate fingerprints."),
    _p("smtpd_tls_wrappermode", "bool", "no",
       "Speak TLS from the start of the connection (port 465)."),
    _p("smtpd_tls_session_cache_database", "str", "", "TLS session cache of the SMTP server."),
    _p("smtpd_use_tls", "bool", "no", "Obsolete: opportunistic TLS for the SMTP server."),
    _p("smtpd_enforce_tls", "bool", "no", "Obsolete: mandatory TLS for the SMTP server."),
    _p("smtpd_sasl_auth_enable", "bool", "no", "Enable SMTP AUTH."),
    _p("smtpd_sasl_type", "str", "cyrus", "SASL plug-in type: cyrus or dovecot."),
    _p("smtpd_sasl_path", "str", "smtpd", "SASL service name or socket path."),
    _p("smtpd_sasl_security_options", "list", "noanonymous",
       "SASL mechanisms to avoid without TLS."),
    _p("smtpd_sasl_tls_security_options", "list", "$smtpd_sasl_security_options",
       "SASL mechanisms to avoid with TLS."),
    _p("smtpd_sasl_local_domain", "str", "", "Realm of SASL user names."),
    _p("smtpd_sasl_authenticated_header", "bool", "no",
       "Record the SASL login name in the Received header."),
    _p("smtpd_sasl_exceptions_networks", "list", "", "Clients that are not offered AUTH."),
    _p("smtpd_client_port_logging", "bool", "no", "Log the client port number."),
    _p("smtputf8_enable", "bool", "${{$compatibility_level} <level {1} ? {no} : {yes}}",
       "Support SMTPUTF8."),
    _p("smtpd_relay_before_recipient_restrictions", "bool",
       "${{$compatibility_level} <level {3.6} ? {no} : {yes}}",
       "Evaluate smtpd_relay_restrictions before smtpd_recipient_restrictions."),
    # -- Reply codes -----------------------------------------------
    _p("unknown_client_reject_code", "int", "450",
       "Reply code for reject_unknown_client_hostname.", min=400, max=599),
    _p("unknown_hostname_reject_code", "int", "450",
       "Reply code for reject_unknown_helo_hostname.", min=400, max=599),
    _p("unknown_address_reject_code", "int", "450",
       "Reply code for reject_unknown_sender/recipient_domain.", min=400, max=599),
    _p("unknown_local_recipient_reject_code", "int", "550",
       "Reply code for unknown local recipients.", min=400, max=599),
    _p("unknown_virtual_alias_reject_code", "int", "550",
       "Reply code for unknown virtual alias recipients.", min=400, max=599),
    _p("unknown_virtual_mailbox_reject_code", "int", "550",
       "Reply code for unknown virtual mailbox recipients.", min=400, max=599),
    _p("unknown_relay_recipient_reject_code", "int", "550",
       "Reply code for unknown relay recipients.", min=400, max=599),
    _p("unverified_recipient_reject_code", "int", "450",
       "Reply code for reject_unverified_recipient.", min=400, max=599),
    _p("unverified_sender_reject_code", "int", "450",
       "Reply code for reject_unverified_sender.", min=400, max=599),
    _p("relay_domains_reject_code", "int", "554",
       "Reply code for reject_unauth_destination.", min=400, max=599),
    _p("access_map_reject_code", "int", "554",
       "Reply code for REJECT in an access map.", min=400, max=599),
    _p("access_map_defer_code", "int", "450",
       "Reply code for DEFER in an access map.", min=400, max=599),
    _p("maps_rbl_reject_code", "int", "554",
       "Reply code for a DNSBL/RHSBL listing.", min=400, max=599),
    _p("default_rbl_reply", "str",
       "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using "
       "$rbl_domain${rbl_reason?; $rbl_reason}",
       "Template of the reply for a DNSBL/RHSBL listing."),
    _p("rbl_reply_maps", "list", "", "Per-list reply templates for DNSBL/RHSBL listings."),
    _p("reject_code", "int", "554", "Reply code for the reject restriction.", min=400, max=599),
    _p("defer_code", "int", "450", "Reply code for the defer restriction.", min=400, max=599),
    _p("invalid_hostname_reject_code", "int", "501",
       "Reply code for reject_invalid_helo_hostname.", min=400, max=599),
    _p("non_fqdn_reject_code", "int", "504", "Reply code for reject_non_fqdn_*.", min=400, max=599),
    _p("plaintext_reject_code", "int", "450",
       "Reply code for mandatory TLS violations.", min=400, max=599),
    _p("multi_recipient_bounce_reject_code", "int", "550",
       "Reply code for reject_multi_recipient_bounce.", min=400, max=599),
    _p("reject_tempfail_action", "str", "defer_if_permit",
       "Action for a restriction that fails temporarily."),
    _p("unknown_helo_hostname_tempfail_action", "str", "$reject_tempfail_action",
       "Action for reject_unknown_helo_hostname when DNS fails temporarily."),
    _p("soft_bounce", "bool", "no",
       "Turn permanent delivery errors into temporary ones (for testing)."),
    # -- SMTP and LMTP client --------------------------------------
    _p("smtp_connect_timeout", "time", "30s", "Time limit for the TCP connection.", min=0),
    _p("smtp_helo_timeout", "time", "300s",
       "Time limit for the greeting and the HELO reply.", min=1),
    _p("smtp_mail_timeout", "time", "300s", "Time limit for the MAIL FROM reply.", min=1),
    _p("smtp_rcpt_timeout", "time", "300s", "Time limit for the RCPT TO reply.", min=1),
    _p("smtp_rset_timeout", "time", "20s", "Time limit for the RSET reply.", min=1),
    _p("lmtp_rset_timeout", "time", "20s", "Time limit for the LMTP RSET reply.", min=1),
    _p("smtp_data_init_timeout", "time", "120s", "Time limit for the DATA reply.", min=1),
    _p("smtp_data_xfer_timeout", "time", "180s", "Time limit for sending message content.", min=1),
    _p("smtp_data_done_timeout", "time", "600s",
       "Time limit for the reply to the final dot.", min=1),
    _p("smtp_quit_timeout", "time", "300s", "Time limit for the QUIT reply.", min=1),
    _p("smtp_starttls_timeout", "time", "300s", "Time limit for the TLS handshake.", min=1),
    _p("smtp_helo_name", "str", "$myhostname", "Hostname sent in HELO/EHLO."),
    _p("smtp_host_lookup", "list", "dns", "How to find next-hop hosts: dns, native."),
    _p("smtp_dns_support_level", "str", "", "DNS features to use: disabled, enabled, dnssec."),
    _p("smtp_bind_address", "str", "", "Local IPv4 address for outgoing connections."),
    _p("smtp_bind_address6", "str", "", "Local IPv6 address for outgoing connections."),
    _p("smtp_address_preference", "str", "any", "Preferred address family: any, ipv4, ipv6."),
    _p("smtp_mx_address_limit", "int", "5",
       "Maximal number of MX addresses to try; 0 means no limit.", min=0),
    _p("smtp_mx_session_limit", "int", "2", "Maximal number of SMTP sessions per delivery.", min=0),
    _p("smtp_fallback_relay", "list", "$fallback_relay",
       "Hosts to try when the MX hosts of a destination fail."),
    _p("smtp_skip_5xx_greeting", "bool", "yes", "Try the next MX host after a 5xx greeting."),
    _p("smtp_always_send_ehlo", "bool", "yes",
       "Send EHLO even when the greeting does not mention ESMTP."),
    _p("smtp_never_send_ehlo", "bool", "no", "Always send HELO."),
    _p("smtp_line_length_limit", "int", "998",
       "Maximal length of message lines sent; longer ones are folded.", min=0),
    _p("smtp_connection_cache_on_demand", "bool", "yes",
       "Reuse connections to destinations with a backlog."),
    _p("smtp_connection_cache_destinations", "list", "",
       "Destinations whose connections are always cached."),
    _p("smtp_connection_cache_time_limit", "time", "2s",
       "Idle time of a cached connection.", min=1),
    _p("smtp_connection_reuse_time_limit", "time", "300s",
       "Age limit of a reused connection.", min=1),
    _p("smtp_connection_reuse_count_limit", "int", "0",
       "Deliveries per reused connection; 0 means no limit.", min=0),
    _p("smtp_tls_security_level", "str", "",
       "TLS policy of the SMTP client: none, may, encrypt, dane, verify, secure."),
    _p("smtp_tls_policy_maps", "list", "", "Per-destination TLS policy."),
    _p("smtp_tls_CAfile", "str", "", "CA certificates for verifying server certificates."),
    _p("smtp_tls_CApath", "str", "",
       "Directory of CA certificates for verifying server certificates."),
    _p("smtp_tls_cert_file", "str", "", "Client certificate in PEM format."),
    _p("smtp_tls_key_file", "str", "$smtp_tls_cert_file", "Client private key in PEM format."),
    _p("smtp_tls_chain_files", "list", "", "Client keys and certificate chains in PEM format."),
    _p("smtp_tls_loglevel", "int", "0", "TLS logging verbosity of the SMTP client.", min=0),
    _p("smtp_tls_protocols", "list", ">=TLSv1", "TLS protocols the SMTP client uses."),
    _p("smtp_tls_mandatory_protocols", "list", ">=TLSv1",
       "TLS protocols the SMTP client uses with mandatory TLS."),
    _p("smtp_tls_ciphers", "str", "medium", "Cipher grade for opportunistic TLS."),
    _p("smtp_tls_mandatory_ciphers", "str", "medium", "Cipher grade for mandatory TLS."),
    _p("smtp_tls_verify_cert_match", "list", "hostname", "Certificate name checks for verify."),
    _p("smtp_tls_secure_cert_match", "list", "nexthop, dot-nexthop",
       "Certificate name checks for secure."),
    _p("smtp_tls_fingerprint_digest", "str",
       "${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}",
       "Digest of certificate fingerprints in smtp_tls_policy_maps."),
    _p("smtp_tls_dane_insecure_mx_policy", "str",
       "${{$smtp_tls_security_level} == {dane} ? {dane} : {may}}",
       "TLS policy for MX hosts without DNSSEC under dane."),
    _p("smtp_tls_note_starttls_offer", "bool", "no",
       "Log servers that offer STARTTLS without a policy."),
    _p("smtp_tls_session_cache_database", "str", "", "TLS session cache of the SMTP client."),
    _p("smtp_tls_wrappermode", "bool", "no",
       "Speak TLS from the start of the connection (port 465)."),
    _p("smtp_use_tls", "bool", "no", "Obsolete: opportunistic TLS for the SMTP client."),
    _p("smtp_enforce_tls", "bool", "no", "Obsolete: mandatory TLS for the SMTP client."),
    _p("smtp_sasl_auth_enable", "bool", "no", "Enable SMTP AUTH in the SMTP client."),
    _p("smtp_sasl_password_maps", "list", "", "Per-destination SASL user names and passwords."),
    _p("smtp_sasl_security_options", "list", "noplaintext, noanonymous",
       "SASL mechanisms to avoid without TLS."),
    _p("smtp_sasl_tls_security_options", "list", "$smtp_sasl_security_options",
       "SASL mechanisms to avoid with TLS."),
    _p("smtp_sasl_mechanism_filter", "list", "", "SASL mechanisms the client may use."),
    _p("smtp_sasl_type", "str", "cyrus", "SASL plug-in type of the SMTP client."),
    _p("smtp_generic_maps", "list", "", "Address rewriting for mail sent over SMTP."),
    _p("smtp_header_checks", "list", "", "Header rewriting for mail sent over SMTP."),
    _p("smtp_body_checks", "list", "", "Body rewriting for mail sent over SMTP."),
    _p("smtp_send_xforward_command", "bool", "no",
       "Forward client attributes with XFORWARD when the server offers it."),
    _p("smtp_defer_if_no_mx_address_found", "bool", "no",
       "Defer instead of falling back to the A record when MX hosts have no address."),
    _p("lmtp_connect_timeout", "time", "0s", "Time limit for the LMTP connection.", min=0),
    _p("lmtp_lhlo_timeout", "time", "300s", "Time limit for the LHLO reply.", min=1),
    _p("lmtp_mail_timeout", "time", "300s", "Time limit for the MAIL FROM reply.", min=1),
    _p("lmtp_rcpt_timeout", "time", "300s", "Time limit for the RCPT TO reply.", min=1),
    _p("lmtp_data_init_timeout", "time", "120s", "Time limit for the DATA reply.", min=1),
    _p("lmtp_data_xfer_timeout", "time", "180s", "Time limit for sending message content.", min=1),
    _p("lmtp_data_done_timeout", "time", "600s",
       "Time limit for the replies to the final dot.", min=1),
    _p("lmtp_quit_timeout", "time", "300s", "Time limit for the QUIT reply.", min=1),
    _p("lmtp_lhlo_name", "str", "$myhostname", "Hostname sent in LHLO."),
    _p("lmtp_host_lookup", "list", "dns", "How to find LMTP hosts: dns, native."),
    _p("lmtp_tls_security_level", "str", "", "TLS policy of the LMTP client."),
    _p("lmtp_sasl_auth_enable", "bool", "no", "Enable SMTP AUTH in the LMTP client."),
    _p("lmtp_sasl_password_maps", "list", "",
       "Per-destination SASL user names and passwords for LMTP."),
    _p("lmtp_tcp_port", "str", "24", "Default TCP port of LMTP servers."),
    # -- Address verification and DNS ------------------------------
    _p("address_verify_map", "str", "btree:$data_directory/verify_cache",
       "Cache of address verification results."),
    _p("address_verify_sender", "str", "$double_bounce_sender",
       "Sender of address verification probes."),
    _p("address_verify_positive_expire_time", "time", "31d",
       "Lifetime of a positive verification result.", min=1, time_unit="d"),
    _p("address_verify_negative_expire_time", "time", "3d",
       "Lifetime of a negative verification result.", min=1, time_unit="d"),
    _p("address_verify_poll_count", "int", "${stress?{1}:{3}}",
       "Times to poll for a verification result.", min=1),
    _p("address_verify_poll_delay", "time", "3s",
       "Delay between polls for a verification result.", min=1),
    _p("ipc_timeout", "time", "3600s", "Time limit for internal communication.", min=1),
    _p("in_flow_delay", "time", "1s",
       "Delay per message when mail arrives faster than it leaves.", min=0),
    _p("stress", "str", "", "Set to yes by the master when the service is overloaded."),
    _p("delay_logging_resolution_limit", "int", "2",
       "Digits after the decimal point in delay= and delays= logging.", min=0, max=6),
    _p("default_privs", "str", "nobody",
       "The user rights used by local delivery to files and commands."),
    _p("command_time_limit", "time", "1000s",
       "Time limit for delivery to an external command.", min=1),
    _p("proxy_read_maps", "str",
       (
           "$local_recipient_maps $mydestination $virtual_alias_maps $virtual_alias_domains "
           "$virtual_mailbox_maps $virtual_mailbox_domains $relay_recipient_maps "
           "$relay_domains $canonical_maps $sender_canonical_maps $recipient_canonical_maps "
           "$relocated_maps $transport_maps $mynetworks $smtpd_sender_login_maps "
           "$sender_bcc_maps $recipient_bcc_maps $smtp_generic_maps $lmtp_generic_maps "
           "$alias_maps $smtpd_client_restrictions $smtpd_helo_restrictions "
           "$smtpd_sender_restrictions $smtpd_relay_restrictions "
           "$smtpd_recipient_restrictions "
           "$address_verify_sender_dependent_default_transport_maps "
           "$address_verify_sender_dependent_relayhost_maps $address_verify_transport_maps "
           "$fallback_transport_maps $lmtp_discard_lhlo_keyword_address_maps "
           "$lmtp_pix_workaround_maps $lmtp_sasl_password_maps $lmtp_tls_policy_maps "
           "$mailbox_command_maps $mailbox_transport_maps "
           "$postscreen_discard_ehlo_keyword_address_maps $rbl_reply_maps "
           "$sender_dependent_default_transport_maps $sender_dependent_relayhost_maps "
           "$smtp_discard_ehlo_keyword_address_maps $smtp_pix_workaround_maps "
           "$smtp_sasl_password_maps $smtp_tls_policy_maps "
           "$smtpd_discard_ehlo_keyword_address_maps $smtpd_milter_maps $virtual_gid_maps "
           "$virtual_uid_maps $local_login_sender_maps $postscreen_reject_footer_maps "
           "$smtpd_reject_footer_maps $tls_server_sni_maps $tlsproxy_client_policy_maps "
           "$default_delivery_status_filter $lmtp_delivery_status_filter "
           "$lmtp_dns_reply_filter $lmtp_reply_filter $local_delivery_status_filter "
           "$pipe_delivery_status_filter $postscreen_command_filter "
           "$smtp_delivery_status_filter $smtp_dns_reply_filter $smtp_reply_filter "
           "$smtpd_command_filter $smtpd_dns_reply_filter $virtual_delivery_status_filter "
           "$body_checks $header_checks $lmtp_body_checks $lmtp_header_checks "
           "$lmtp_mime_header_checks $lmtp_nested_header_checks $milter_header_checks "
           "$mime_header_checks $nested_header_checks $smtp_body_checks $smtp_header_checks "
           "$smtp_mime_header_checks $smtp_nested_header_checks"
       ),
       "Tables that maps-api (proxymap) may read."),
    _p("proxy_write_maps", "str",
       (
           "$smtp_sasl_auth_cache_name $lmtp_sasl_auth_cache_name $address_verify_map "
           "$postscreen_cache_map"
       ),
       "Tables that maps-api (proxywrite) may change."),
    _p("disable_vrfy_command", "bool", "no", "Disable the SMTP VRFY command."),
    _p("always_add_missing_headers", "bool", "no",
       "Add missing From:, To:, Date: and Message-ID: headers for every client."),
    _p("postscreen_cache_map", "str", "btree:$data_directory/postscreen_cache",
       "Where postscreen keeps its client cache."),
    # -- Postbus ---------------------------------------------------
    _p("postbus_nats_url", "str", "nats://127.0.0.1:4222",
       "NATS server URL of the bus (env POSTBUS_NATS_URL when unset)."),
    _p("postbus_redis_url", "str", "redis://127.0.0.1:6379/0",
       "Redis URL of the lookup tables (env POSTBUS_REDIS_URL when unset)."),
    _p("postbus_sasl_users_key", "str", "postbus:sasl:users",
       "Redis hash of the smtpd_sasl_type = postbus users (name -> argon2 hash), "
       "managed with postbus saslpasswd."),
    _p("postbus_sasl_scram", "bool", "no",
       "smtpd_sasl_type = postbus also offers SCRAM-SHA-256 and SCRAM-SHA-1 (keys stored by "
       "postbus saslpasswd, or at a user's next PLAIN/LOGIN login)."),
    _p("postbus_ack_wait", "time", "60s",
       "Time a bus consumer has to acknowledge a message before it is redelivered.", min=1),
    _p("postbus_metrics_port", "int", "9100",
       "First port of the metrics/health listeners postbus start hands out.", min=1, max=65535),
    _p("postbus_dns_servers", "list", "",
       "DNS servers for MX and DNSBL lookups; empty means the system resolver."),
    _p("postbus_log_format", "str", "postfix", "Log line format: postfix or json."),
    _p("postbus_unsupported_parameters", "str", "refuse",
       "A parameter Postbus does not support yet, set: refuse (stop the start) or warn."),
    _p("postbus_nats_dir", "str", "$data_directory/nats",
       "Data directory of the nats-server that postbus start runs."),
    _p("postbus_redis_dir", "str", "$data_directory/redis",
       "Data directory of the redis-server that postbus start runs."),
    _p("postbus_maps_api_url", "str", "http://127.0.0.1:10080",
       "maps-api's HTTP address, used by proxy: tables."),
    _p("postbus_maps_api_socketmap_listen", "str", "127.0.0.1:10081",
       "Where maps-api serves the socketmap protocol; empty: not at all."),
    _p("postbus_maps_api_tcp_listen", "str", "127.0.0.1:10082",
       "Where maps-api serves the tcp_table protocol; empty: not at all."),
    _p("postbus_maps_api_tcp_maps", "str", "",
       "Tables the tcp_table server answers from, first match wins."),
    _p("postbus_maps_api_token", "str", "",
       "Bearer token for maps-api writes; empty: every write is refused."),
    _p("postbus_policy_max_idle", "time", "$smtpd_policy_service_max_idle",
       "Idle time after which the policy server disconnects a client.", min=1),
    _p("postbus_policy_timeout", "time", "$smtpd_policy_service_timeout",
       "Time a policy server client has to send one whole request.", min=1),
    _p("postbus_policy_line_limit", "int", "8192",
       "Bytes per name=value line the policy server reads (newline included).",
       min=64, max=1048576),
    _p("postbus_policy_attribute_limit", "int", "100",
       "Attributes per request the policy server reads.", min=1, max=1024),
    _p("postbus_policy_request_limit", "size", "65536",
       "Bytes per request the policy server reads.", min=256, max=16777216),
    _p("postbus_policy_checks", "list", "",
       "Checks of the policy server, in order: greylist, ratelimit, spf (empty: DUNNO)."),
    _p("postbus_policy_default_action", "str", "DUNNO",
       "Policy server action while Redis cannot answer a check that needs it."),
    _p("postbus_policy_greylist_delay", "time", "300s",
       "Greylisting: time before a retried triplet passes (postgrey --delay).", min=0),
    _p("postbus_policy_greylist_max_age", "time", "35d",
       "Greylisting: a triplet or client not seen for this long is forgotten (--max-age).",
       min=1),
    _p("postbus_policy_greylist_retry_window", "time", "2d",
       "Greylisting: a first retry later than this starts over (--retry-window).", min=1),
    _p("postbus_policy_greylist_auto_whitelist_clients", "int", "5",
       "Greylisting: clients pass after this many successful retries (0: never).", min=0),
    _p("postbus_policy_greylist_whitelist_clients", "list", "",
       "Greylisting: clients never greylisted: addresses, networks, names (.domain: "
       "subdomains), /regexp/ or type:table."),
    _p("postbus_policy_greylist_whitelist_recipients", "list", "",
       "Greylisting: recipients never greylisted: user@domain, user@, domain, /regexp/ "
       "or type:table."),
    _p("postbus_policy_greylist_ipv4_prefix", "int", "24",
       "Greylisting: IPv4 prefix length of the client network in a triplet (32: the host).",
       min=0, max=32),
    _p("postbus_policy_greylist_ipv6_prefix", "int", "64",
       "Greylisting: IPv6 prefix length of the client network in a triplet (128: the host).",
       min=0, max=128),
    _p("postbus_policy_greylist_action", "str", "DEFER_IF_PERMIT",
       "Greylisting: the action of a greylisted request (postgrey --greylist-action)."),
    _p("postbus_policy_greylist_text", "str",
       "Greylisted, see http://postgrey.schweikert.ch/help/%r.html",
       "Greylisting: the reply text (%s: seconds left, %r: recipient domain)."),
    _p("postbus_policy_greylist_header", "str",
       "X-Greylist: delayed %t seconds by postbus-%v at %h; %d",
       "Greylisting: header prepended after a delay (%t, %v, %h, %d as postgrey's; "
       "empty: none)."),
    _p("postbus_policy_ratelimit_limits", "list", "",
       "Rate limits, each ATTRIBUTE COUNT/TIME over a sliding window: client_address, sender, "
       "sasl_username or recipient_domain (e.g. sender 100/1h)."),
    _p("postbus_policy_ratelimit_action", "str", "DEFER_IF_PERMIT",
       "Rate limits: the action of a request over a limit."),
    _p("postbus_policy_ratelimit_text", "str",
       "4.7.1 Rate limit exceeded for %k %v: more than %l per %w",
       "Rate limits: the reply text (%k attribute, %v value, %l count, %w window)."),
    _p("postbus_policy_spf_helo_reject", "str", "Fail",
       "SPF: HELO results rejected (policyd-spf HELO_reject: Fail, Softfail, SPF_Not_Pass, "
       "False, No_Check)."),
    _p("postbus_policy_spf_mail_from_reject", "str", "Fail",
       "SPF: MAIL FROM results rejected (policyd-spf Mail_From_reject)."),
    _p("postbus_policy_spf_permerror_reject", "bool", "no",
       "SPF: reject on a permanent error (PermError_reject)."),
    _p("postbus_policy_spf_temperror_defer", "bool", "no",
       "SPF: defer on a temporary error (TempError_Defer)."),
    _p("postbus_policy_spf_skip_addresses", "list",
       "127.0.0.0/8, ::ffff:127.0.0.0/104, ::1",
       "SPF: client networks not checked (skip_addresses)."),
    _p("postbus_policy_spf_lookup_time", "time", "20s",
       "SPF: time one SPF evaluation may spend on DNS (Lookup_Time).", min=1),
    _p("postbus_policy_spf_hide_receiver", "bool", "no",
       "SPF: write receiver=<UNKNOWN> in Received-SPF (Hide_Receiver)."),
    _p("postbus_policy_spf_reason_message", "str",
       "Message {rejectdefer} due to: {spf}. Please see {url}",
       "SPF: the reject text (Reason_Message)."),
    _p("postbus_policy_spf_reason_url", "str",
       "http://www.openspf.net/Why?s={0};id={1};ip={2};r={3}",
       "SPF: the URL in the reject text (Reason_URL)."),
    _p("postbus_queue_scan_interval", "time", "30s",
       "How often the qmgr refreshes the postbus_queue_messages gauges (from shared "
       "counters; one replica recounts the queue hourly).", min=1),
    _p("postbus_start_servers", "bool", "yes",
       "Whether postbus start runs its own nats-server and redis-server."),
    _p("postbus_nats_monitor_port", "int", "0",
       "HTTP monitoring port of the nats-server postbus start runs (0: any free port).",
       min=0, max=65535),
    _p("postbus_nats_max_procs", "int", "0",
       "Go scheduler processors (GOMAXPROCS) of the nats-server postbus start runs"
       " (0: Go's default, one per CPU).", min=0, max=1024),
    _p("postbus_stream_replicas", "int", "1",
       "JetStream replicas of every Postbus stream (3 on a NATS cluster).", min=1, max=5),
    _p("postbus_bus_retry_limit", "int", "10",
       "Deliveries of one bus message whose handler keeps failing before it moves to the"
       " corrupt queue.", min=1, max=1000),
    _p("postbus_bus_retry_max_delay", "time", "60s",
       "Longest wait before a failed bus message is handled again (from 1s, doubling).",
       min=1),
    _p("postbus_delivery_lease", "time", "20s",
       "How often the qmgr checks that a delivery attempt still has work on the bus; an"
       " attempt with none is taken up again.", min=1),
    # -- MTA-STS and TLS-RPT (delivery-smtp, postbus.tlsrpt) -------
    _p("postbus_mta_sts", "bool", "no",
       "Apply recipient domains' MTA-STS policies (RFC 8461) where smtp_tls_policy_maps"
       " has no entry."),
    _p("postbus_mta_sts_cache_refresh", "time", "10m",
       "How long a cached MTA-STS policy is used before its _mta-sts TXT id is checked"
       " again.", min=0),
    _p("postbus_mta_sts_timeout", "time", "10s",
       "Time an MTA-STS policy fetch (connect, TLS, HTTP) may take.", min=1),
    _p("postbus_mta_sts_ca_file", "str", "",
       "CA certificates for the policy's HTTPS server; empty: the system store."),
    _p("postbus_mta_sts_https_port", "int", "443",
       "Port of the mta-sts.<domain> HTTPS server (another one only for tests).",
       min=1, max=65535),
    _p("postbus_tlsrpt", "bool", "no",
       "Record TLS results per policy domain and send daily TLS-RPT reports (RFC 8460)."),
    _p("postbus_tlsrpt_reporting_org", "str", "$mydomain",
       "organization-name of TLS-RPT reports."),
    _p("postbus_tlsrpt_submitter", "str", "$myhostname",
       "Submitter of TLS-RPT reports (subject and file name)."),
    _p("postbus_tlsrpt_contact", "str", "postmaster@$mydomain",
       "contact-info of TLS-RPT reports, and their sender address."),
    # -- events and webhooks (postbus.events, the webhooks role) ---
    _p("postbus_events_record", "list",
       "received, deferred, delivered, bounced, expired, held, released, requeued, deleted",
       "Event kinds the roles record on the event stream (empty: none; each costs a"
       " JetStream write: active and removed, two more per message, only when named)."),
    _p("postbus_events_max_age", "time", "7d",
       "How long the event stream keeps an event (0: no age limit).", min=0),
    _p("postbus_events_max_bytes", "size", "1073741824",
       "Bytes the event stream keeps at most, oldest events dropped first (0: no limit).",
       min=0),
    _p("postbus_events_max_msgs", "int", "10000000",
       "Events the event stream keeps at most, oldest dropped first (0: no limit).", min=0),
    _p("postbus_webhook_url", "str", "",
       "Where a webhooks service POSTs each event (http or https; empty: it sends nothing)."),
    _p("postbus_webhook_events", "list",
       "received, deferred, delivered, bounced, expired, held, released, deleted",
       "Event kinds a webhooks service sends (see postbus.events for every kind)."),
    _p("postbus_webhook_secret", "str", "",
       "HMAC-SHA256 key(s) a webhook is signed with (whsec_<base64> or text; several:"
       " one signature each)."),
    _p("postbus_webhook_secret_file", "str", "",
       "File holding postbus_webhook_secret instead (say, a mounted Secret)."),
    _p("postbus_webhook_timeout", "time", "10s",
       "Time a webhook receiver has to answer one POST.", min=1),
    _p("postbus_webhook_max_attempts", "int", "15",
       "POSTs of one event before it goes to the dead-letter stream.", min=1, max=1000),
    _p("postbus_webhook_minimal_backoff_time", "time", "5s",
       "Wait before the second POST of an event; doubles each time.", min=1),
    _p("postbus_webhook_maximal_backoff_time", "time", "1h",
       "Longest wait between two POSTs of an event.", min=1),
    _p("postbus_webhook_concurrency", "int", "10",
       "POSTs a webhooks process has in flight at most.", min=1, max=1000),
    # content-filter: DKIM, Authentication-Results, HTTP scanner
    _p("postbus_dkim_signing_table", "str", "",
       "Tables: sender address or domain (From: header, else envelope) -> key name; "
       "empty: no signing."),
    _p("postbus_dkim_key_table", "str", "",
       "Tables: key name -> domain:selector:keyfile; empty: the signing table gives "
       "domain:selector:keyfile itself."),
    _p("postbus_dkim_canonicalization", "str", "relaxed/simple",
       "DKIM header/body canonicalization of new signatures (simple or relaxed)."),
    _p("postbus_dkim_signed_headers", "list",
       "From, Sender, Reply-To, Subject, Date, Message-ID, To, Cc, MIME-Version, "
       "Content-Type, Content-Transfer-Encoding, In-Reply-To, References",
       "Header fields a new DKIM signature covers (those present)."),
    _p("postbus_authres_verify", "bool", "yes",
       "Verify DKIM, SPF and DMARC and prepend an Authentication-Results header."),
    _p("postbus_authserv_id", "str", "$myhostname",
       "The authserv-id of Authentication-Results headers (older ones with it are removed)."),
    _p("postbus_content_filter_scanner_url", "str", "",
       "HTTP scanner (rspamd /checkv2 shape) each message is POSTed to; empty: none."),
    _p("postbus_content_filter_scanner_timeout", "time", "30s",
       "Time the HTTP scanner has to answer.", min=1),
    _p("postbus_content_filter_default_action", "str", "tempfail",
       "What a message gets when the scanner is down or answers badly: accept, tempfail, "
       "reject or hold."),
    _p("postbus_content_filter_reject_score", "str", "",
       "Scanner score at or above which the message is rejected; empty: the scanner's action."),
    _p("postbus_content_filter_add_header_score", "str", "",
       "Scanner score at or above which X-Spam-Flag: YES is added; empty: the scanner's "
       "action."),
)

PARAMS: dict[str, Param] = {param.name: param for param in _TABLE}
for _name, (_kind, _unit, _default, _doc) in POSTFIX_PARAMS.items():
    PARAMS.setdefault(_name, Param(_name, _default, cast(Kind, _kind), _doc, time_unit=_unit))


def _hostname() -> str:
    """Fully-qualified host name (≈ mail_params.c check_myhostname()).

    A bare host name is qualified with the resolver (getfqdn) and, failing
    that, with ``.localdomain``, as Postfix 3.x does.
    """
    name = socket.gethostname()
    if "." not in name:
        fqdn = socket.getfqdn(name)
        name = fqdn if "." in fqdn and not fqdn.startswith("localhost") else name + ".localdomain"
    return name.lower()


def _domain(hostname: str) -> str:
    """myhostname minus its first label; ``localdomain`` for a bare name."""
    _, dot, rest = hostname.partition(".")
    return rest if dot and rest else "localdomain"


def _route_networks() -> list[str]:
    """IPv4 networks of this host's interfaces, from the kernel routing table."""
    nets: list[str] = []
    try:
        with open("/proc/net/route", encoding="ascii") as fp:
            rows = fp.read().splitlines()[1:]
    except OSError:
        return nets
    for row in rows:
        cols = row.split()
        if len(cols) < 8 or cols[2] != "00000000" or cols[7] == "00000000":
            continue
        addr = ipaddress.IPv4Address(bytes.fromhex(cols[1])[::-1])
        mask = ipaddress.IPv4Address(bytes.fromhex(cols[7])[::-1])
        net = ipaddress.IPv4Network(f"{addr}/{mask}", strict=False)
        if str(net) not in nets:
            nets.append(str(net))
    return nets


def _inet6_networks() -> list[str]:
    """IPv6 networks of this host's interfaces, from /proc/net/if_inet6."""
    nets: list[str] = []
    try:
        with open("/proc/net/if_inet6", encoding="ascii") as fp:
            rows = fp.read().splitlines()
    except OSError:
        return nets
    for row in rows:
        cols = row.split()
        if len(cols) < 3:
            continue
        addr = ipaddress.IPv6Address(bytes.fromhex(cols[0]))
        net = ipaddress.IPv6Network(f"{addr}/{int(cols[2], 16)}", strict=False)
        text = f"[{net.network_address}]/{net.prefixlen}"
        if not addr.is_loopback and text not in nets:
            nets.append(text)
    return nets


def _mynetworks(style: str) -> str:
    """mynetworks for a mynetworks_style (≈ own_inet_addr + mynetworks.c).

    ``host`` gives the loopback networks (127.0.0.0/8 [::1]/128); ``subnet``
    adds the networks of the host's interfaces; ``class`` widens IPv4
    networks to their historical class A/B/C size.
    """
    style = style.strip().lower()
    ipv4 = ["127.0.0.0/8"]
    ipv6 = ["[::1]/128"]
    if style in ("subnet", "class"):
        for net in _route_networks():
            if style == "class":
                first = int(net.split(".")[0])
                bits = 8 if first < 128 else 16 if first < 192 else 24
                net = str(ipaddress.IPv4Network(net).supernet(new_prefix=bits))
            if net not in ipv4:
                ipv4.append(net)
        ipv6 += [net for net in _inet6_networks() if net not in ipv6]
    return " ".join(ipv4 + ipv6)


def host_default(name: str, get: Callable[[str], str] | None = None) -> str:
    """Compute the default of a HOST_DEPENDENT parameter.

    ``get`` returns the expanded value of another parameter (myhostname for
    mydomain, mynetworks_style for mynetworks) so that a main.cf setting of
    those is honoured, as Postfix does; without it the host's own values
    and ``mynetworks_style = host`` are used.
    """
    if name == "myhostname":
        return _hostname()
    if name == "mydomain":
        return _domain(get("myhostname") if get else _hostname())
    if name == "mynetworks":
        return _mynetworks(get("mynetworks_style") if get else "host")
    raise KeyError(name)


def default_value(name: str) -> str:
    """The unexpanded default of a parameter, computing host-dependent ones."""
    if name in HOST_DEPENDENT:
        return host_default(name)
    return PARAMS[name].default
