"""webhooks: queue events POSTed to HTTP endpoints, signed, at least once.

One process (or several replicas) per master.cf line whose command is
``webhooks``; the service name names the webhook. See
:mod:`webhooks.dispatch` for delivery, :mod:`webhooks.sign` for the
signature and :mod:`webhooks.settings` for the parameters.
"""
