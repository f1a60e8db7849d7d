"""Alembic environment: async engines, batch mode so SQLite can alter tables too."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import apikm.alerts.tables
import apikm.cluster.tables
import apikm.identity.tables
import apikm.keys.tables
import apikm.notify.tables
import apikm.tokens.tables
import apikm.verify.tables
from apikm.db import create_engine, metadata

config = context.config
target_metadata = metadata
_ = (apikm.alerts.tables, apikm.cluster.tables, apikm.identity.tables, apikm.notify.tables,
     apikm.tokens.tables, apikm.verify.tables)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = create_engine(config.attributes["database_url"])
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.attributes["database_url"], target_metadata=target_metadata,
                      literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
