"""Signing keys in the database: creation, encryption, rotation window, replicas, import.

Runs on a real SQLite file; every ``SigningKeys`` with its own engine stands for a replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from joserfc import jws, jwt
from joserfc.jwk import KeySet
from sqlalchemy.ext.asyncio import AsyncEngine

from apikm.cluster import events
from apikm.cluster.events import Event, Kind
from apikm.cluster.tables import cluster_events
from apikm.config import ConfigError
from apikm.db import create_engine, metadata
from apikm.encryption import EncryptionKeys, new_key_spec, parse_encryption_keys
from apikm.tokens.signing import PUBLISHED, SigningKeys, generate_jwk
from apikm.tokens.tables import signing_keys

K1, K2 = new_key_spec("k1"), new_key_spec("k2")
RING = parse_encryption_keys(K1)


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[str]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'apikm.db'}"
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: metadata.create_all(
            c, tables=[signing_keys, cluster_events]))
    await engine.dispose()
    yield url


@pytest.fixture
async def replica(database: str) -> AsyncIterator[Callable[..., SigningKeys]]:
    engines: list[AsyncEngine] = []

    def make(alg: str = "ES256", ring: EncryptionKeys = RING,
             legacy_dir: Path | None = None) -> SigningKeys:
        engine = create_engine(database)
        engines.append(engine)
        return SigningKeys(engine, ring, alg, legacy_dir)

    yield make
    for engine in engines:
        await engine.dispose()


async def rows(keys: SigningKeys) -> list[sa.Row[object]]:
    async with keys.engine.connect() as conn:
        return list(await conn.execute(sa.select(signing_keys)
                                       .order_by(signing_keys.c.generation)))


@pytest.mark.parametrize("alg", ["ES256", "RS256"])
async def test_first_key_is_created_encrypted_and_signs(
        replica: Callable[..., SigningKeys], alg: str) -> None:
    keys = replica(alg)
    await keys.start()
    token = keys.sign({"sub": "x"})
    header = jws.extract_compact(token.encode()).protected
    assert header["alg"] == alg and header["kid"] == keys.current().kid
    assert jwt.decode(token, KeySet.import_key_set(keys.jwks())).claims == {"sub": "x"}
    (row,) = await rows(keys)
    assert row.encryption_key_id == "k1" and b"PRIVATE" not in row.private_key
    assert "PRIVATE" not in str(keys.jwks()) and "d" not in keys.jwks()["keys"][0]


async def test_replicas_starting_together_create_exactly_one_key(
        replica: Callable[..., SigningKeys]) -> None:
    replicas = [replica() for _ in range(5)]
    await asyncio.gather(*(keys.start() for keys in replicas))
    assert len(await rows(replicas[0])) == 1
    assert len({keys.current().kid for keys in replicas}) == 1
    assert all(keys.jwks() == replicas[0].jwks() for keys in replicas)


async def test_rotation_keeps_the_previous_key_published_and_drops_older(
        replica: Callable[..., SigningKeys]) -> None:
    keys = replica()
    await keys.start()
    first = keys.current()
    old_token = keys.sign({"n": 1})
    second = await keys.rotate()
    assert keys.current().kid == second.kid != first.kid
    assert [k["kid"] for k in keys.jwks()["keys"]] == [second.kid, first.kid]
    assert jwt.decode(old_token, KeySet.import_key_set(keys.jwks())).claims == {"n": 1}
    third = await keys.rotate()
    published = [k["kid"] for k in keys.jwks()["keys"]]
    assert published == [third.kid, second.kid] and len(published) == PUBLISHED
    assert len(await rows(keys)) == PUBLISHED


async def test_another_replica_reloads_on_the_rotation_event(
        replica: Callable[..., SigningKeys]) -> None:
    server, cli = replica(), replica()
    await server.start()
    before = server.current().kid
    rotated = await cli.rotate()
    async with cli.engine.connect() as conn:
        written = [event for _seq, event in await events.read_after(conn, 0)]
    assert Event(Kind.SIGNING, rotated.kid) in written
    server.on_event(Event(Kind.KEY, "unrelated"))
    assert server.current().kid == before
    server.on_event(Event(Kind.SIGNING, rotated.kid))
    for _ in range(50):
        await asyncio.sleep(0.02)
        if server.current().kid == rotated.kid:
            break
    assert server.current().kid == rotated.kid != before
    await server.stop()


async def test_algorithm_change_creates_a_key_of_the_new_kind(
        replica: Callable[..., SigningKeys]) -> None:
    es, rs = replica("ES256"), replica("RS256")
    await es.start()
    await rs.start()
    assert (es.current().alg, rs.current().alg) == ("ES256", "RS256")
    await es.reload()
    assert {k["kid"] for k in es.jwks()["keys"]} == {es.current().kid, rs.current().kid}
    await replica("RS256").start()  # a key of its kind is published: nothing new
    assert len(await rows(es)) == 2


async def test_keys_move_to_the_first_encryption_key_at_start(
        replica: Callable[..., SigningKeys]) -> None:
    old = replica(ring=parse_encryption_keys(K1))
    await old.start()
    kid = old.current().kid
    both = replica(ring=parse_encryption_keys(f"{K2},{K1}"))
    await both.start()
    assert [row.encryption_key_id for row in await rows(both)] == ["k2"]
    only_new = replica(ring=parse_encryption_keys(K2))
    await only_new.start()
    assert only_new.current().kid == kid


async def test_a_replica_without_the_right_encryption_key_refuses_to_start(
        replica: Callable[..., SigningKeys]) -> None:
    await replica(ring=parse_encryption_keys(K1)).start()
    with pytest.raises(ConfigError, match="APIKM_ENCRYPTION_KEY"):
        await replica(ring=parse_encryption_keys(K2)).start()


async def test_a_ciphertext_moved_to_another_row_does_not_sign(
        replica: Callable[..., SigningKeys]) -> None:
    keys = replica()
    await keys.start()
    await keys.rotate()
    newest, older = (await rows(keys))[::-1]
    async with keys.engine.begin() as conn:
        await conn.execute(sa.update(signing_keys)
                           .where(signing_keys.c.generation == newest.generation)
                           .values(private_key=older.private_key))
    fresh = replica()
    with pytest.raises(ConfigError):
        await fresh.start()
    assert [k["kid"] for k in fresh.jwks()["keys"]] == [newest.kid, older.kid]  # published


def _write_pem(directory: Path, stamp: str, alg: str) -> str:
    directory.mkdir(mode=0o700, exist_ok=True)
    jwk = generate_jwk(alg)
    (directory / f"{stamp}.{alg}.pem").write_bytes(jwk.as_pem(private=True))
    return str(jwk.thumbprint())


async def test_pem_files_of_an_older_installation_are_imported_once(
        replica: Callable[..., SigningKeys], tmp_path: Path) -> None:
    legacy = tmp_path / "signing-keys"
    _write_pem(legacy, "20250101T000000000000Z", "ES256")  # retired by the next two
    older = _write_pem(legacy, "20250201T000000000000Z", "ES256")
    newest = _write_pem(legacy, "20250301T000000000000Z", "ES256")
    (legacy / "notes.pem").write_text("not a key")
    keys = replica(legacy_dir=legacy)
    await keys.start()
    assert [k["kid"] for k in keys.jwks()["keys"]] == [newest, older]
    assert keys.current().kid == newest
    assert keys.current().created_at == datetime(2025, 3, 1, tzinfo=UTC)
    other = tmp_path / "other-pod"
    _write_pem(other, "20250401T000000000000Z", "ES256")
    second = replica(legacy_dir=other)  # the table is no longer empty: not imported
    await second.start()
    assert second.current().kid == newest
