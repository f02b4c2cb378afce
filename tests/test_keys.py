"""API keys, tenants, the FastAPI auth dependency and the `aipp keys` CLI."""

from __future__ import annotations

import hashlib

import pytest
import typer
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from typer.testing import CliRunner

from app.api.auth import LOCAL_TENANT, Authenticator, Principal, auth_required, parse_bearer
from app.api.errors import install_error_handlers
from app.core.settings import Settings, get_settings
from app.storage.sql import keys
from app.storage.sql.models import ApiKey
from app.tasks.door import Tenants

# --- keys ------------------------------------------------------------------------------------


def test_create_authenticate_revoke(engine):
    plaintext, row = keys.create_key(engine, "acme")
    assert plaintext.startswith("aipp_") and len(plaintext) >= 40
    assert row.prefix == plaintext[:12]
    with Session(engine) as session:
        stored = session.exec(select(ApiKey)).one()
    # Only the hash is stored.
    assert stored.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in (stored.key_hash, stored.prefix)

    tenant = keys.authenticate(engine, plaintext)
    assert tenant is not None and tenant.name == "acme"
    tenant2, key = keys.authenticate_key(engine, plaintext)
    assert key.id == row.id and tenant2.id == tenant.id
    for wrong in [None, "", "aipp_", plaintext + "x", plaintext[:-1], "Bearer " + plaintext]:
        assert keys.authenticate(engine, wrong) is None

    revoked = keys.revoke_key(engine, row.id)
    assert revoked.revoked_at is not None
    assert keys.authenticate(engine, plaintext) is None
    again = keys.revoke_key(engine, row.id)
    assert again.revoked_at == revoked.revoked_at  # idempotent
    assert keys.revoke_key(engine, "no-such-key") is None


def test_tenants_and_listing(engine):
    a1 = keys.ensure_tenant(engine, "acme")
    assert keys.ensure_tenant(engine, "acme").id == a1.id
    assert a1.webhook_secret.startswith("whsec_")
    with pytest.raises(ValueError):
        keys.ensure_tenant(engine, "  ")
    k1, r1 = keys.create_key(engine, "acme")
    k2, r2 = keys.create_key(engine, "globex")
    k3, r3 = keys.create_key(engine, "acme")
    assert len({k1, k2, k3}) == 3
    keys.revoke_key(engine, r3.id)
    listed = keys.list_keys(engine)
    assert [k.id for k, _ in listed] == [r1.id, r2.id, r3.id]
    assert [t.name for _, t in listed] == ["acme", "globex", "acme"]
    assert [k.id for k, _ in keys.list_keys(engine, "acme")] == [r1.id, r3.id]
    assert [k.id for k, _ in keys.list_keys(engine, "acme", include_revoked=False)] == [r1.id]
    assert keys.authenticate(engine, k2).name == "globex"


# --- auth dependency ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "host", "required"),
    [
        ("on", "127.0.0.1", True),
        ("off", "0.0.0.0", False),
        ("auto", "127.0.0.1", False),
        ("auto", "localhost", False),
        ("auto", "::1", False),
        ("auto", "0.0.0.0", True),
        ("auto", "10.0.0.5", True),
        ("auto", "api.example.com", True),
    ],
)
def test_auth_required(auth, host, required):
    assert auth_required(Settings(auth=auth, host=host)) is required


def test_parse_bearer():
    assert parse_bearer("Bearer abc") == "abc"
    assert parse_bearer("bearer   abc ") == "abc"
    assert parse_bearer("Basic abc") is None
    assert parse_bearer("Bearer") is None
    assert parse_bearer(None) is None


def _app(authenticator: Authenticator) -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/whoami")
    def whoami(principal: Principal = Depends(authenticator)) -> dict:
        return {"tenant": principal.tenant_name, "key": principal.key_id}

    return TestClient(app)


def test_auth_on_rejects_missing_wrong_and_revoked_keys(engine):
    plaintext, row = keys.create_key(engine, "acme")
    client = _app(Authenticator(Tenants(engine), Settings(auth="on")))

    ok = client.get("/whoami", headers={"Authorization": f"Bearer {plaintext}"})
    assert ok.status_code == 200 and ok.json() == {"tenant": "acme", "key": row.id}

    missing = client.get("/whoami")
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "missing_api_key"
    assert missing.headers["www-authenticate"].startswith("Bearer")

    for header in [f"Bearer {plaintext}x", "Bearer nope", f"Basic {plaintext}", "Bearer"]:
        wrong = client.get("/whoami", headers={"Authorization": header})
        assert wrong.status_code == 401, header
        assert wrong.json()["error"]["code"] == "invalid_api_key"
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]

    keys.revoke_key(engine, row.id)
    revoked = client.get("/whoami", headers={"Authorization": f"Bearer {plaintext}"})
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "invalid_api_key"


def test_auth_off_uses_the_local_tenant(engine):
    authenticator = Authenticator(Tenants(engine), Settings(auth="auto", host="127.0.0.1"))
    client = _app(authenticator)
    for headers in [{}, {"Authorization": "Bearer sk-placeholder"}]:
        r = client.get("/whoami", headers=headers)
        assert r.status_code == 200 and r.json() == {"tenant": LOCAL_TENANT, "key": None}
    local = keys.ensure_tenant(engine, LOCAL_TENANT)
    assert authenticator.local_principal().tenant_id == local.id


# --- CLI --------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("AIPP_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("AIPP_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def _cli() -> typer.Typer:
    from app.cli.keys import register

    cli = typer.Typer()

    @cli.command()
    def noop() -> None:  # a second command keeps `keys` a sub-command
        pass

    register(cli)
    return cli


def test_keys_cli_create_list_revoke(cli_env):
    runner = CliRunner()
    cli = _cli()
    created = runner.invoke(cli, ["keys", "create", "--tenant", "acme"])
    assert created.exit_code == 0, created.output
    plaintext = created.stdout.strip().splitlines()[0]
    assert plaintext.startswith("aipp_")

    from app.storage.sql.engine import make_engine

    engine = make_engine(get_settings().effective_database_url)
    try:
        assert (cli_env / "data" / "aipp.db").exists()
        tenant, key = keys.authenticate_key(engine, plaintext)
        assert tenant.name == "acme"

        listed = runner.invoke(cli, ["keys", "list"])
        assert listed.exit_code == 0
        assert key.id in listed.stdout and key.prefix in listed.stdout
        assert plaintext not in listed.stdout  # never shown again

        revoked = runner.invoke(cli, ["keys", "revoke", key.id])
        assert revoked.exit_code == 0, revoked.output
        assert keys.authenticate(engine, plaintext) is None
        assert runner.invoke(cli, ["keys", "list", "--active"]).stdout.strip() == "no keys"
        assert runner.invoke(cli, ["keys", "revoke", "missing"]).exit_code == 1
    finally:
        engine.dispose()
