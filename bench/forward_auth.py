"""nginx ``auth_request`` + apikm against nginx serving the same file with no auth, one run.

Starts the real ``apikm serve`` (SQLite, one uvicorn worker, access log off), Debian's nginx
with ``deploy/nginx/apikm.conf`` and a small GeoTIFF, creates a key through the API with a
real Keycloak token, then drives wrk at ``/data/dem.tif`` with the key (every request checked
by apikm) and at the same file through a location without auth, and prints both and their
ratio. wrk sends its requests from loopback, so nothing here leaves the machine.

    .venv/bin/python -m bench.forward_auth [--seconds 10] [--connections 32]
"""

from __future__ import annotations

import argparse

import httpx

from apikm.devstack import keycloak
from bench.wrk import require_wrk, run_wrk
from tests.support.apikm_server import apikm_server
from tests.support.echo import echo_server
from tests.support.gateways import nginx_gateway
from tests.support.keycloak_tokens import access_token
from tests.support.keys import create_key, user_client

WRK_HEADER = 'wrk.headers["X-API-Key"] = "{key}"\n'


def wrk(url: str, seconds: int, connections: int, key: str | None = None) -> float:
    lua = WRK_HEADER.format(key=key) if key is not None else None
    result = run_wrk(url, seconds, connections, threads=2, lua=lua)
    label = "with apikm" if key else "no auth   "
    print(f"  {label} {url:<44} {result.rate:>9.0f} req/s   p99 {result.p99:>8}   "
          f"non-2xx {result.non_2xx}")
    return result.rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    options = parser.parse_args()
    require_wrk()
    stack = keycloak.up()
    # The same file at a location without auth, in the same nginx.
    public = "    location = /public/dem.tif { alias {srv}/data/dem.tif; }"
    with apikm_server(None, stack.base_url, access_log="false", log_level="WARNING") as server, \
            echo_server() as upstream, nginx_gateway(server.url, upstream, public) as gateway:
        client = user_client(server.url, access_token(stack.issuer, "alice"))
        key, _ = create_key(client, ["analyst"])
        protected_url = f"{gateway.url}/data/dem.tif"
        assert httpx.get(protected_url, headers={"X-API-Key": key}).status_code == 200
        assert httpx.get(protected_url).status_code == 401
        print(f"nginx + apikm, {options.connections} connections, {options.seconds}s each:")
        with_auth = wrk(protected_url, options.seconds, options.connections, key)
        without = wrk(f"{gateway.url}/public/dem.tif", options.seconds, options.connections)
        print(f"  ratio with/without auth: {with_auth / without:.3f} "
              f"(auth costs {without / with_auth:.1f}x)")


if __name__ == "__main__":
    main()
