"""How long a revocation made through one replica takes to stop the key on another (issue 9).

Starts its own PostgreSQL, Redis and two ``apikm serve`` replicas on one database (Keycloak
from the devstack), then, per trial: create a key on A, verify it on B (so B caches it),
revoke it on A, and poll B's ``/v1/verify`` every 2 ms until it answers REVOKED. The time is
from the revoke's answer to B's first refusal. Once with PostgreSQL alone (LISTEN/NOTIFY),
once with Redis configured (pub/sub), 20 trials each:

    .venv/bin/python -m bench.propagation [--trials 20]

Targets: max < 1 s, median < 0.2 s. B's cache TTL stays at its default (5 s), so a key
refused early was refused because of the change event, not because its cache entry expired.
"""

from __future__ import annotations

import argparse
import statistics
import time
from contextlib import ExitStack

import httpx

from apikm.devstack import keycloak
from tests.support.keycloak_tokens import access_token
from tests.support.keys import create_key, user_client, verify_key
from tests.support.postgres import postgres_server
from tests.support.redis import redis_server
from tests.support.replicas import replica_pair

POLL = 0.002
GIVE_UP = 10.0


def one_trial(alice: httpx.Client, on_b: httpx.Client) -> float:
    key, created = create_key(alice, ["analyst"])
    assert verify_key(on_b, key)["code"] == "VALID"  # now in B's cache
    alice.delete(f"/v1/keys/{created['id']}").raise_for_status()
    revoked = time.perf_counter()
    while verify_key(on_b, key)["code"] == "VALID":
        if time.perf_counter() - revoked > GIVE_UP:
            raise SystemExit(f"B still accepted the key {GIVE_UP} s after its revocation")
        time.sleep(POLL)
    return time.perf_counter() - revoked


def measure(label: str, trials: int, postgres_url: str, redis_url: str | None,
            stack: keycloak.StackInfo) -> list[float]:
    token = access_token(stack.issuer, "alice")
    with replica_pair(postgres_url, stack.base_url, redis_url, log_level="INFO",
                      rate_limit="100000/minute", keycloak_sync_freq="300") as (a, b), \
            user_client(a.url, token) as alice, httpx.Client(base_url=b.url) as on_b:
        one_trial(alice, on_b)  # warm-up: connections, first-use paths
        seconds = [one_trial(alice, on_b) for _ in range(trials)]
    ms = sorted(s * 1000 for s in seconds)
    print(f"  {label:<34} median {statistics.median(ms):7.1f} ms   p90 "
          f"{ms[int(len(ms) * 0.9) - 1]:7.1f} ms   max {ms[-1]:7.1f} ms   min {ms[0]:6.1f} ms",
          flush=True)
    return seconds


def verdict(label: str, seconds: list[float]) -> int:
    median, worst = statistics.median(seconds), max(seconds)
    met = int(worst < 1.0) + int(median < 0.2)
    print(f"  {label:<34} max {worst * 1000:6.1f} ms < 1000: "
          f"{'met' if worst < 1.0 else 'NOT MET'};  median {median * 1000:6.1f} ms < 200: "
          f"{'met' if median < 0.2 else 'NOT MET'}")
    return met


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    options = parser.parse_args()
    stack = keycloak.up()
    with ExitStack() as stack_of:
        postgres_url = stack_of.enter_context(postgres_server())
        redis_url = stack_of.enter_context(redis_server())
        print(f"revocation on replica A until replica B refuses, {options.trials} trials:")
        results = {
            "PostgreSQL (LISTEN/NOTIFY)": measure("PostgreSQL (LISTEN/NOTIFY)", options.trials,
                                                  postgres_url, None, stack),
            "PostgreSQL + Redis (pub/sub)": measure("PostgreSQL + Redis (pub/sub)",
                                                    options.trials, postgres_url, redis_url,
                                                    stack),
        }
    print("targets:")
    met = sum(verdict(label, seconds) for label, seconds in results.items())
    print(f"{met} of {2 * len(results)} targets met")


if __name__ == "__main__":
    main()
