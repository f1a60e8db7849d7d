"""Verification throughput of one apikm worker, measured with wrk on loopback.

Starts the real ``apikm serve`` (SQLite, one uvicorn worker) against the local Keycloak,
creates a key through the API with a real token, then drives ``POST /v1/verify`` with wrk and
prints requests per second for a valid key, a malformed key, and ``/healthz`` (the cost of
the server itself) with the ratios between them.

    .venv/bin/python -m bench.verify_throughput [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse
import json

import httpx

from apikm.devstack import keycloak
from bench.wrk import require_wrk, run_wrk
from tests.support.apikm_server import apikm_server
from tests.support.keycloak_tokens import access_token

WRK_POST = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""


def wrk(url: str, seconds: int, connections: int, body: str | None = None) -> float:
    lua = WRK_POST.format(body=json.dumps(body)) if body is not None else None
    result = run_wrk(url, seconds, connections, lua=lua)
    print(f"  {url:<40} {result.rate:>9.0f} req/s   p99 {result.p99}")
    return result.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    options = parser.parse_args()
    require_wrk()
    stack = keycloak.up()
    # Failures must not trip the limiter while we measure the malformed path.
    with apikm_server(None, stack.base_url, rate_limit="100000000/minute",
                      access_log="false", log_level="WARNING") as server:
        token = access_token(stack.issuer, "alice")
        created = httpx.post(f"{server.url}/v1/keys", json={"name": "bench", "roles": ["analyst"]},
                             headers={"Authorization": f"Bearer {token}"}).json()
        valid = json.dumps({"key": created["key"], "required_roles": ["analyst"],
                            "client_ip": "10.1.2.3"})
        malformed = json.dumps({"key": "apikm_not-a-key", "client_ip": "10.1.2.4"})
        print(f"one uvicorn worker, wrk 1 thread {options.connections} connections, "
              f"{options.seconds}s each")
        health = wrk(f"{server.url}/healthz", options.seconds, options.connections)
        ok = wrk(f"{server.url}/v1/verify", options.seconds, options.connections, valid)
        bad = wrk(f"{server.url}/v1/verify", options.seconds, options.connections, malformed)
        uses = httpx.get(f"{server.url}/v1/keys/{created['id']}",
                         headers={"Authorization": f"Bearer {token}"}).json()["use_count"]
    print(f"verify VALID / healthz     = {ok / health:.2f}")
    print(f"verify MALFORMED / healthz = {bad / health:.2f}")
    print(f"use_count recorded for the key after the run: {uses} (batched writes)")


if __name__ == "__main__":
    main()
