"""``aipp keys``: create, list and revoke API keys; show or rotate a tenant's webhook secret.

Works on ``settings.effective_database_url`` (migrated first), so it can run
next to a live server: SQLite in WAL mode and PostgreSQL both allow that.
"""

from __future__ import annotations

import typer


def _engine():  # noqa: ANN202 - sqlalchemy import kept lazy for `aipp --help`
    from app.core.settings import get_settings
    from app.storage.sql.engine import make_engine
    from app.storage.sql.migrate import upgrade

    url = get_settings().effective_database_url
    upgrade(url)
    return make_engine(url)


def register(cli: typer.Typer) -> None:
    keys_app = typer.Typer(help="Manage API keys (see AIPP_AUTH).", no_args_is_help=True)

    @keys_app.command("create")
    def create(
        tenant: str = typer.Option(..., "--tenant", help="Tenant name; created if new."),
    ) -> None:
        """Create a key and print it. It is shown only this once."""
        from app.storage.sql import keys

        engine = _engine()
        try:
            plaintext, row = keys.create_key(engine, tenant)
        finally:
            engine.dispose()
        typer.echo(plaintext)
        typer.echo(
            f"key id {row.id} for tenant {tenant!r}; store the key now, it cannot be shown again",
            err=True,
        )

    @keys_app.command("list")
    def list_(
        tenant: str | None = typer.Option(None, "--tenant", help="Only this tenant's keys."),
        active: bool = typer.Option(False, "--active", help="Hide revoked keys."),
    ) -> None:
        """List keys (never the keys themselves: their id and prefix)."""
        from app.storage.sql import keys

        engine = _engine()
        try:
            rows = keys.list_keys(engine, tenant, include_revoked=not active)
        finally:
            engine.dispose()
        if not rows:
            typer.echo("no keys")
            return
        typer.echo(f"{'ID':26}  {'TENANT':20}  {'PREFIX':12}  {'CREATED':20}  REVOKED")
        for key, ten in rows:
            created = key.created_at.strftime("%Y-%m-%d %H:%M:%S")
            revoked = key.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if key.revoked_at else "-"
            typer.echo(f"{key.id:26}  {ten.name:20}  {key.prefix:12}  {created:20}  {revoked}")

    @keys_app.command("revoke")
    def revoke(
        key_id: str = typer.Argument(..., help="The key's ID (see `aipp keys list`)."),
    ) -> None:
        """Revoke a key; requests with it get 401 from now on."""
        from app.storage.sql import keys

        engine = _engine()
        try:
            row = keys.revoke_key(engine, key_id)
        finally:
            engine.dispose()
        if row is None:
            typer.echo(f"no key with id {key_id}", err=True)
            raise typer.Exit(1)
        typer.echo(f"revoked {row.id} ({row.prefix}...)")

    @keys_app.command("webhook-secret")
    def webhook_secret(
        tenant: str = typer.Option(..., "--tenant", help="Tenant name."),
        rotate: bool = typer.Option(False, "--rotate", help="Replace it with a new secret."),
    ) -> None:
        """Print the tenant's webhook signing secret (verify `webhook-signature` with it)."""
        from app.storage.sql import keys

        engine = _engine()
        try:
            row = keys.find_tenant(engine, tenant)
            if row is not None and rotate:
                row = keys.rotate_webhook_secret(engine, row.id)
        finally:
            engine.dispose()
        if row is None:
            typer.echo(f"no tenant {tenant!r}", err=True)
            raise typer.Exit(1)
        typer.echo(row.webhook_secret)

    cli.add_typer(keys_app, name="keys")


__all__ = ["register"]
