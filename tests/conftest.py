"""Fixtures shared by the whole suite."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# Property tests share two cores with everything else: no per-example deadline, and slow
# data generation is not a failure.
settings.register_profile("apikm", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("apikm")
