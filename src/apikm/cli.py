"""``apikm``: run the service, migrate, drive the local Keycloak, administer keys."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Annotated, Any

import typer

from apikm.config import ConfigError, Settings, get_settings

app = typer.Typer(help="apikm: personal API keys for Keycloak users.", no_args_is_help=True,
                  pretty_exceptions_show_locals=False)  # locals may hold secrets
keycloak_app = typer.Typer(help="Run a local Keycloak with the demo realm (development, tests).",
                           no_args_is_help=True)
keys_app = typer.Typer(help="Administer keys directly in the database.", no_args_is_help=True)
app.add_typer(keycloak_app, name="keycloak")
app.add_typer(keys_app, name="keys")
demo_app = typer.Typer(help="The demo gateway: nginx with deploy/nginx/apikm.conf in front of "
                       "apikm, serving a sample GeoTIFF (development).", no_args_is_help=True)
app.add_typer(demo_app, name="demo")

# Token side (issue 4): `apikm keycloak setup`, `apikm signing-keys rotate|list`.
from apikm.tokens.cli import keycloak_setup, signing_app  # noqa: E402

keycloak_app.command("setup")(keycloak_setup)
app.add_typer(signing_app, name="signing-keys")

# Keycloak sync (issue 3): `apikm sync [--once]`.
from apikm.identity.sync_cli import sync_command  # noqa: E402

app.command("sync")(sync_command)

# CS Group APIKeyManager (issue 11): `apikm import apikeymanager --from URL [--dry-run]`.
from apikm.compat.cli import import_app  # noqa: E402

app.add_typer(import_app, name="import")

# Leaked keys (issue 13): `apikm keys scan [FILE|-] [--revoke] [--json]`.
from apikm.leaks.cli import keys_scan  # noqa: E402

keys_app.command("scan")(keys_scan)


def _settings() -> Settings:
    try:
        return get_settings()
    except ConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (APIKM_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (APIKM_PORT)")] = None,
    migrate: Annotated[bool, typer.Option(help="apply database migrations first")] = True,
    workers: Annotated[int | None, typer.Option(
        help="worker processes (APIKM_WORKERS); each is a replica: caches and limits stay "
             "in step through the database (and Redis)")] = None,
    server: Annotated[str, typer.Option(
        envvar="APIKM_SERVER",
        help="HTTP server: uvicorn (default: fastest behind a gateway, measured by "
             "bench.gateway_path) or granian (faster for direct clients)")
    ] = "uvicorn",
) -> None:
    """Run the apikm service."""
    # Options become settings, so the workers (which read them afresh) publish the right
    # issuer and URLs and size their shared state for the real worker count.
    for name, value in (("APIKM_HOST", host), ("APIKM_PORT", port), ("APIKM_WORKERS", workers)):
        if value is not None:
            os.environ[name] = str(value)
    get_settings.cache_clear()
    settings = _settings()
    _check_secrets(settings)
    _check_limiter_storage(settings)
    if not settings.public_url and settings.host in ("0.0.0.0", "::", ""):
        typer.secho(f"APIKM_PUBLIC_URL is not set: tokens, the JWKS URL and sign-in redirects "
                    f"will name {settings.base_url}, which no client can reach; set it to "
                    f"the URL clients use", fg="yellow", err=True)
    if migrate:
        _migrate(settings)
    if server == "uvicorn":
        import uvicorn

        from apikm.web.gateway_protocol import GatewayProtocol

        # GatewayProtocol: uvicorn's httptools protocol answering the gateway path in place.
        uvicorn.run("apikm.web.app:app_factory", factory=True, host=settings.host,
                    http=GatewayProtocol, port=settings.port, workers=settings.workers,
                    access_log=False, log_config=None, proxy_headers=False, server_header=False,
                    # Longer than gateways keep idle upstream connections (nginx 60 s), so
                    # apikm never closes one a gateway is about to reuse.
                    timeout_keep_alive=75)
        return
    if server != "granian":
        typer.secho("--server must be granian or uvicorn", fg="red", err=True)
        raise typer.Exit(2)
    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian("apikm.web.app:app_factory", address=settings.host, port=settings.port,
            interface=Interfaces.ASGI, workers=settings.workers, loop=Loops.uvloop,
            factory=True, websockets=False, log_access=False).serve()


def _check_limiter_storage(settings: Settings) -> None:
    from apikm.verify.limiter import LimiterConfigError, preflight

    try:
        preflight(settings.rate_limit_storage)
    except LimiterConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


def _check_secrets(settings: Settings) -> None:
    """Refuse to start, with the variable to set, rather than fail inside the server."""
    from apikm.encryption import encryption_keys
    from apikm.keys.hashing import PepperError
    from apikm.web.context import pepper_ring
    from apikm.web.ui.session import SecretError, parse_session_secrets

    try:
        pepper_ring(settings)
        encryption_keys(settings)
        if settings.session_secret is not None:
            parse_session_secrets(settings.session_secret.get_secret_value())
    except (ConfigError, SecretError, PepperError) as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


@app.command()
def migrate() -> None:
    """Apply database migrations (Alembic) up to the latest."""
    _migrate(_settings())
    typer.echo("database is up to date")


def _migrate(settings: Settings) -> None:
    from apikm.migrations import upgrade

    url = settings.effective_database_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    upgrade(url)


@app.command()
def version() -> None:
    """Print the version."""
    from apikm import __version__

    typer.echo(__version__)


# --- keycloak -----------------------------------------------------------------------------
def _devstack_port() -> int:
    return int(os.environ.get("APIKM_DEVSTACK_PORT", "8080"))


@keycloak_app.command("up")
def keycloak_up(port: Annotated[int | None, typer.Option(help="HTTP port")] = None) -> None:
    """Download (once), start and wait for Keycloak with the demo realm."""
    from apikm.devstack import keycloak

    wanted = port or _devstack_port()
    running = keycloak.status()
    if running is None or not running.base_url.endswith(f":{wanted}"):
        typer.echo(f"starting Keycloak {keycloak.KEYCLOAK_VERSION} (first start takes a while)...")
    info = keycloak.up(port=wanted)
    typer.echo(f"Keycloak is ready: {info.base_url}")
    typer.echo(f"  admin console: {info.base_url}/admin  ({info.admin_username} / "
               f"{info.admin_password})")
    typer.echo(f"  realm:         {info.issuer}")
    typer.echo("  demo users:    alice/alice, bob/bob, admin/admin (apikm admin), dana/dana")
    typer.echo(f"  log:           {info.log_file}")
    _prepare_demo_exchange(info.base_url, info.admin_username, info.admin_password)
    _prepare_demo_sync(info.base_url, info.admin_username, info.admin_password)


def _prepare_demo_sync(keycloak_url: str, admin_user: str, admin_password: str) -> None:
    """Give a demo realm imported before the sync's roles were added what it needs."""
    from apikm.devstack.keycloak import DEMO_REALM
    from apikm.devstack.sync_roles import SyncRolesError, ensure_sync_roles
    from apikm.tokens.keycloak_setup import SetupError, admin_token

    try:
        token = admin_token(keycloak_url, admin_user, admin_password)
        added = ensure_sync_roles(keycloak_url, DEMO_REALM, "apikm", token)
    except (SetupError, SyncRolesError) as exc:
        typer.secho(f"  sync:          not prepared: {exc}", fg="yellow", err=True)
        return
    if added:
        typer.echo(f"  sync:          service account granted {', '.join(added)}")


def _prepare_demo_exchange(keycloak_url: str, admin_user: str, admin_password: str) -> None:
    """Make the running demo realm ready for APIKM_EXCHANGE_MODE=keycloak (idempotent)."""
    from apikm.tokens.cli import demo_setup
    from apikm.tokens.keycloak_setup import SetupError

    settings = _settings().model_copy(update={"keycloak_url": keycloak_url})
    try:
        for change in demo_setup(settings, admin_user, admin_password):
            typer.echo(f"  exchange:      {change}")
    except SetupError as exc:
        typer.secho(f"  exchange:      not prepared: {exc}", fg="yellow", err=True)


@keycloak_app.command("down")
def keycloak_down() -> None:
    """Stop the local Keycloak."""
    from apikm.devstack import keycloak

    typer.echo("stopped" if keycloak.down() else "not running")


@keycloak_app.command("status")
def keycloak_status() -> None:
    """Say whether the local Keycloak is running."""
    from apikm.devstack import keycloak

    info = keycloak.status()
    if info is None:
        typer.echo("not running")
        raise typer.Exit(1)
    typer.echo(f"running: {info.base_url} (pid {info.pid})")


# --- keys ---------------------------------------------------------------------------------
def _key_service(settings: Settings) -> Any:
    from apikm.web.context import build_context

    try:
        return build_context(settings)
    except ConfigError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(2) from None


@keys_app.command("list")
def keys_list(
    owner: Annotated[str | None, typer.Option(help="owner's Keycloak user id")] = None,
    status: Annotated[str | None, typer.Option(help="active|expired|suspended|revoked")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """List keys (all owners)."""
    settings = _settings()

    async def run() -> list[dict[str, Any]]:
        ctx = _key_service(settings)
        try:
            return await ctx.keys.list_keys(owner, status, limit=10_000)  # type: ignore[no-any-return]
        finally:
            await ctx.close()

    rows = asyncio.run(run())
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
        return
    for row in rows:
        typer.echo(f"{row['id']}  {shown(row['hint']):<22} {row['status']:<9} "
                   f"{shown(row['owner_id']):<36}  {shown(row['name'])}")


def shown(text: object) -> str:
    """Text for an admin's terminal: anything not printable (escape sequences, line breaks,
    text-direction marks) as a visible escape such as ``\\x1b``, never raw."""
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii")
                   for ch in str(text))


@keys_app.command("peppers")
def keys_peppers() -> None:
    """How many unrevoked keys each pepper hashes: retire a pepper once it is down to 0.

    Keys move to the current pepper by themselves the next time they are used."""
    from apikm.keys.service import count_by_pepper

    settings = _settings()

    async def run() -> dict[str, int]:
        ctx = _key_service(settings)
        try:
            return await count_by_pepper(ctx.engine)
        finally:
            await ctx.close()

    for pepper_id, count in sorted(asyncio.run(run()).items()):
        typer.echo(f"{pepper_id:<20} {count}")


@keys_app.command("revoke")
def keys_revoke(
    key_id: str,
    reason: Annotated[str, typer.Option(help="kept in the audit log")] = "revoked from the CLI",
) -> None:
    """Revoke any key by id."""
    from apikm.keys.service import Actor, KeyNotFound

    settings = _settings()

    async def run() -> None:
        ctx = _key_service(settings)
        try:
            await ctx.keys.revoke(key_id, None, Actor("cli", os.environ.get("USER", "cli")),
                                  reason)
        finally:
            await ctx.close()

    try:
        asyncio.run(run())
    except KeyNotFound:
        typer.secho(f"no key {key_id}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"revoked {key_id}")


# --- demo ---------------------------------------------------------------------------------
@demo_app.command("gateway")
def demo_gateway(
    port: Annotated[int, typer.Option(help="the gateway's port")] = 8088,
    apikm: Annotated[str | None, typer.Option(
        help="apikm's URL (default: http://127.0.0.1:APIKM_PORT)")] = None,
) -> None:
    """Start nginx (deploy/nginx/apikm.conf) in front of apikm with a sample GeoTIFF at
    /data/dem.tif, under $APIKM_DATA_DIR/demo; a running one is restarted."""
    from apikm.devstack import gateway

    settings = _settings()
    apikm_url = apikm or f"http://127.0.0.1:{settings.port}"
    try:
        demo = gateway.start(apikm_url, port, settings.data_dir / "demo")
    except gateway.DemoError as exc:
        typer.secho(str(exc), fg="red", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"gateway: {demo.url}/data/dem.tif (nginx, deploy/nginx/apikm.conf, role "
               f"analyst) -> apikm {apikm_url}; logs in {demo.nginx_dir}")
    typer.echo("  try it: scripts/using-a-key.sh   stop it: apikm demo down")


@demo_app.command("down")
def demo_down() -> None:
    """Stop the demo gateway."""
    from apikm.devstack import gateway

    stopped = gateway.stop(_settings().data_dir / "demo")
    typer.echo("stopped" if stopped else "not running")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
