"""Hypothesis profiles for the fuzzers.

``make test`` runs them with the ``postbus`` profile: a fixed seed
(derandomize) and a small number of examples, so the whole set is quick
and a failure reproduces the same way everywhere.  ``make fuzz`` sets
``HYPOTHESIS_PROFILE=fuzz``: random seeds and many more examples, with
the example database in ``.hypothesis/`` so a failure found once is tried
first next time.  Time limits are the tests' own (``deadline`` is off: a
loaded 2-CPU machine must not turn a slow example into a failure).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "postbus",
    derandomize=True,
    max_examples=120,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fuzz",
    max_examples=10_000,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "postbus"))
