"""Soak: apikm as shipped under a constant mixed load for a long time (issue 10).

Starts Keycloak (devstack), apikm as ``apikm serve`` runs it (SQLite, granian, access log
and sync on), an upstream and nginx with ``deploy/nginx/apikm.conf``. Measures apikm's peak
on ``/v1/auth`` (wrk), then sends half of it, constant rate (vegeta), for ``--minutes``
minutes, a mix of:

* valid keys on ``/v1/auth`` (200) and ``/v1/verify`` (200, valid and not: the wrong ones
  for a client address the trusted caller names, as a gateway does),
* wrong keys from 4 forwarded client addresses (401, or 429 once an address is limited),
* requests without a key (401),
* forward auth through nginx: a range of a GeoTIFF with a valid key (206), none (401).

Every answer is checked against what that request must get. Per minute it prints requests,
errors, p50/p99/max latency and apikm's resident memory; at the end the totals and the
targets: 0 errors, p99 and memory flat (last minute within 10 % / 10 MB of the first).

    .venv/bin/python -m bench.soak [--minutes 30] [--minute-seconds 60]
"""

from __future__ import annotations

import argparse
import json

from apikm.devstack import keycloak
from bench.gateway_path import AS_SHIPPED, HEADER_LUA
from bench.loadgen import Outcome, Target, attack_mixed
from bench.process import group_rss_mb
from bench.wrk import require_wrk, run_wrk
from tests.support.apikm_server import apikm_server
from tests.support.echo import echo_server
from tests.support.gateways import nginx_gateway
from tests.support.keycloak_tokens import access_token
from tests.support.keys import create_key, user_client

WRONG = "apikm_" + "W" * 40


def mix(apikm: str, nginx: str, key: str) -> list[Target]:
    """One round of the mix; vegeta sends the targets in turn."""
    auth = f"{apikm}/v1/auth?role=analyst"
    json_type = {"Content-Type": "application/json"}
    valid = [Target("auth valid", "GET", auth, {"X-API-Key": key})] * 8
    verify = [
        Target("verify valid", "POST", f"{apikm}/v1/verify", json_type,
               json.dumps({"key": key, "required_roles": ["analyst"]}).encode()),
        # A gateway (trusted: loopback) speaking for its client; counted against that client.
        Target("verify wrong", "POST", f"{apikm}/v1/verify", json_type,
               json.dumps({"key": WRONG, "client_ip": "10.77.1.1"}).encode()),
    ] * 2
    wrong = [Target(f"auth wrong from 10.77.0.{i}", "GET", auth,
                    {"X-API-Key": WRONG, "X-Forwarded-For": f"10.77.0.{i}"},
                    expected=frozenset({401, 429})) for i in range(1, 5)]
    missing = [Target("auth no key", "GET", auth, {}, expected=frozenset({401}))]
    gateway = [
        Target("nginx valid", "GET", f"{nginx}/data/dem.tif",
               {"X-API-Key": key, "Range": "bytes=0-1023"}, expected=frozenset({206})),
    ] * 4 + [Target("nginx no key", "GET", f"{nginx}/data/dem.tif", {},
                    expected=frozenset({401}))]
    return valid + verify + wrong + missing + gateway


def report_minute(minute: int, outcome: Outcome, rss: float) -> None:
    errors = sum(outcome.errors.values())
    print(f"  {minute:>6} {outcome.requests:>10,} {errors:>7} {outcome.p50_ms:>8.2f} "
          f"{outcome.p99_ms:>8.2f} {outcome.max_ms:>9.1f} {rss:>8.1f}", flush=True)
    for label, count in sorted(outcome.errors.items()):
        print(f"         ! {count} x {label}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--minute-seconds", type=int, default=60,
                        help="length of one reporting period (shorter for a quick try)")
    options = parser.parse_args()
    require_wrk()
    stack = keycloak.up()
    token = access_token(stack.issuer, "alice")
    with apikm_server(None, stack.base_url, **AS_SHIPPED) as apikm, \
            echo_server() as upstream, user_client(apikm.url, token) as alice, \
            nginx_gateway(apikm.url, upstream) as nginx:
        key, _ = create_key(alice, ["analyst"])
        peak = run_wrk(f"{apikm.url}/v1/auth?role=analyst", 8, 32,
                       lua=HEADER_LUA.format(key=key)).rate
        rate = int(peak / 2)
        print(f"apikm /v1/auth peak {peak:,.0f} req/s (wrk -t1 -c32 8s); soak at {rate:,} req/s "
              f"for {options.minutes} x {options.minute_seconds}s, mixed traffic:")
        print(f"  {'minute':>6} {'requests':>10} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'max ms':>9} {'RSS MB':>8}")
        targets = mix(apikm.url, nginx.url, key)
        minutes: list[tuple[Outcome, float]] = []
        for minute in range(1, options.minutes + 1):
            outcome = attack_mixed(targets, rate, options.minute_seconds)
            rss = group_rss_mb(apikm.pid)
            minutes.append((outcome, rss))
            report_minute(minute, outcome, rss)
    summarise(minutes)


def summarise(minutes: list[tuple[Outcome, float]]) -> None:
    total = sum(o.requests for o, _ in minutes)
    errors = sum(sum(o.errors.values()) for o, _ in minutes)
    first_p99, last_p99 = minutes[0][0].p99_ms, minutes[-1][0].p99_ms
    worst_p99 = max(o.p99_ms for o, _ in minutes)
    # Memory after the first minute (caches, pools and the collector warmed up) to the end.
    settled, last_rss = minutes[min(1, len(minutes) - 1)][1], minutes[-1][1]
    growth = last_rss - settled
    print(f"\n{total:,} requests, {errors} errors; p99 first/last/worst minute "
          f"{first_p99:.2f}/{last_p99:.2f}/{worst_p99:.2f} ms; RSS {settled:.1f} -> "
          f"{last_rss:.1f} MB ({growth:+.1f} MB)")
    met = [errors == 0, last_p99 <= max(first_p99 * 1.1, first_p99 + 1.0),
           growth <= max(10.0, settled * 0.1)]
    names = ["0 errors", "p99 flat (last minute within 10 % or 1 ms of the first)",
             "RSS flat (within 10 MB or 10 % after the first minute)"]
    for name, ok in zip(names, met, strict=True):
        print(f"  {name:<60} {'met' if ok else 'NOT MET'}")
    print(f"{sum(met)} of {len(met)} targets met")


if __name__ == "__main__":
    main()
