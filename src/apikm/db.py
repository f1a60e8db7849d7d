"""Database plumbing shared by every domain: metadata, a UTC datetime type, the engine."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

# Stable constraint names, so Alembic migrations read the same on SQLite and PostgreSQL.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

log = structlog.get_logger(__name__)

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out; SQLite would otherwise hand back naive values."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# SQLSTATE classes of a database that cannot answer now: connection exception (08),
# insufficient resources (53), operator intervention (57: shutting down, cannot connect now),
# system error (58).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57", "58")
RETRY_AFTER_SECONDS = 5


def database_unavailable(exc: BaseException) -> bool:
    """The database (or the network to it) failed, not the statement: worth a 503 and a
    retry. A refused statement (a bug, a constraint) is not."""
    if isinstance(exc, OSError | sa.exc.TimeoutError | sa.exc.DisconnectionError):
        return True  # refused or lost connection, timeouts (TimeoutError is an OSError)
    if isinstance(exc, sa.exc.DBAPIError):
        if exc.connection_invalidated or isinstance(
                exc, sa.exc.InterfaceError | sa.exc.OperationalError):
            return True
        state = getattr(exc.orig, "sqlstate", None)
        return isinstance(state, str) and state[:2] in _UNAVAILABLE_SQLSTATES
    return False


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        _create_private_sqlite_file(url)
        # hide_parameters: a failed statement's message must not carry key hashes or emails.
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True)
        _tune_sqlite(engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True,
                               hide_parameters=True)


def _create_private_sqlite_file(url: str) -> None:
    """Create the database file 0600 (its directory 0700) before SQLite does: SQLite would
    honour the umask (often world-readable), and gives the -wal and -shm files it makes later
    the database file's own permissions. A file that exists is the operator's: only warned
    about when others may read it."""
    database = sa.engine.make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            log.warning("database file is readable by others; chmod 600 it (and its -wal and "
                        "-shm files)", file=str(path))
        return
    os.close(fd)  # an empty file is an empty SQLite database


def _tune_sqlite(engine: AsyncEngine) -> None:
    # WAL lets readers (verification) go on while the usage flush writes.
    @sa.event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def upsert(dialect_name: str, table: sa.Table) -> Any:
    """An INSERT that supports ``on_conflict_do_update`` on both SQLite and PostgreSQL."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if dialect_name == "postgresql" else sqlite).insert(table)
