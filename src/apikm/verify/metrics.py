"""Prometheus metrics of the verification path."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

VERIFICATIONS = Counter(
    "apikm_verifications_total", "Key verifications by outcome", ["code", "endpoint"]
)
KEY_LOOKUPS = Counter(
    "apikm_key_lookups_total", "Key lookups by where they were answered", ["source"]
)
VERIFY_LATENCY = Histogram(
    "apikm_verification_seconds",
    "Time to verify a key, lookup included",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
