"""Prometheus metrics of the verification path.

The hot path only adds to plain integers (no lock, no label lookup per request); a collector
turns them into the usual counter and histogram families when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0)


class VerifyStats:
    def __init__(self) -> None:
        self.outcomes: dict[tuple[str, str], int] = {}  # (code, endpoint) -> count
        self.lookups = {"cache": 0, "database": 0}
        self._buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self._sum = 0.0

    def outcome(self, code: str, endpoint: str, seconds: float) -> None:
        key = (code, endpoint)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        self._buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self._sum += seconds

    def collect(self) -> Iterator[Metric]:
        outcomes = CounterMetricFamily("apikm_verifications", "Key verifications by outcome",
                                       labels=["code", "endpoint"])
        for (code, endpoint), count in sorted(self.outcomes.items()):
            outcomes.add_metric([code, endpoint], count)
        lookups = CounterMetricFamily("apikm_key_lookups",
                                      "Key lookups by where they were answered",
                                      labels=["source"])
        for source, count in self.lookups.items():
            lookups.add_metric([source], count)
        cumulative, buckets = 0, []
        for bound, count in zip((*LATENCY_BUCKETS, float("inf")), self._buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        latency = HistogramMetricFamily("apikm_verification_seconds",
                                        "Time to verify a key, lookup included")
        latency.add_metric([], buckets, self._sum)
        yield from (outcomes, lookups, latency)


STATS = VerifyStats()
REGISTRY.register(STATS)
