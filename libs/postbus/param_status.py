"""What Postbus does with each parameter (the rule: nothing configured is ignored).

Every registry parameter has one status:

- ``implemented``: a role reads it and honours Postfix's meaning;
- ``not_applicable``: Postbus has no such thing (a chroot, a queue
  directory, a daemon's IPC name); setting it changes nothing, and that is
  correct; the reason is in :data:`NOT_APPLICABLE`;
- ``not_yet``: everything else.  Set to anything but its default, it stops
  the start (:mod:`postbus.config.support`), or, with
  ``postbus_unsupported_parameters = warn``, it is logged once and ignored.

Three finer points, each a small table:

- :data:`PARTLY`: parameters a role reads but does not yet honour in full.
  They are ``not_yet``: a setting Postbus would follow only in part is
  refused rather than pretended.
- :data:`ONLY_VALUES`: implemented parameters whose other values are not
  (``smtp_tls_security_level = dane``): such a value is refused like a
  not_yet parameter.
- :data:`HONOURED_VALUES`: not_yet parameters with a value that means just
  what Postbus does anyway (``biff = no``):
  that value is accepted.

Per-transport names that Postfix derives from master.cf
(``relay_destination_concurrency_limit``) share the status of their
suffix: the destination scheduler's (:data:`TRANSPORT_IMPLEMENTED`) are
implemented, the rest ``not_yet``.
"""

from __future__ import annotations

from typing import Literal

from postbus.params import PARAMS

__all__ = [
    "HONOURED_VALUES",
    "IMPLEMENTED",
    "NOT_APPLICABLE",
    "ONLY_VALUES",
    "PARTLY",
    "Status",
    "status",
]

Status = Literal["implemented", "not_applicable", "not_yet"]

#: Parameters a role reads and honours, by where they are read.
IMPLEMENTED: frozenset[str] = frozenset({
    # configuration itself (loader, expansion of defaults, master)
    "config_directory", "compatibility_level", "stress", "multi_instance_name",
    "postbus_unsupported_parameters", "data_directory", "syslog_name", "maillog_file",
    "postbus_log_format", "postbus_metrics_port", "postbus_start_servers",
    "postbus_nats_dir", "postbus_redis_dir", "postbus_nats_monitor_port",
    "postbus_nats_max_procs",
    # the bus, the queue, the tables
    "postbus_nats_url", "postbus_redis_url", "postbus_ack_wait", "postbus_stream_replicas",
    "postbus_bus_retry_limit", "postbus_bus_retry_max_delay", "postbus_maps_api_url",
    "postbus_delivery_lease", "qmgr_message_active_limit",
    "postbus_dns_servers", "enable_long_queue_ids",
    # MTA-STS and TLS-RPT (delivery-smtp, postbus.tlsrpt)
    "postbus_mta_sts", "postbus_mta_sts_cache_refresh", "postbus_mta_sts_timeout",
    "postbus_mta_sts_ca_file", "postbus_mta_sts_https_port", "postbus_tlsrpt",
    "postbus_tlsrpt_reporting_org", "postbus_tlsrpt_submitter", "postbus_tlsrpt_contact",
    # maps-api
    "proxy_read_maps", "postbus_maps_api_socketmap_listen", "postbus_maps_api_tcp_listen",
    "postbus_maps_api_tcp_maps", "postbus_maps_api_token",
    # policy
    "postbus_policy_max_idle", "postbus_policy_timeout", "postbus_policy_line_limit",
    "postbus_policy_attribute_limit", "postbus_policy_request_limit", "postbus_policy_checks",
    "postbus_policy_default_action", "postbus_policy_greylist_delay",
    "postbus_policy_greylist_max_age", "postbus_policy_greylist_retry_window",
    "postbus_policy_greylist_auto_whitelist_clients",
    "postbus_policy_greylist_whitelist_clients", "postbus_policy_greylist_whitelist_recipients",
    "postbus_policy_greylist_ipv4_prefix", "postbus_policy_greylist_ipv6_prefix",
    "postbus_policy_greylist_action", "postbus_policy_greylist_text",
    "postbus_policy_greylist_header", "postbus_policy_ratelimit_limits",
    "postbus_policy_ratelimit_action", "postbus_policy_ratelimit_text",
    "postbus_policy_spf_helo_reject", "postbus_policy_spf_mail_from_reject",
    "postbus_policy_spf_permerror_reject", "postbus_policy_spf_temperror_defer",
    "postbus_policy_spf_skip_addresses", "postbus_policy_spf_lookup_time",
    "postbus_policy_spf_hide_receiver", "postbus_policy_spf_reason_message",
    "postbus_policy_spf_reason_url",
    # events and webhooks
    "postbus_events_record", "postbus_events_max_age", "postbus_events_max_bytes",
    "postbus_events_max_msgs",
    "postbus_webhook_url", "postbus_webhook_events", "postbus_webhook_secret",
    "postbus_webhook_secret_file", "postbus_webhook_timeout", "postbus_webhook_max_attempts",
    "postbus_webhook_minimal_backoff_time", "postbus_webhook_maximal_backoff_time",
    "postbus_webhook_concurrency",
    # content-filter (DKIM signing, Authentication-Results, HTTP scanner)
    "postbus_dkim_signing_table", "postbus_dkim_key_table", "postbus_dkim_canonicalization",
    "postbus_dkim_signed_headers", "postbus_authres_verify", "postbus_authserv_id",
    "postbus_content_filter_scanner_url", "postbus_content_filter_scanner_timeout",
    "postbus_content_filter_default_action", "postbus_content_filter_reject_score",
    "postbus_content_filter_add_header_score",
    # identity, address classes and routing (postbus.resolve, postbus.rewrite)
    "myhostname", "mydomain", "myorigin", "mydestination", "mynetworks", "mynetworks_style",
    "inet_interfaces", "inet_protocols", "proxy_interfaces", "relay_domains", "relayhost",
    "parent_domain_matches_subdomains", "default_transport", "local_transport",
    "relay_transport", "virtual_transport", "transport_maps", "virtual_alias_domains",
    "virtual_mailbox_domains", "empty_address_recipient", "recipient_delimiter",
    "swap_bangpath", "allow_percent_hack", "append_at_myorigin", "append_dot_mydomain",
    "resolve_dequoted_address", "resolve_null_domain", "resolve_numeric_domain",
    "show_user_unknown_table_name", "relocated_maps", "allow_min_user",
    # cleanup's address rewriting (postbus.cleanup): smtpd and sendmail
    "canonical_maps", "sender_canonical_maps", "recipient_canonical_maps",
    "canonical_classes", "sender_canonical_classes", "recipient_canonical_classes",
    "remote_header_rewrite_domain", "masquerade_domains", "masquerade_exceptions",
    "masquerade_classes", "virtual_alias_maps", "virtual_alias_recursion_limit",
    "virtual_alias_expansion_limit", "virtual_alias_address_length_limit",
    "enable_original_recipient", "propagate_unmatched_extensions",
    "header_address_token_limit", "message_drop_headers", "receive_override_options",
    # after-queue content filter: smtpd and sendmail mark the message, the qmgr routes it
    "content_filter", "default_filter_nexthop",
    # before-queue content filter (ingress_smtpd/proxy_filter.py)
    "smtpd_proxy_filter", "smtpd_proxy_timeout", "smtpd_proxy_ehlo", "smtpd_proxy_options",
    # XFORWARD from a content filter (ingress_smtpd/xforward.py)
    "smtpd_authorized_xforward_hosts",
    # XFORWARD to a content filter (delivery_smtp/xforward.py)
    "smtp_send_xforward_command", "lmtp_send_xforward_command", "smtp_xforward_timeout",
    "lmtp_xforward_timeout",
    # SMTPUTF8 requested by the sender (delivery_smtp/proto.py smtputf8(), postbus sendmail)
    "smtputf8_autodetect_classes",
    # header and body checks (postbus.cleanup.checks, postbus.cleanup.mime)
    # the milter client (postbus.milter; smtpd and cleanup)
    "smtpd_milters", "non_smtpd_milters", "milter_protocol", "milter_default_action",
    "milter_connect_timeout", "milter_command_timeout", "milter_content_timeout",
    "milter_macro_daemon_name",
    "milter_macro_v", "milter_macro_defaults", "milter_connect_macros", "milter_helo_macros",
    "milter_mail_macros", "milter_rcpt_macros", "milter_data_macros",
    "milter_end_of_header_macros", "milter_end_of_data_macros",
    "milter_unknown_command_macros",
    "header_checks", "mime_header_checks", "nested_header_checks", "body_checks",
    "body_checks_size_limit", "mime_nesting_limit", "mime_boundary_length_limit",
    "disable_mime_input_processing",
    "smtp_header_checks", "smtp_mime_header_checks", "smtp_nested_header_checks",
    "smtp_body_checks", "lmtp_header_checks", "lmtp_mime_header_checks",
    "lmtp_nested_header_checks", "lmtp_body_checks",
    # smtpd
    "mail_name", "smtpd_banner", "message_size_limit", "line_length_limit",
    "header_size_limit", "smtpd_timeout", "smtpd_recipient_limit", "smtpd_soft_error_limit",
    "smtpd_hard_error_limit", "smtpd_error_sleep_time", "smtpd_junk_command_limit",
    "smtpd_helo_required", "disable_vrfy_command", "strict_rfc821_envelopes",
    "always_add_missing_headers", "local_header_rewrite_clients", "smtpd_peername_lookup",
    "smtpd_forbidden_commands", "smtpd_discard_ehlo_keywords", "smtputf8_enable",
    "smtpd_discard_ehlo_keyword_address_maps", "smtpd_etrn_restrictions", "fast_flush_domains",
    # smtpd behind a load balancer (postbus.haproxy, ingress_smtpd/proxy.py)
    "smtpd_upstream_proxy_protocol", "smtpd_upstream_proxy_timeout",
    # client limits across replicas (postbus.anvil, ingress_smtpd/limits.py)
    "smtpd_client_connection_count_limit", "smtpd_client_connection_rate_limit",
    "smtpd_client_message_rate_limit", "smtpd_client_recipient_rate_limit",
    "smtpd_client_new_tls_session_rate_limit", "smtpd_client_auth_rate_limit",
    "smtpd_client_event_limit_exceptions", "anvil_rate_time_unit",
    # smtpd TLS (postbus.tls, postbus.tls_session, ingress_smtpd/starttls.py)
    "smtpd_tls_security_level", "smtpd_use_tls", "smtpd_enforce_tls", "smtpd_tls_wrappermode",
    "smtpd_starttls_timeout", "smtpd_tls_cert_file", "smtpd_tls_key_file",
    "smtpd_tls_eccert_file", "smtpd_tls_eckey_file", "smtpd_tls_chain_files",
    "smtpd_tls_CAfile", "smtpd_tls_CApath", "smtpd_tls_ask_ccert", "smtpd_tls_req_ccert",
    "smtpd_tls_ccert_verifydepth", "smtpd_tls_loglevel", "smtpd_tls_received_header",
    "smtpd_tls_protocols", "smtpd_tls_mandatory_protocols", "smtpd_tls_ciphers",
    "smtpd_tls_mandatory_ciphers", "smtpd_tls_exclude_ciphers",
    "smtpd_tls_mandatory_exclude_ciphers", "smtpd_tls_fingerprint_digest",
    "tls_high_cipherlist", "tls_medium_cipherlist", "tls_low_cipherlist",
    "tls_export_cipherlist", "tls_null_cipherlist", "tls_preempt_cipherlist",
    # smtpd SASL (postbus.sasl, ingress_smtpd/auth.py, ingress_smtpd/sasl_checks.py);
    # smtpd_sasl_type: dovecot and postbus (cyrus is refused at start when AUTH is on)
    "smtpd_sasl_auth_enable", "smtpd_sasl_type", "smtpd_sasl_path", "smtpd_sasl_service",
    "smtpd_sasl_security_options", "smtpd_sasl_tls_security_options",
    "smtpd_sasl_local_domain", "smtpd_sasl_authenticated_header", "smtpd_sasl_response_limit",
    "smtpd_tls_auth_only", "broken_sasl_auth_clients", "smtpd_sender_login_maps",
    "smtpd_sasl_exceptions_networks", "smtpd_sasl_mechanism_filter",
    "postbus_sasl_users_key", "postbus_sasl_scram",
    # smtpd restrictions
    "smtpd_client_restrictions", "smtpd_helo_restrictions", "smtpd_sender_restrictions",
    "smtpd_relay_restrictions", "smtpd_recipient_restrictions", "allow_untrusted_routing",
    "smtpd_null_access_lookup_key", "smtpd_reject_unlisted_recipient",
    "smtpd_relay_before_recipient_restrictions",
    "smtpd_data_restrictions", "smtpd_end_of_data_restrictions", "smtpd_restriction_classes",
    "smtpd_delay_reject", "smtpd_policy_service_timeout", "smtpd_policy_service_max_idle",
    "smtpd_policy_service_max_ttl", "smtpd_policy_service_default_action",
    "smtpd_policy_service_request_limit", "smtpd_policy_service_try_limit",
    "smtpd_policy_service_retry_delay", "smtpd_policy_service_policy_context",
    "unknown_client_reject_code", "unknown_hostname_reject_code", "unknown_address_reject_code",
    "maps_rbl_reject_code", "default_rbl_reply", "invalid_hostname_reject_code",
    "plaintext_reject_code", "multi_recipient_bounce_reject_code", "reject_tempfail_action",
    "unknown_helo_hostname_tempfail_action", "unknown_address_tempfail_action",
    "relay_clientcerts", "smtpd_reject_unlisted_sender",
    "local_recipient_maps", "relay_recipient_maps", "double_bounce_sender",
    "access_map_reject_code", "access_map_defer_code", "reject_code", "defer_code",
    "relay_domains_reject_code", "non_fqdn_reject_code", "unknown_local_recipient_reject_code",
    "unknown_relay_recipient_reject_code", "unknown_virtual_alias_reject_code",
    "unknown_virtual_mailbox_reject_code",
    # qmgr
    "maximal_queue_lifetime", "bounce_queue_lifetime", "minimal_backoff_time",
    "maximal_backoff_time", "default_destination_recipient_limit", "bounce_size_limit",
    "postbus_queue_scan_interval",
    # the destination scheduler (postbus.schedule, in the delivery agents)
    "initial_destination_concurrency", "default_destination_concurrency_limit",
    "default_destination_concurrency_positive_feedback",
    "default_destination_concurrency_negative_feedback",
    "default_destination_concurrency_failed_cohort_limit", "default_destination_rate_delay",
    # qmgr notices (qmgr/notices.py; their words: postbus.bounce_template)
    "bounce_notice_recipient", "2bounce_notice_recipient", "enable_threaded_bounces",
    "delay_warning_time", "delay_notice_recipient", "bounce_template_file",
    # routing by sender (postbus.resolve, for smtpd's checks and the qmgr alike)
    "sender_dependent_relayhost_maps", "sender_dependent_default_transport_maps",
    "empty_address_relayhost_maps_lookup_key",
    "empty_address_default_transport_maps_lookup_key",
    # smtp and lmtp
    "smtp_connect_timeout", "smtp_helo_timeout", "smtp_mail_timeout", "smtp_rcpt_timeout",
    "smtp_data_init_timeout", "smtp_data_xfer_timeout", "smtp_data_done_timeout",
    "smtp_rset_timeout", "smtp_quit_timeout", "smtp_starttls_timeout", "smtp_helo_name",
    "smtp_tls_security_level", "smtp_tls_CAfile", "smtp_tls_CApath", "smtp_skip_5xx_greeting",
    "smtp_host_lookup", "smtp_dns_support_level", "disable_dns_lookups",
    "smtp_tls_dane_insecure_mx_policy",
    "smtp_mx_address_limit", "smtp_mx_session_limit", "smtp_connection_cache_on_demand",
    "smtp_connection_cache_time_limit", "smtp_connection_reuse_time_limit",
    "smtp_connection_reuse_count_limit", "lmtp_tcp_port", "lmtp_connect_timeout",
    "lmtp_lhlo_timeout", "lmtp_mail_timeout", "lmtp_rcpt_timeout", "lmtp_data_init_timeout",
    "lmtp_data_xfer_timeout", "lmtp_data_done_timeout", "lmtp_rset_timeout",
    "lmtp_quit_timeout", "lmtp_starttls_timeout", "lmtp_lhlo_name", "lmtp_tls_security_level",
    "lmtp_host_lookup", "delay_logging_resolution_limit", "smtp_line_length_limit",
    "lmtp_line_length_limit", "smtp_generic_maps", "lmtp_generic_maps",
    # the smtp client's TLS policy (delivery_smtp/tls_policy.py, tls_client.py)
    "smtp_tls_policy_maps", "lmtp_tls_policy_maps", "smtp_tls_loglevel", "lmtp_tls_loglevel",
    "smtp_tls_protocols", "smtp_tls_mandatory_protocols", "smtp_tls_ciphers",
    "smtp_tls_mandatory_ciphers", "smtp_tls_exclude_ciphers",
    "smtp_tls_mandatory_exclude_ciphers", "smtp_tls_verify_cert_match",
    "smtp_tls_secure_cert_match", "smtp_tls_servername", "lmtp_tls_servername",
    "smtp_tls_cert_file", "smtp_tls_key_file",
    # the smtp client's SMTP AUTH (delivery_smtp/sasl_auth.py, postbus.sasl.client)
    "smtp_sasl_auth_enable", "smtp_sasl_password_maps", "smtp_sasl_security_options",
    "smtp_sasl_tls_security_options", "smtp_sasl_tls_verified_security_options",
    "smtp_sasl_mechanism_filter", "smtp_sender_dependent_authentication",
    "smtp_sasl_auth_soft_bounce", "smtp_sasl_type", "lmtp_sasl_auth_enable",
    "lmtp_sasl_password_maps", "lmtp_sasl_security_options", "lmtp_sasl_tls_security_options",
    "lmtp_sasl_tls_verified_security_options", "lmtp_sasl_mechanism_filter",
    "lmtp_sender_dependent_authentication", "lmtp_sasl_auth_soft_bounce", "lmtp_sasl_type",
    "smtp_sasl_auth_cache_name", "smtp_sasl_auth_cache_time", "lmtp_sasl_auth_cache_name",
    "lmtp_sasl_auth_cache_time",
    # 8BITMIME downgrade for servers without it (postbus.smtp.downgrade)
    "disable_mime_output_conversion",
    # local and virtual
    "alias_maps", "home_mailbox", "mail_spool_directory", "command_time_limit",
    "allow_mail_to_commands", "allow_mail_to_files", "default_privs",
    "strict_mailbox_ownership", "virtual_mailbox_maps", "virtual_mailbox_base",
    "virtual_uid_maps", "virtual_gid_maps", "virtual_minimum_uid",
    "mailbox_size_limit", "virtual_mailbox_limit",
    "forward_path", "forward_expansion_filter", "mailbox_command", "mailbox_command_maps",
    "owner_request_special", "expand_owner_alias", "prepend_delivered_header",
    "command_execution_directory", "execution_directory_expansion_filter",
    "command_expansion_filter", "local_command_shell", "export_environment", "luser_relay",
    "require_home_directory", "mailbox_transport", "mailbox_transport_maps", "fallback_transport",
    "fallback_transport_maps",
    # the master (postbus start)
    "mail_owner", "service_throttle_time",
})

_NO_DAEMONS = "Postbus roles are Python processes, not Postfix daemon programs"
_NO_IPC = "Postbus roles talk over NATS subjects, not Postfix's local IPC"
_NO_QUEUE_FILES = "the queue is JetStream state, not files in a queue directory"
_NO_SYSLOG = "Postbus logs to stderr and maillog_file, not to syslog"
_NO_TLS_RNG = "Python's ssl module seeds OpenSSL; Postbus has no tlsmgr PRNG exchange"
_NO_MULTI = "Postbus has no postmulti; run one configuration directory per system"
_NO_INSTALL = "Postbus installs as a Python package; no Postfix install paths"
_NO_DB_FILES = "tables live in Redis, not in Berkeley DB or LMDB files"

#: Parameters that describe something Postbus does not have, and why.
NOT_APPLICABLE: dict[str, str] = {
    "queue_directory": _NO_QUEUE_FILES + " (a relative smtpd_sasl_path still starts there, "
                       "as in Postfix)",
    "hash_queue_names": _NO_QUEUE_FILES,
    "hash_queue_depth": _NO_QUEUE_FILES,
    "queue_file_attribute_count_limit": _NO_QUEUE_FILES,
    "dont_remove": _NO_QUEUE_FILES,
    "daemon_directory": _NO_DAEMONS,
    "command_directory": _NO_INSTALL,
    "meta_directory": _NO_INSTALL,
    "shlib_directory": _NO_INSTALL,
    "html_directory": _NO_INSTALL,
    "manpage_directory": _NO_INSTALL,
    "readme_directory": _NO_INSTALL,
    "sample_directory": _NO_INSTALL,
    "sendmail_path": _NO_INSTALL,
    "newaliases_path": _NO_INSTALL,
    "mailq_path": _NO_INSTALL,
    "openssl_path": _NO_INSTALL,
    "setgid_group": "postbus sendmail and postqueue talk to NATS; there is no setgid postdrop",
    "process_id_directory": "postbus start keeps its state file in data_directory",
    "mail_version": "read-only in Postfix too: the configuration language Postbus implements",
    "mail_release_date": "read-only in Postfix too",
    "import_environment": _NO_DAEMONS,
    "debugger_command": _NO_DAEMONS,
    "fault_injection_code": _NO_DAEMONS,
    "daemon_timeout": _NO_DAEMONS,
    "max_idle": "a Postbus role runs until it is stopped; it does not exit when idle",
    "max_use": "a Postbus role runs until it is stopped; it does not exit after N clients",
    "fork_attempts": _NO_DAEMONS,
    "fork_delay": _NO_DAEMONS,
    "default_process_limit": "a Postbus process serves many sessions; master.cf maxproc "
                             "counts replicas (- is one)",
    "ipc_timeout": _NO_IPC,
    "ipc_idle": _NO_IPC,
    "ipc_ttl": _NO_IPC,
    "trigger_timeout": _NO_IPC,
    "application_event_drain_time": _NO_IPC,
    "qmgr_ipc_timeout": _NO_IPC,
    "qmgr_daemon_timeout": _NO_IPC,
    "qmgr_message_recipient_limit": _NO_QUEUE_FILES,
    "qmgr_message_recipient_minimum": _NO_QUEUE_FILES,
    "transport_retry_time": "delivery roles take jobs from the bus; no agent to reconnect to",
    "syslog_facility": _NO_SYSLOG,
    "postlogd_watchdog_timeout": _NO_SYSLOG,
    "postscreen_watchdog_timeout": _NO_DAEMONS,
    "tlsproxy_watchdog_timeout": _NO_DAEMONS,
    "tls_random_source": _NO_TLS_RNG,
    "tls_random_bytes": _NO_TLS_RNG,
    "tls_random_exchange_name": _NO_TLS_RNG,
    "tls_random_prng_update_period": _NO_TLS_RNG,
    "tls_random_reseed_period": _NO_TLS_RNG,
    "tls_daemon_random_bytes": _NO_TLS_RNG,
    "multi_instance_directories": _NO_MULTI,
    "multi_instance_enable": _NO_MULTI,
    "multi_instance_group": _NO_MULTI,
    "multi_instance_wrapper": _NO_MULTI,
    "postmulti_start_commands": _NO_MULTI,
    "postmulti_stop_commands": _NO_MULTI,
    "postmulti_control_commands": _NO_MULTI,
    "alternate_config_directories": "postbus -c DIR reads any directory; nothing to allow",
    "berkeley_db_create_buffer_size": _NO_DB_FILES,
    "berkeley_db_read_buffer_size": _NO_DB_FILES,
    "lmdb_map_size": _NO_DB_FILES,
}

#: Every ``<name>_service_name`` names a Postfix daemon's local socket.
for _name in PARAMS:
    if _name.endswith("_service_name"):
        NOT_APPLICABLE.setdefault(_name, _NO_IPC)

#: Parameters a role reads, but honours only in part: not_yet, and what is missing.
PARTLY: dict[str, str] = {
    "notify_classes": "the qmgr sends the bounce, 2bounce and delay postmaster notices; "
                      "smtpd's resource, software, policy, protocol and data notices are "
                      "not built",
}

#: Implemented parameters honoured for these values only (lowercase words; a
#: list value must consist of them). Other values are refused as not_yet.
ONLY_VALUES: dict[str, frozenset[str]] = {
    # no fingerprints (DANE: smtp only, LMTP has no MX lookups to secure)
    "smtp_tls_security_level": frozenset({"", "none", "may", "encrypt", "dane", "dane-only",
                                          "verify", "secure"}),
    "lmtp_tls_security_level": frozenset({"", "none", "may", "encrypt", "verify", "secure"}),
    # 0 and 1 as Postfix logs them; 2 and up add OpenSSL's handshake trace, not built
    "smtp_tls_loglevel": frozenset({"0", "1"}),
    "lmtp_tls_loglevel": frozenset({"0", "1"}),
    # the client mechanisms are built in, as Cyrus would offer them
    "smtp_sasl_type": frozenset({"cyrus"}),
    "lmtp_sasl_type": frozenset({"cyrus"}),
    # dnssec: the resolver's AD bit is trusted (as Postfix); used by the smtp client's DANE
    "smtp_dns_support_level": frozenset({"", "disabled", "enabled", "dnssec"}),
    # Postfix's smtpd has these three (it maps verify/secure/fingerprint to encrypt)
    "smtpd_tls_security_level": frozenset({"", "none", "may", "encrypt"}),
    # 0 and 1 as Postfix logs them; 2 and up add OpenSSL's handshake trace, not built
    "smtpd_tls_loglevel": frozenset({"0", "1"}),
    # the one upstream proxy protocol Postfix has
    "smtpd_upstream_proxy_protocol": frozenset({"", "haproxy"}),
    # autodetection in mail from sendmail (verify: a UTF-8 envelope always asks for it)
    "smtputf8_autodetect_classes": frozenset({"", "sendmail", "verify"}),
    # no check_address_map tables ("": no client is local, as amavis's re-injection has it)
    "local_header_rewrite_clients": frozenset(
        {"", "permit_inet_interfaces", "permit_mynetworks", "permit_sasl_authenticated",
         "static:all"}
    ),
}

#: not_yet parameters with values that mean exactly what Postbus does anyway.
HONOURED_VALUES: dict[str, frozenset[str]] = {
    "biff": frozenset({"no"}),  # no comsat notification
    # the postmaster notices that are sent (and none)
    "notify_classes": frozenset({"", "bounce", "2bounce", "delay"}),
}


#: Per-transport suffixes (``<transport>_<suffix>``) the qmgr's scheduler honours.
TRANSPORT_IMPLEMENTED: frozenset[str] = frozenset({
    "initial_destination_concurrency", "destination_concurrency_limit",
    "destination_recipient_limit", "destination_rate_delay",
    "destination_concurrency_positive_feedback", "destination_concurrency_negative_feedback",
    "destination_concurrency_failed_cohort_limit",
})


def status(name: str) -> Status:
    """The status of a parameter (a derived per-transport name: its suffix's)."""
    if name in IMPLEMENTED:
        return "implemented"
    if any(name.endswith("_" + suffix) and not name.startswith("default_")
           for suffix in TRANSPORT_IMPLEMENTED):
        return "implemented"
    if name in NOT_APPLICABLE:
        return "not_applicable"
    return "not_yet"
