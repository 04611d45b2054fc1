"""Address rewriting as Postfix's cleanup does it, for every way into the queue.

smtpd (the ingress), ``postbus sendmail``, bounces and forwarded mail all
go through the same steps before anything is queued: canonicalization in
the local context, canonical maps, masquerading, virtual alias expansion
with duplicate elimination, header address rewriting, and header and body
checks. See
:mod:`postbus.cleanup.api` for the order.
"""

from postbus.cleanup.api import Cleanup, CleanupState, Context
from postbus.cleanup.checks import Origin
from postbus.cleanup.status import CleanupError, MessageDiscarded

__all__ = ["Cleanup", "CleanupError", "CleanupState", "Context", "MessageDiscarded", "Origin"]
