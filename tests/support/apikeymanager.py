"""CS Group APIKeyManager's side of the tests: its database and its clients.

- ``old_database``: an ``api_tokens`` table with the old service's layout (naive UTC
  datetimes, JSON columns), holding uuid4 keys hashed the old way (unsalted SHA-256 hex);
- ``RsServerClient``: what RS-PYTHON's rs-server does with ``/auth/check_key`` (GET with
  ``x-api-key``; on 2xx read ``user_login``, ``iam_roles`` and ``config``; else forward the
  status with ``detail``, ``description`` or ``error`` from the body);
- ``real_rs_server_common``: rs-server's own client package from PyPI, installed into a
  cache outside the repository, to run its ``apikey_security`` for real.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from apikm.config import normalize_database_url

_meta = sa.MetaData()
API_TOKENS = sa.Table(
    "api_tokens", _meta,
    sa.Column("api_key", sa.String, primary_key=True, index=True),
    sa.Column("name", sa.String),
    sa.Column("user_id", sa.String, index=True, nullable=False),
    sa.Column("user_login", sa.String),
    sa.Column("user_active", sa.Boolean, default=True),
    sa.Column("is_active", sa.Boolean, default=True),
    sa.Column("never_expire", sa.Boolean, default=False),
    sa.Column("expiration_date", sa.DateTime),
    sa.Column("latest_query_date", sa.DateTime),
    sa.Column("total_queries", sa.Integer, default=0),
    sa.Column("latest_sync_date", sa.DateTime),
    sa.Column("iam_roles", sa.JSON, default=[]),
    sa.Column("config", sa.JSON, default={}),
    sa.Column("allowed_referers", sa.JSON, default=None),
)


def old_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def naive_utc(delta: timedelta = timedelta(0)) -> datetime:
    """What the old service wrote: ``datetime.now(UTC)`` into a naive column."""
    return (datetime.now(UTC) + delta).replace(tzinfo=None)


@dataclass
class OldKey:
    """A key as its holder knows it, and its row in ``api_tokens``."""

    key: str
    row: dict[str, Any] = field(default_factory=dict)


def old_key(user_id: str, user_login: str, *, hashed: bool = True, **row: Any) -> OldKey:
    key = str(uuid.uuid4())
    values: dict[str, Any] = {
        "api_key": old_hash(key) if hashed else key, "name": f"old {key[:4]}",
        "user_id": user_id, "user_login": user_login, "user_active": True, "is_active": True,
        "never_expire": False, "expiration_date": naive_utc(timedelta(days=10)),
        "latest_query_date": naive_utc(timedelta(hours=-1)), "total_queries": 7,
        "latest_sync_date": naive_utc(timedelta(minutes=-2)), "iam_roles": ["analyst"],
        "config": {}, "allowed_referers": None, **row,
    }
    return OldKey(key, values)


def old_database(url: str, keys: list[OldKey]) -> None:
    """Create ``api_tokens`` at ``url`` (SQLite file or PostgreSQL) and insert ``keys``."""
    async def build() -> None:
        engine = create_async_engine(normalize_database_url(url))
        async with engine.begin() as conn:
            await conn.run_sync(_meta.create_all)
            if keys:
                await conn.execute(sa.insert(API_TOKENS), [k.row for k in keys])
        await engine.dispose()

    asyncio.run(build())


# --- rs-server's client ---------------------------------------------------------------------
class UacError(Exception):
    """rs-server's HTTPException: the check's status, forwarded with ``UAC manager: ...``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class AuthInfo:
    user_login: str
    iam_roles: list[str]
    config: dict[str, Any]


class RsServerClient:
    """rs-server's ``apikey_security`` without its cache: one GET per call."""

    def __init__(self, check_url: str) -> None:
        self.check_url = check_url  # RSPY_UAC_CHECK_URL

    def check(self, key: str) -> AuthInfo | None:
        if not key:
            return None  # no key: rs-server does not call the service at all
        response = httpx.get(self.check_url, headers={"x-api-key": key}, timeout=30)
        if response.is_success:
            body = response.json()
            return AuthInfo(body["user_login"], body["iam_roles"], body["config"])
        raise UacError(response.status_code, f"UAC manager: {read_error(response)}")


def read_error(response: httpx.Response) -> str:
    try:
        body = response.json()
        if isinstance(body, str):
            return body
        return str(body.get("detail") or body.get("description") or body["error"])
    except Exception:  # rs-server falls back to the raw body for anything unreadable
        return response.content.decode("utf-8", errors="ignore")


# rs-server-common from PyPI and the few light packages its apikey module imports (its full
# dependency set pulls eodag, boto3, stac-fastapi...). Versions as its metadata asks.
RS_SERVER_PACKAGES = ("rs-server-common==0.2", "asyncache==0.3.1", "cachetools==5.5.2",
                      "python-logging-loki==0.3.1", "rfc3339==6.2", "filelock==3.16.1")
_RUNNER = """
import asyncio, dataclasses, json, sys
import httpx
from fastapi import HTTPException
from rs_server_common import settings
from rs_server_common.authentication import apikey

async def main():
    settings.set_http_client(httpx.AsyncClient())
    answers = []
    for key in json.loads(sys.argv[1]):
        apikey.ttl_cache.clear()
        try:
            info = await apikey.apikey_security(key)
            answers.append({"ok": True, "info": dataclasses.asdict(info) if info else None})
        except HTTPException as exc:
            answers.append({"ok": False, "status": exc.status_code, "detail": exc.detail})
    await settings.del_http_client()
    print(json.dumps(answers))

asyncio.run(main())
"""


def real_rs_server_common() -> Path:
    """A directory to put on PYTHONPATH with rs-server's real client; installed once under
    ``~/.cache/apikm`` (RuntimeError saying why when PyPI cannot be reached)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "apikm"
    target = cache / "rs-server-common-0.2"
    if (target / "rs_server_common" / "authentication" / "apikey.py").is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=cache, prefix=".rs-server-"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                           "--target", str(staging), *RS_SERVER_PACKAGES],
                          capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"pip could not install rs-server-common: {done.stderr[-500:]}")
    try:
        staging.rename(target)
    except OSError:  # another test run installed it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return target


def run_real_client(check_url: str, keys: list[str]) -> list[dict[str, Any]]:
    """rs-server's ``apikey_security`` on each key, in a process of its own."""
    import json

    env = {**os.environ, "RSPY_UAC_CHECK_URL": check_url,
           "PYTHONPATH": str(real_rs_server_common())}
    done = subprocess.run([sys.executable, "-c", _RUNNER, json.dumps(keys)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    answers: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return answers
