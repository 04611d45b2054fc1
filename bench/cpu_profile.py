"""Run a Postbus role under cProfile counting CPU time, not wall time (the box is shared:
a wall-clock profile mostly measures waiting for a core). Used by delivery_bench --profile:

    python bench/cpu_profile.py <module> <role arguments...>   (with POSTBUS_PROFILE_DIR set)
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time

_profile = cProfile.Profile
cProfile.Profile = lambda *a, **k: _profile(time.process_time)  # type: ignore[assignment,misc]
sys.argv = sys.argv[1:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
