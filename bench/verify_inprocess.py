"""``Verifier.verify`` in process, on a cached VALID key: the per-request cost of the hot path
without a server around it (what alert detection must not slow down).

    .venv/bin/python -m bench.verify_inprocess [--n 200000] [--rounds 5]

Builds the application context on a throwaway SQLite file (sync off), creates a key for a
made-up owner, verifies it once (so it is cached), then times ``--n`` verifications from a
handful of client addresses, best of ``--rounds``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from apikm.config import load_settings
from apikm.identity.owners import remember_owner
from apikm.identity.principal import Principal
from apikm.keys.service import NewKey
from apikm.migrations import upgrade
from apikm.web.context import build_context

ADDRESSES = ("10.1.2.3", "10.1.2.4", "192.0.2.7", "2001:db8::1")


async def measure(data_dir: Path, url: str, n: int, rounds: int) -> list[float]:
    settings = load_settings(data_dir=data_dir, database_url=url, sync_enabled=False,
                             cache_ttl_seconds=3600, usage_flush_seconds=3600)
    ctx = build_context(settings)
    await ctx.start()
    try:
        owner = Principal("u-bench", "bench", None, frozenset({"analyst"}), ())
        await remember_owner(ctx.engine, owner)
        key = (await ctx.keys.create(owner, NewKey(name="bench", roles=["analyst"]))).secret
        verify = ctx.verifier.verify
        for address in ADDRESSES:
            assert (await verify(key, client_ip=address, limiter_id=address)).valid
        results = []
        for _ in range(rounds):
            started = time.perf_counter()
            for i in range(n):
                address = ADDRESSES[i & 3]
                await verify(key, client_ip=address, limiter_id=address)
            results.append((time.perf_counter() - started) / n)
        return results
    finally:
        await ctx.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="apikm-bench-"))
    url = f"sqlite+aiosqlite:///{data_dir / 'apikm.db'}"
    upgrade(url)
    results = asyncio.run(measure(data_dir, url, args.n, args.rounds))
    print("Verifier.verify, cached VALID key, µs per call: "
          + ", ".join(f"{r * 1e6:.2f}" for r in results) + f"; best {min(results) * 1e6:.2f}")


if __name__ == "__main__":
    main()
