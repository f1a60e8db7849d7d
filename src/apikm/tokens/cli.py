"""CLI commands of the token side: ``apikm keycloak setup`` and ``apikm signing-keys ...``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import SecretStr

from apikm.config import Settings
from apikm.tokens.jwks import JWKS_PATH
from apikm.tokens.keycloak_setup import (
    SetupError,
    SetupOptions,
    admin_token,
    remove_setup,
    setup_realm,
)

if TYPE_CHECKING:
    from apikm.tokens.signing import SigningKey

signing_app = typer.Typer(help="apikm's JWT signing keys (in the database, shared by every "
                          "replica).", no_args_is_help=True)


DEMO_EXCHANGE_SECRET = "apikm-exchange-demo-secret"  # noqa: S105 - the demo realm's, loopback


def setup_options(settings: Settings, issuer: str | None = None, jwks_url: str | None = None,
                  link_permission: bool = True) -> SetupOptions:
    issuer = (issuer or settings.base_url).rstrip("/")
    secret = settings.exchange_client_secret
    return SetupOptions(
        keycloak_url=settings.keycloak_url, realm=settings.keycloak_realm,
        alias=settings.keycloak_idp_alias, issuer=issuer,
        jwks_url=jwks_url or issuer + JWKS_PATH, client_id=settings.exchange_client_id,
        signing_alg=settings.signing_alg, grant_link_permission=link_permission,
        client_secret=secret.get_secret_value() if secret else None,
        audiences=tuple(settings.token_audience))


def keycloak_setup(
    admin_user: Annotated[str, typer.Option(envvar="APIKM_KEYCLOAK_ADMIN_USER",
                                            help="Keycloak admin user name")] = "",
    admin_password: Annotated[str, typer.Option(envvar="APIKM_KEYCLOAK_ADMIN_PASSWORD",
                                                help="its password")] = "",
    admin_realm: Annotated[str, typer.Option(help="realm the admin signs in to")] = "master",
    issuer: Annotated[str | None, typer.Option(
        help="apikm's public base URL as Keycloak should trust it (default APIKM_PUBLIC_URL)")
    ] = None,
    jwks_url: Annotated[str | None, typer.Option(
        help="where Keycloak fetches apikm's keys (default <issuer>/.well-known/jwks.json)")
    ] = None,
    link_permission: Annotated[bool, typer.Option(
        help="grant apikm's service account manage-users, to link owners on first use")
    ] = True,
    remove: Annotated[bool, typer.Option(help="undo: remove the identity provider")] = False,
) -> None:
    """Prepare the realm for APIKM_EXCHANGE_MODE=keycloak (idempotent).

    The exchange client (APIKM_EXCHANGE_CLIENT_ID) is created when missing if
    APIKM_EXCHANGE_CLIENT_SECRET is set.
    """
    from apikm.cli import _settings

    settings = _settings()
    options = setup_options(settings, issuer, jwks_url, link_permission)
    if not admin_user or not admin_password:
        typer.secho("give --admin-user and --admin-password (or APIKM_KEYCLOAK_ADMIN_USER / "
                    "APIKM_KEYCLOAK_ADMIN_PASSWORD)", fg="red", err=True)
        raise typer.Exit(2)
    try:
        token = admin_token(settings.keycloak_url, admin_user, admin_password, admin_realm)
        changes = (remove_setup if remove else setup_realm)(options, token)
    except SetupError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    for change in changes:
        typer.echo(change)
    typer.echo(f"realm {options.realm}: " + ("nothing to change" if not changes else "done"))


def demo_setup(settings: Settings, admin_user: str, admin_password: str) -> list[str]:
    """The devstack's realm, ready for the keycloak exchange mode of a local apikm
    (``APIKM_EXCHANGE_CLIENT_SECRET=apikm-exchange-demo-secret``)."""
    if settings.exchange_client_secret is None:
        demo_secret = SecretStr(DEMO_EXCHANGE_SECRET)
        settings = settings.model_copy(update={"exchange_client_secret": demo_secret})
    options = setup_options(settings)
    return setup_realm(options, admin_token(settings.keycloak_url, admin_user, admin_password))


@signing_app.command("rotate")
def rotate() -> None:
    """Create a new signing key; the previous one stays published, older ones are removed.

    Every running replica loads the new key at once (a change event written with it).
    """
    import asyncio

    from apikm.cli import _settings
    from apikm.config import ConfigError
    from apikm.db import create_engine
    from apikm.tokens.services import signing_keys

    settings = _settings()

    async def run() -> SigningKey:
        engine = create_engine(settings.effective_database_url)
        try:
            return await signing_keys(settings, engine).rotate()
        finally:
            await engine.dispose()

    try:
        key = asyncio.run(run())
    except ConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"new signing key {key.kid} ({key.alg})")


@signing_app.command("list")
def list_keys() -> None:
    """Show the published keys, the signing one first, and which APIKM_ENCRYPTION_KEY entry
    protects each (no key needed to list them)."""
    import asyncio

    from apikm.cli import _settings
    from apikm.db import create_engine
    from apikm.tokens.signing import read_rows

    settings = _settings()

    async def run() -> list[Any]:
        engine = create_engine(settings.effective_database_url)
        try:
            async with engine.connect() as conn:
                return await read_rows(conn)
        finally:
            await engine.dispose()

    for position, row in enumerate(asyncio.run(run())):
        role = "signing " if position == 0 else "previous"
        typer.echo(f"{role}  {row.kid}  {row.alg}  created {row.created_at:%Y-%m-%d %H:%M}Z  "
                   f"encrypted with {row.encryption_key_id}")
