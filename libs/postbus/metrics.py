"""Every Prometheus metric, declared once (names follow research/ecosystem.md §1.6).

Services import these objects; no metric name is written anywhere else.
Labels have closed value sets (no addresses, domains or queue IDs).
"""

from __future__ import annotations

import os

os.environ.setdefault("PROMETHEUS_DISABLE_CREATED_SERIES", "True")

from prometheus_client import Counter, Gauge, Histogram, Info

build_info = Info("postbus_build", "Postbus version and the role of this process", ["component"])

# ingress-smtpd
smtpd_connections = Counter(
    "postbus_smtpd_connections", "SMTP connections accepted", ["listener"]
)
smtpd_active_connections = Gauge(
    "postbus_smtpd_active_connections", "SMTP sessions open now", ["listener"]
)
smtpd_messages_accepted = Counter(
    "postbus_smtpd_messages_accepted", "messages queued by smtpd", ["listener"]
)
smtpd_rejects = Counter(
    "postbus_smtpd_rejects", "SMTP commands rejected", ["listener", "stage", "code"]
)
smtpd_auth = Counter(
    "postbus_smtpd_auth", "SMTP AUTH exchanges by result (success, failure, temporary, "
    "aborted)", ["listener", "result"]
)
smtpd_message_size = Histogram(
    "postbus_smtpd_message_size_bytes",
    "size of messages queued by smtpd",
    ["listener"],
    buckets=(1e3, 5e3, 1e4, 5e4, 1e5, 5e5, 1e6, 5e6, 1e7, 5e7),
)
smtpd_queue_write_seconds = Histogram(
    "postbus_smtpd_queue_write_seconds",
    "time from end of DATA until JetStream acknowledged the message",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
)

# policy
policy_requests = Counter(
    "postbus_policy_requests", "policy delegation requests answered by the policy service"
)
policy_actions = Counter(
    "postbus_policy_actions", "actions of the policy service's checks (check: greylist, "
    "ratelimit, spf; action: DUNNO, PREPEND, DEFER_IF_PERMIT, 5xx, REDIS_DOWN, ...)",
    ["check", "action"],
)

# qmgr
queue_messages = Gauge("postbus_queue_messages", "messages per queue", ["queue"])
content_check_actions = Counter(
    "postbus_content_check_actions",
    "header/body check actions taken (table: header_checks, smtp_body_checks, ...)",
    ["table", "action"],
)
qmgr_messages_inserted = Counter("postbus_qmgr_messages_inserted", "messages taken in by qmgr")
qmgr_messages_removed = Counter(
    "postbus_qmgr_messages_removed", "messages removed from the queue", ["reason"]
)
bounces_generated = Counter(
    "postbus_bounces_generated", "delivery status notifications sent", ["kind"]
)

# delivery agents
delivery_attempts = Counter(
    "postbus_delivery_attempts", "recipient delivery attempts", ["transport", "status", "dsn_class"]
)
delivery_duration = Histogram(
    "postbus_delivery_duration_seconds",
    "time per delivery stage (Postfix delays=a/b/c/d)",
    ["transport", "stage"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
delivery_delay = Histogram(
    "postbus_delivery_delay_seconds",
    "arrival to final disposition",
    ["transport", "status"],
    buckets=(1, 10, 60, 300, 900, 3600, 14400, 86400, 172800, 432000),
)

# bus (every service)
bus_messages_processed = Counter(
    "postbus_bus_messages_processed", "bus messages handled", ["consumer", "result"]
)
bus_redeliveries = Counter(
    "postbus_bus_redeliveries", "bus messages seen more than once", ["consumer"]
)

corrupt_messages = Counter(
    "postbus_corrupt_messages",
    "bus work moved to the corrupt queue (kind: message, status, wakeup, job, other)",
    ["kind"],
)
for _kind in ("message", "status", "wakeup", "job", "other"):
    corrupt_messages.labels(_kind)

# events (every role that records one) and webhooks
events_published = Counter(
    "postbus_events_published", "queue events recorded on the event stream", ["kind"]
)
events_failed = Counter(
    "postbus_events_failed", "queue events that could not be recorded (logged)", ["kind"]
)
webhook_requests = Counter(
    "postbus_webhook_requests", "webhook POSTs (result: sent, failed)", ["webhook", "result"]
)
webhook_retries = Counter(
    "postbus_webhook_retries", "events a webhook will try again later", ["webhook"]
)
webhook_dead_letters = Counter(
    "postbus_webhook_dead_letters",
    "events a webhook gave up on after postbus_webhook_max_attempts (dead-letter stream)",
    ["webhook"],
)
webhook_latency = Histogram(
    "postbus_webhook_latency_seconds",
    "time from sending a webhook POST to its reply",
    ["webhook"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
webhook_pending = Gauge(
    "postbus_webhook_pending", "events waiting for a webhook (not yet sent or given up)",
    ["webhook"],
)

# content-filter
content_filter_checks = Counter(
    "postbus_content_filter_checks",
    "content-filter checks by result (check: dkim_sign, dkim_verify, spf, dmarc, scanner)",
    ["check", "result"],
)
content_filter_check_seconds = Histogram(
    "postbus_content_filter_check_seconds", "time one content-filter check took", ["check"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
content_filter_actions = Counter(
    "postbus_content_filter_actions",
    "messages by the content-filter's verdict (accept, tempfail, reject, hold)", ["action"],
)
content_filter_scanner_down = Gauge(
    "postbus_content_filter_scanner_down", "1 while the HTTP scanner does not answer"
)

QUEUE_STAGES = ("before_queue_manager", "queue_manager", "connection_setup", "transmission")
for _queue in ("incoming", "active", "deferred", "hold", "corrupt"):
    queue_messages.labels(_queue).set(0)

# smtpd_proxy_filter (before-queue filtering)
proxy_filter_results = Counter(
    "postbus_proxy_filter_results", "the before-queue filter's answer at end of message "
    "(accept, reject, tempfail; error: it could not be talked to)", ["result"],
)
proxy_filter_errors = Counter(
    "postbus_proxy_filter_errors", "failures talking to the before-queue filter "
    "(connect, timeout, lost, garbage)", ["kind"],
)
proxy_filter_seconds = Histogram(
    "postbus_proxy_filter_seconds", "time from sending the message to the before-queue "
    "filter to its reply",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30, 120),
)

# milter client (smtpd_milters, non_smtpd_milters)
milter_replies = Counter(
    "postbus_milter_replies", "milter decisions by milter, event and action (continue, accept, "
    "reject, tempfail, discard, quarantine, shutdown, replycode, skip)",
    ["milter", "event", "action"],
)
milter_edits = Counter(
    "postbus_milter_edits", "message modifications a milter asked for, by action",
    ["milter", "action"],
)
milter_errors = Counter(
    "postbus_milter_errors", "milter failures (connect, timeout, protocol, closed) that "
    "milter_default_action answered", ["milter", "kind"],
)
milter_event_seconds = Histogram(
    "postbus_milter_event_seconds", "time from sending a milter event to its final reply",
    ["milter", "event"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
)
