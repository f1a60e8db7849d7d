"""Database plumbing shared by every domain: metadata, a UTC datetime type, the engine."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

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


def log_write_failure(logger: Any, what: str, exc: BaseException) -> None:
    """A background write (usage, alerts) that failed and keeps its batch for the next try:
    a database outage in one line, anything else with its traceback."""
    if database_unavailable(exc):
        logger.warning(f"{what} postponed: database unavailable", error_type=type(exc).__name__)
    else:
        logger.exception(f"{what} failed")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        _create_private_sqlite_file(url)
        # hide_parameters: a failed statement's message must not carry key hashes or emails.
        # A pool as large as a burst of concurrent lookups: a connection beyond it is opened
        # and closed per use (a thread and a file open each), which halved lookup rates.
        parsed = sa.engine.make_url(url)
        in_memory = (parsed.database in (None, "", ":memory:")
                     or parsed.query.get("mode") == "memory")
        pool = {} if in_memory else {"pool_size": 32, "max_overflow": 8}
        engine = create_async_engine(url, connect_args={"timeout": 30}, hide_parameters=True,
                                     **pool)
        _tune_sqlite(engine)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True,
                               hide_parameters=True)


# Execution option marking a connection whose transactions begin IMMEDIATE on SQLite.
_WRITER = "apikm_writer"


# Per pool (the engine's pool outlives option engines): the asyncio lock this process's
# SQLite writers queue on, and the loop it belongs to.
_writer_locks: weakref.WeakKeyDictionary[Any, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = \
    weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that reads, then writes on what it read (a quota count, a status).

    PostgreSQL: ``engine.begin()``; lock what the decision rests on (rows ``FOR UPDATE``,
    an advisory lock). SQLite: ``BEGIN IMMEDIATE`` takes the database's one write lock
    first, so the reads see every earlier write and nobody writes until the commit; other
    processes wait in SQLite's busy handler (30 s). This process's writers queue on an
    asyncio lock before they take a pooled connection, so they neither poll the busy
    handler nor hold connections that reads (key verification) need meanwhile.
    """
    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            yield conn
        return
    async with _writer_lock(engine), engine.connect() as conn:
        await conn.execution_options(**{_WRITER: True})  # before anything begins
        async with conn.begin():
            yield conn


def _writer_lock(engine: AsyncEngine) -> asyncio.Lock:
    pool = engine.sync_engine.pool
    loop = asyncio.get_running_loop()
    known = _writer_locks.get(pool)
    if known is not None and known[0] is loop:
        return known[1]
    lock = asyncio.Lock()  # an asyncio lock serves one event loop
    _writer_locks[pool] = (loop, lock)
    return lock


def sqlite_begin(execution_options: Mapping[str, Any]) -> str:
    """The statement that opens a transaction on SQLite."""
    return "BEGIN IMMEDIATE" if execution_options.get(_WRITER) else "BEGIN"


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


def create_sqlite_reader(url: str) -> sa.Engine | None:
    """A synchronous engine on the same SQLite file, for key lookups run whole on the event
    loop (one connection, never waiting for a lock) or in a worker thread: not one thread
    hop per driver call through aiosqlite (eight for a lookup, 1.3 ms against 26 µs for the
    query itself). None for other
    databases (asyncpg needs no threads) and for in-memory ones (one connection only)."""
    parsed = sa.engine.make_url(url)
    if (not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:")
            or parsed.query.get("mode") == "memory"):
        return None
    engine = sa.create_engine(parsed.set(drivername="sqlite+pysqlite"), hide_parameters=True,
                              connect_args={"timeout": 30, "check_same_thread": False},
                              # one more for the event loop's lookups on the spot
                              pool_size=READER_THREADS + 1, max_overflow=0)
    _tune_sqlite(engine)
    return engine


READER_THREADS = 4


def _tune_sqlite(engine: AsyncEngine | sa.Engine) -> None:
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @sa.event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Transactions are ours, not the driver's: sqlite3's legacy mode opens one only
        # before INSERT/UPDATE/DELETE, so reads ran outside it and a SAVEPOINT outside it
        # became a transaction of its own that RELEASE committed (a key row without its
        # audit row). ``_on_begin`` below emits the BEGIN.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # WAL lets readers (verification) go on while a writer (usage flush) writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        # Key lookups touch a few B-tree pages of a large index: map the file (reads without
        # a copy into SQLite's own page cache, per connection, which a million keys outgrow).
        cursor.execute("PRAGMA mmap_size=1073741824")
        cursor.close()

    @sa.event.listens_for(sync_engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        # A plain BEGIN takes no lock until it reads (a WAL snapshot) or writes: readers
        # such as the verification lookup stay cheap and never block a writer.
        conn.exec_driver_sql(sqlite_begin(conn.get_execution_options()))


RowT = TypeVar("RowT")
SLICE = 1_000  # rows per executemany call of a background flush


def slices(rows: list[RowT]) -> Iterator[list[RowT]]:
    """``rows`` in parts of ``SLICE``: SQLAlchemy prepares an executemany's parameters on
    the event loop before the driver runs it, some 5 µs a row; a part holds the loop a few
    milliseconds, where 20,000 rows at once held it for a tenth of a second."""
    for start in range(0, len(rows), SLICE):
        yield rows[start:start + SLICE]


def upsert(dialect_name: str, table: sa.Table) -> Any:
    """An INSERT that supports ``on_conflict_do_update`` on both SQLite and PostgreSQL."""
    from sqlalchemy.dialects import postgresql, sqlite

    return (postgresql if dialect_name == "postgresql" else sqlite).insert(table)
