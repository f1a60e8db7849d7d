"""``apikm keys list`` against the database of a running apikm, as an admin would use it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable

import httpx
import pytest
import sqlalchemy as sa

from apikm.db import create_engine
from apikm.keys.tables import api_keys
from tests.support.apikm_server import ApikmServer
from tests.support.keys import new_key

pytestmark = pytest.mark.integration


async def _rename(database_url: str, key_id: str, name: str) -> None:
    """A name the API refuses, written as an older apikm (or a hand-edited row) could."""
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.update(api_keys).where(api_keys.c.id == key_id)
                               .values(name=name))
    finally:
        await engine.dispose()


def test_keys_list_escapes_what_a_terminal_would_obey(
        apikm: ApikmServer, as_user: Callable[[str], httpx.Client]) -> None:
    key_id = new_key(as_user("alice"))["id"]
    asyncio.run(_rename(apikm.database_url, key_id, "evil\x1b]0;pwned\x07\x1b[2J\nfake row"))
    listed = subprocess.run([sys.executable, "-m", "apikm.cli", "keys", "list"],
                            env=apikm.env, check=True, capture_output=True, text=True)
    line = next(line for line in listed.stdout.splitlines() if line.startswith(key_id))
    assert line.endswith("evil\\x1b]0;pwned\\x07\\x1b[2J\\nfake row")
    assert "\x1b" not in listed.stdout and "\x07" not in listed.stdout
