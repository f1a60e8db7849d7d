"""The gateway path side by side with its peers, in one run on one machine (issue 8).

Starts everything itself: Keycloak (devstack), apikm as shipped (``apikm serve``: SQLite,
uvicorn, one worker, access log and sync on; the same under ``--server granian`` to compare),
the toy check (sha256 + dict on a bare Starlette route under uvicorn), Debian's nginx with
``deploy/nginx/apikm.conf`` (and the micro-cache variant), then prints:

1. throughput and p99 at saturation (wrk -t1 -c32) of the nginx map limit, nginx static,
   the toy, nginx -> toy, apikm /v1/auth and /v1/verify, nginx -> apikm (without and with the
   micro-cache) and Keycloak's own token introspection, with the ratios the issue sets;
2. latency at half of apikm's peak rate, constant rate (vegeta on one core, the server on the
   other), and the longest stall, with the toy's at the same rate for the floor;
3. 10 keys against 1,000,000 keys: cache hits and database lookups of the same 10 keys (only
   the number stored differs), first uses of 100,000 distinct keys, database size and RSS;
4. the micro-cache's revocation delay.

    .venv/bin/python -m bench.gateway_path [--seconds 8] [--rate-seconds 60]
        [--keys 1000000] [--skip-keys]

Absolute rates drift on a shared machine; the ratios, measured side by side, hold.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from apikm.db import create_sqlite_reader
from apikm.devstack import keycloak
from apikm.keys.hashing import PepperRing, parse_peppers
from apikm.migrations import upgrade
from apikm.verify.sqlite_lookup import SqliteLookup
from apikm.verify.store import lookup_query
from bench.bulk_keys import load, seeded_keys
from bench.loadgen import attack
from bench.process import LOAD_CPU, SERVER_CPU, group_rss_mb, pinned
from bench.wrk import WrkResult, require_wrk, run_wrk
from tests.support.apikm_server import ApikmServer, apikm_server
from tests.support.echo import echo_server
from tests.support.gateways import nginx_gateway
from tests.support.keycloak_tokens import access_token
from tests.support.keys import create_key, user_client
from tests.support.ports import free_port, wait_http
from tests.support.replicas import DEMO_SYNC_SECRET

# apikm as `apikm serve` runs it out of the box (the test helper's DEBUG logs and 0.5 s
# usage flushes are for tests): INFO logs, access log on, sync on, 5 s flushes.
AS_SHIPPED = {"log_level": "INFO", "usage_flush_seconds": "5", "access_log": "true",
              "oidc_client_secret": DEMO_SYNC_SECRET}
HEADER_LUA = 'wrk.headers["X-API-Key"] = "{key}"\n'
POST_LUA = """wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "{content_type}"
"""
# Cycles through a list of keys (the key-count runs), one per request.
KEYS_LUA = """local keys = {{}}
for line in io.lines("{path}") do keys[#keys + 1] = line end
local i = 0
request = function()
  i = i % #keys + 1
  return wrk.format("GET", nil, {{["X-API-Key"] = keys[i]}})
end
"""


class Table:
    def __init__(self, seconds: int, connections: int) -> None:
        self.seconds, self.connections = seconds, connections
        self.rates: dict[str, WrkResult] = {}

    def run(self, name: str, url: str, lua: str | None = None) -> float:
        result = run_wrk(url, self.seconds, self.connections, threads=1, lua=lua)
        self.rates[name] = result
        print(f"  {name:<44} {result.rate:>9,.0f} req/s   p99 {result.p99:>8}"
              f"   non-2xx {result.non_2xx}", flush=True)
        return result.rate


def ratio_line(name: str, value: float, target: float, higher: bool = True) -> bool:
    met = value >= target if higher else value <= target
    sign = ">=" if higher else "<="
    print(f"  {name:<58} {value:>7.3f}   target {sign} {target:<6} {'met' if met else 'NOT MET'}")
    return met


@contextlib.contextmanager
def toy_server(key: str) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "bench.toy:app", "--host", "127.0.0.1", "--port",
         str(port), "--no-access-log", "--log-level", "warning"],
        env={**os.environ, "TOY_KEY": key}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/check", ok=(401,), alive=process.poll)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=10)


def nginx_extra(key: str) -> tuple[str, str]:
    """(server-level, http-level) additions: the map limit, a public file, the toy behind
    auth_request, all in the same nginx as apikm's block."""
    http_level = f"""
map_hash_bucket_size 128;  # the key is longer than the default bucket
map $http_x_api_key $bench_key_ok {{ "{key}" 1; default 0; }}
upstream toy {{ server TOY; keepalive 32; }}
"""
    server_level = """
    location = /limit { if ($bench_key_ok = 0) { return 401; } return 200 "ok"; }
    location = /public/dem.tif { alias {srv}/data/dem.tif; }
    location /toy/ { auth_request /_toy; alias {srv}/data/; }
    location = /_toy {
        internal;
        proxy_pass http://toy/check;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_http_version 1.1;
        proxy_set_header Connection "";
    }
"""
    return server_level, http_level


def keycloak_introspection_lua(token: str) -> str:
    body = f"token={token}&client_id=apikm&client_secret={DEMO_SYNC_SECRET}"
    return POST_LUA.format(body=json.dumps(body),
                           content_type="application/x-www-form-urlencoded")


def database_mb(server: ApikmServer) -> float:
    path = Path(server.database_url.split("///", 1)[1])
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 2**20


def throughput(options: argparse.Namespace, stack: keycloak.StackInfo) -> dict[str, float]:
    table = Table(options.seconds, options.connections)
    token = access_token(stack.issuer, "alice")
    with apikm_server(None, stack.base_url, **AS_SHIPPED) as apikm, \
            echo_server() as upstream, user_client(apikm.url, token) as alice:
        key, _created = create_key(alice, ["analyst"])
        server_level, http_level = nginx_extra(key)
        with toy_server(key) as (toy, toy_pid):
            http_level = http_level.replace("TOY", toy.removeprefix("http://"))
            with nginx_gateway(apikm.url, upstream, server_level, http_level) as nginx, \
                    nginx_gateway(apikm.url, upstream,
                                  site_file="apikm-microcache.conf") as cached:
                for url in (f"{nginx.url}/data/dem.tif", f"{cached.url}/data/dem.tif",
                            f"{nginx.url}/toy/dem.tif", f"{nginx.url}/limit"):
                    answer = httpx.get(url, headers={"X-API-Key": key})
                    assert answer.status_code == 200, (url, answer.status_code)
                header = HEADER_LUA.format(key=key)
                verify_body = json.dumps({"key": key, "required_roles": ["analyst"]})
                print(f"wrk -t1 -c{options.connections} {options.seconds}s each, one run:")
                rates = {
                    "nginx map limit": table.run("nginx answering from a key map",
                                                 f"{nginx.url}/limit", header),
                    "nginx static": table.run("nginx static file, no auth",
                                              f"{nginx.url}/public/dem.tif"),
                    "toy": table.run("toy check (sha256 + dict, Starlette, uvicorn)",
                                     f"{toy}/check", header),
                    "nginx toy": table.run("nginx auth_request -> toy",
                                           f"{nginx.url}/toy/dem.tif", header),
                    "auth": table.run("apikm GET /v1/auth",
                                      f"{apikm.url}/v1/auth?role=analyst", header),
                    "verify": table.run("apikm POST /v1/verify", f"{apikm.url}/v1/verify",
                                        POST_LUA.format(body=json.dumps(verify_body),
                                                        content_type="application/json")),
                    "nginx apikm": table.run("nginx auth_request -> apikm",
                                             f"{nginx.url}/data/dem.tif", header),
                    "nginx apikm cached": table.run("nginx -> apikm with the 1 s micro-cache",
                                                    f"{cached.url}/data/dem.tif", header),
                    **other_server(table, stack, upstream),
                    "keycloak": table.run(
                        "Keycloak token introspection",
                        f"{stack.issuer}/protocol/openid-connect/token/introspect",
                        keycloak_introspection_lua(token)),
                    "healthz": table.run("apikm GET /healthz (FastAPI route)",
                                         f"{apikm.url}/healthz"),
                }
                rates["revocation"] = microcache_revocation(alice, cached.url)
                rates.update(constant_rate(options, apikm, key, rates["auth"],
                                           (toy, toy_pid)))
    return rates


def other_server(table: Table, stack: keycloak.StackInfo, upstream: str) -> dict[str, float]:
    """apikm as shipped but under granian, the other server measured."""
    settings = {**AS_SHIPPED, "server": "granian"}
    with apikm_server(None, stack.base_url, **settings) as other, \
            user_client(other.url, access_token(stack.issuer, "alice")) as owner:
        key, _ = create_key(owner, ["analyst"])
        key_header = HEADER_LUA.format(key=key)
        body = json.dumps({"key": key, "required_roles": ["analyst"]})
        with nginx_gateway(other.url, upstream) as nginx:
            return {
                "auth granian": table.run("apikm GET /v1/auth, granian",
                                          f"{other.url}/v1/auth?role=analyst", key_header),
                "verify granian": table.run("apikm POST /v1/verify, granian",
                                            f"{other.url}/v1/verify",
                                            POST_LUA.format(body=json.dumps(body),
                                                            content_type="application/json")),
                "nginx granian": table.run("nginx auth_request -> apikm, granian",
                                           f"{nginx.url}/data/dem.tif", key_header),
            }


def microcache_revocation(alice: httpx.Client, gateway: str) -> float:
    """Seconds from revoking a key until the micro-cached nginx refuses it."""
    key, created = create_key(alice, ["analyst"])
    url = f"{gateway}/data/dem.tif"
    assert httpx.get(url, headers={"X-API-Key": key}).status_code == 200
    alice.delete(f"/v1/keys/{created['id']}").raise_for_status()
    started = time.monotonic()
    while httpx.get(url, headers={"X-API-Key": key}).status_code == 200:
        time.sleep(0.02)
    return time.monotonic() - started


def constant_rate(options: argparse.Namespace, apikm: ApikmServer, key: str,
                  peak: float, toy: tuple[str, int]) -> dict[str, float]:
    """Latency at half of apikm's peak, vegeta on one core and the server on the other
    (``process.pinned``); the toy at the same rate, the same way, for the floor."""
    rate = int(peak / 2)
    print(f"\nconstant rate, half of apikm's peak: {rate:,} req/s for {options.rate_seconds}s "
          f"(vegeta on CPU {LOAD_CPU}, the server on CPU {SERVER_CPU}):", flush=True)
    results: dict[str, float] = {}
    for name, url, pid in (("toy", f"{toy[0]}/check", toy[1]),
                           ("apikm", f"{apikm.url}/v1/auth?role=analyst", apikm.pid)):
        with pinned(pid):
            result = attack(url, rate, options.rate_seconds, {"X-API-Key": key}, cpu=LOAD_CPU)
        print(f"  {name:<6} achieved {result.rate:,.0f} req/s, {result.success:.1%} 2xx, p50 "
              f"{result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, max {result.max_ms:.1f} ms",
              flush=True)
        results.update({f"{name} p99 ms": result.p99_ms, f"{name} max ms": result.max_ms})
    return {"p99 ms": results["apikm p99 ms"], "max ms": results["apikm max ms"],
            "toy p99 ms": results["toy p99 ms"], "half rate": rate}


KEY_COUNT_RUNS = (
    # (name, cache TTL, keys cycled): hits and lookups use the same 10 keys on both
    # databases, so only the number of keys stored differs; first uses cycle through 100,000
    # keys of the big database, each one's first use a miss.
    ("hits", "5", 10),
    ("lookups", "0", 10),
    ("first uses", "5", 100_000),
)


def key_counts(options: argparse.Namespace, stack: keycloak.StackInfo) -> dict[str, float]:
    """Same apikm, a database of 10 keys and one of ``--keys`` keys: cache hits and
    database lookups of the same 10 keys, then first uses of 100,000 distinct keys."""
    token = access_token(stack.issuer, "alice")
    claims = httpx.get(f"{stack.issuer}/protocol/openid-connect/userinfo",
                       headers={"Authorization": f"Bearer {token}"}).json()
    owner = {"user_id": claims["sub"], "username": "alice", "email": claims.get("email"),
             "roles": ["analyst"], "groups": []}
    peppers_spec = "b1:bench-pepper-0123456789abcdef"
    peppers = parse_peppers(peppers_spec)
    table = Table(options.seconds, options.connections)
    results: dict[str, float] = {}
    print(f"\nkey count, wrk -t1 -c{options.connections} {options.seconds}s each "
          "(sync off for both: the bulk keys' owner is only in this database):")
    for count in (10, options.keys):
        folder = Path(tempfile.mkdtemp(prefix="apikm-keys-"))
        database = f"sqlite+aiosqlite:///{folder / 'apikm.db'}"
        upgrade(database)
        started = time.monotonic()
        keys = seeded_keys("apikm", count)
        load(f"sqlite:///{folder / 'apikm.db'}", peppers, owner, keys, progress=count > 10)
        loaded = time.monotonic() - started
        for mode, ttl, cycled in KEY_COUNT_RUNS:
            if cycled > count:
                continue
            with apikm_server(database, stack.base_url, peppers=peppers_spec,
                              sync_enabled="false", cache_ttl_seconds=ttl,
                              usage_flush_seconds="5", log_level="WARNING") as server:
                (folder / "set.txt").write_text("\n".join(keys[:cycled]) + "\n")
                lua = KEYS_LUA.format(path=folder / "set.txt")
                results[f"{mode} {count}"] = table.run(
                    f"{count:>9,} keys, {mode} ({cycled:,} keys cycled)",
                    f"{server.url}/v1/auth", lua)
                if mode == "hits":
                    results[f"rss {count}"] = group_rss_mb(server.pid)
                    results[f"db {count}"] = database_mb(server)
        results[f"lookup us {count}"] = lookup_cost_us(database, peppers, keys)
        print(f"  {count:>9,} keys: loaded in {loaded:.1f} s, database "
              f"{results[f'db {count}']:.1f} MB, apikm RSS {results[f'rss {count}']:.0f} MB, "
              f"one lookup in process {results[f'lookup us {count}']:.1f} µs")
    return results


def key_count_lines(k: dict[str, float], many: int) -> list[bool]:
    met = [ratio_line(f"{many:,} / 10 keys, cache hits", k[f"hits {many}"] / k["hits 10"],
                      0.9),
           ratio_line(f"{many:,} / 10 keys, database lookups (cache off)",
                      k[f"lookups {many}"] / k["lookups 10"], 0.9)]
    print(f"  {'(for scale) first uses of 100,000 keys / lookups of 10':<58} "
          f"{k[f'first uses {many}'] / k['lookups 10']:>7.3f}   (each first use also writes "
          "the key's usage and network rows)")
    print(f"  {'(for scale) one lookup in process, many / 10 keys':<58} "
          f"{k[f'lookup us {many}'] / k['lookup us 10']:>7.3f}")
    return met


def lookup_cost_us(database: str, peppers: PepperRing, keys: list[str],
                   rounds: int = 20_000) -> float:
    """One key lookup as the key store runs it on SQLite (driver level, no cache), in µs:
    what a first use costs apart from the thread hop, free of the load generator's sharing
    (with 10 keys, concurrent misses of one key share one query)."""
    reader = create_sqlite_reader(database)
    assert reader is not None
    lookup = SqliteLookup(reader, lookup_query)
    hashes = [[peppers.digest(key)] for key in keys[:rounds]]
    for candidates in hashes[:100]:  # warm the statement and the page cache alike
        lookup.first(candidates)
    started = time.perf_counter()
    for n in range(rounds):
        assert lookup.first(hashes[n % len(hashes)]) is not None
    reader.dispose()
    return (time.perf_counter() - started) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rate-seconds", type=int, default=60)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--skip-keys", action="store_true")
    parser.add_argument("--only-keys", action="store_true", help="just the key-count part")
    options = parser.parse_args()
    require_wrk()
    stack = keycloak.up()
    if options.only_keys:
        print(f"\n{sum(key_count_lines(key_counts(options, stack), options.keys))} of 2 "
              "targets met")
        return
    r = throughput(options, stack)
    k = {} if options.skip_keys else key_counts(options, stack)
    print("\nratios (one run, side by side):")
    met = [
        ratio_line("apikm /v1/auth / toy", r["auth"] / r["toy"], 0.9),
        ratio_line("apikm /v1/verify / toy", r["verify"] / r["toy"], 0.9),
        ratio_line("nginx -> apikm / nginx -> toy", r["nginx apikm"] / r["nginx toy"], 0.9),
        ratio_line("apikm /v1/auth / Keycloak introspection", r["auth"] / r["keycloak"], 5),
        ratio_line("nginx -> apikm (micro-cache) / nginx static",
                   r["nginx apikm cached"] / r["nginx static"], 0.5),
        ratio_line("micro-cache: seconds until a revoked key is refused", r["revocation"], 1.0,
                   higher=False),
        ratio_line("p99 ms at half of peak (constant rate)", r["p99 ms"], 5.0, higher=False),
        ratio_line(f"longest request ms in {options.rate_seconds}s at half of peak",
                   r["max ms"], 20.0, higher=False),
    ]
    print(f"  {'(for scale) toy p99 ms at the same constant rate':<58} {r['toy p99 ms']:>7.3f}")
    print(f"  {'(for scale) nginx map limit / nginx static':<58} "
          f"{r['nginx map limit'] / r['nginx static']:>7.3f}")
    print(f"  {'(for scale) apikm /healthz (FastAPI) / toy':<58} {r['healthz'] / r['toy']:>7.3f}")
    for name in ("auth", "verify", "nginx"):
        key = "nginx apikm" if name == "nginx" else name
        print(f"  {f'(server choice) {name}: granian / uvicorn (shipped)':<58} "
              f"{r[name + ' granian'] / r[key]:>7.3f}")
    if k:
        met += key_count_lines(k, options.keys)
    print(f"\n{sum(met)} of {len(met)} targets met")


if __name__ == "__main__":
    main()
